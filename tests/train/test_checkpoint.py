import json
import os
import stat

import pytest

import finetune
from finetune._io import atomic_path
from finetune.train.rundir import prepare_run_dir


def test_atomic_path_renames_on_success_and_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "config.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("crash mid-save")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["config.json"]
    with atomic_path(target) as tmp:
        open(tmp, "w").write("new")
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["config.json"]
    assert stat.S_IMODE(target.stat().st_mode) & 0o044  # readable by others, unlike mkstemp's 0600


def test_overwrite_clears_every_file_of_the_old_run(tmp_path):
    for name in (
        "model.safetensors",
        "config.json",
        "metrics.jsonl",
        "skipped_files.txt",
        "last.safetensors",
        "trainer_state.pt",
    ):
        (tmp_path / name).write_text("old")
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_model.safetensors").write_text("old")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="already holds a run"):
        prepare_run_dir(tmp_path, overwrite=False)
    prepare_run_dir(tmp_path, overwrite=True)
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_existing_run_is_refused_unless_overwrite(image_folder, fast_overrides):
    finetune.adapt("test_resnet", image_folder, verbose=False, **fast_overrides)
    before = fast_overrides and (image_folder.parent / "run" / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="already holds a run .* --overwrite"):
        finetune.adapt("test_resnet", image_folder, verbose=False, **fast_overrides)
    assert (image_folder.parent / "run" / "model.safetensors").read_bytes() == before
    finetune.adapt("test_resnet", image_folder, verbose=False, overwrite=True, **fast_overrides)


def test_torchvision_run_with_head_dropout_reloads(image_folder, fast_overrides):
    result = finetune.adapt(
        "tv:resnet18", image_folder, verbose=False, head_dropout=0.2, **fast_overrides
    )
    assert len(finetune.predict(result.run_dir, [image_folder / "dog"])) == 6


def _damaged(run_dir, edit):
    path = run_dir / "config.json"
    config = json.loads(path.read_text())
    path.write_text(json.dumps(edit(config)))


@pytest.mark.parametrize(
    "edit, message",
    [  # regression: each of these ended in a TypeError/IndexError/KeyError traceback
        (lambda c: [c], "is a JSON list, not an object"),
        (
            lambda c: {k: v for k, v in c.items() if k != "pretrained_cfg"},
            "pretrained_cfg is missing",
        ),
        (
            lambda c: {**c, "pretrained_cfg": {**c["pretrained_cfg"], "mean": None}},
            "mean must be 3",
        ),
        (lambda c: {**c, "label_names": ["only-one"]}, "label_names must be 2 strings"),
        (lambda c: {**c, "label_names": ["a", "b", "c"]}, "label_names must be 2 strings"),
        (
            lambda c: {**c, "model_args": {**c["model_args"], "checkpoint_path": "/tmp/x.pth"}},
            "model_args.checkpoint_path is not allowed",
        ),
        (
            lambda c: {**c, "model_args": {**c["model_args"], "pretrained_cfg_overlay": {}}},
            "model_args.pretrained_cfg_overlay is not allowed",
        ),
        (
            lambda c: {**c, "model_args": {**c["model_args"], "no_such_arg": 1}},
            "model_args do not fit",
        ),
        (lambda c: {**c, "num_classes": "two"}, "num_classes must be a positive integer"),
    ],
)
def test_a_damaged_config_json_is_one_clear_error(image_folder, fast_overrides, edit, message):
    run_dir = finetune.adapt("test_resnet", image_folder, verbose=False, **fast_overrides).run_dir
    _damaged(run_dir, edit)
    with pytest.raises(ValueError, match=message):
        finetune.predict(run_dir, [image_folder / "cat"])
