"""finetune.tools.push, up to the network calls (no hub here): what is uploaded, and the checks."""

import huggingface_hub
import pytest

import finetune
from finetune.tools.push import push


def test_push_uploads_weights_config_card_and_plots_only(image_folder, fast_overrides, monkeypatch):
    run_dir = finetune.adapt("test_resnet", image_folder, verbose=False, **fast_overrides).run_dir
    (run_dir / "README.md").write_text("---\nlibrary_name: timm\n---\n")  # the card, if absent
    calls = {}
    monkeypatch.setattr(huggingface_hub, "create_repo",
                        lambda repo_id, **kw: calls.setdefault("create", (repo_id, kw))
                        and f"https://huggingface.co/{repo_id}")  # fmt: skip
    monkeypatch.setattr(huggingface_hub, "upload_folder",
                        lambda **kw: calls.setdefault("upload", kw))  # fmt: skip
    url = push(run_dir, "my-org/cats", private=True)
    assert url == "https://huggingface.co/my-org/cats"
    assert calls["create"] == (
        "my-org/cats",
        {"token": None, "private": True, "repo_type": "model", "exist_ok": True},
    )
    upload = calls["upload"]
    assert upload["folder_path"] == str(run_dir) and upload["repo_id"] == "my-org/cats"
    assert set(upload["allow_patterns"]) == {
        "model.safetensors",
        "config.json",
        "README.md",
        "plots/*.png",
    }  # never trainer_state.pt


@pytest.mark.parametrize("repo_id", ["cats", "my org/cats", "a/b/c", ""])
def test_a_bad_repo_id_names_the_form(tmp_path, repo_id):
    with pytest.raises(ValueError, match="use ORG/NAME"):
        push(tmp_path, repo_id)


def test_a_run_without_a_model_card_is_refused(image_folder, fast_overrides, monkeypatch):
    run_dir = finetune.adapt("test_resnet", image_folder, verbose=False, **fast_overrides).run_dir
    (run_dir / "README.md").unlink(missing_ok=True)
    with pytest.raises(FileNotFoundError, match="README.md not found: the model card"):
        push(run_dir, "my-org/cats")


def test_a_network_failure_is_one_oserror(image_folder, fast_overrides, monkeypatch):
    # regression (review): without HF_HUB_OFFLINE an httpx ConnectError (not an OSError)
    # ended as an unexpected error with a traceback file
    run_dir = finetune.adapt("test_resnet", image_folder, verbose=False, **fast_overrides).run_dir
    (run_dir / "README.md").write_text("---\nlibrary_name: timm\n---\n")

    class ConnectError(Exception):
        pass

    def offline(repo_id, **kw):
        raise ConnectError("[Errno -2] Name or service not known")

    monkeypatch.setattr(huggingface_hub, "create_repo", offline)
    with pytest.raises(
        OSError, match="cannot push .* Name or service not known.*check the network"
    ):
        push(run_dir, "my-org/cats")
