import json

import pytest
import timm
import torch
from PIL import Image

import finetune
from tests.conftest import COLOURS


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


def test_timm_local_dir_and_predict_agree(split_folder, fast_overrides):
    result = finetune.adapt("test_efficientnet", split_folder, verbose=False, **fast_overrides)
    assert "test" in result.metrics
    image = split_folder / "test" / "dog" / "dog0.png"
    records = finetune.predict(result.run_dir, [image], top_k=2)
    # a plain timm user, no finetune code: local-dir config + safetensors weights
    model = timm.create_model(f"local-dir:{result.run_dir}", pretrained=True).eval()
    cfg = timm.data.resolve_data_config(model=model)
    assert cfg["input_size"] == (3, 32, 32)
    x = timm.data.create_transform(**cfg)(Image.open(image).convert("RGB")).unsqueeze(0)
    with torch.inference_mode():
        probs = model(x).softmax(-1)[0]
    top = int(probs.argmax())
    assert records[0]["label"] == model.pretrained_cfg["label_names"][top]
    assert records[0]["prob"] == pytest.approx(float(probs[top]), abs=1e-5)
    assert set(records[0]) == {"path", "label", "prob", "label_2", "prob_2"}


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


def test_torchvision_run_round_trips(image_folder, fast_overrides):
    result = finetune.adapt("tv:resnet18", image_folder, verbose=False, **fast_overrides)
    records = finetune.predict(result.run_dir, [image_folder / "cat"])
    assert len(records) == 6 and {r["label"] for r in records} <= {"cat", "dog"}


def test_existing_run_is_refused_unless_overwrite(image_folder, fast_overrides):
    finetune.adapt("test_resnet", image_folder, verbose=False, **fast_overrides)
    before = fast_overrides and (image_folder.parent / "run" / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="already holds a run .* --overwrite"):
        finetune.adapt("test_resnet", image_folder, verbose=False, **fast_overrides)
    assert (image_folder.parent / "run" / "model.safetensors").read_bytes() == before
    finetune.adapt("test_resnet", image_folder, verbose=False, overwrite=True, **fast_overrides)


def test_without_validation_data_the_last_epoch_is_kept(image_folder, fast_overrides):
    result = finetune.adapt(
        "test_resnet", image_folder, verbose=False, val_split=0.0, **{**fast_overrides, "epochs": 2}
    )
    assert result.metrics["best_epoch"] == 2 and "val" not in result.metrics
    lines = (result.run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["val_accuracy"] for x in lines] == [None, None]


def test_predict_skips_an_unreadable_image_with_a_warning(image_folder, fast_overrides):
    result = finetune.adapt("test_resnet", image_folder, verbose=False, **fast_overrides)
    (image_folder / "cat" / "broken.png").write_bytes(b"\x89PNG broken")
    with pytest.warns(UserWarning, match="skipping unreadable image .*broken.png"):
        records = finetune.predict(result.run_dir, [image_folder / "cat"])
    assert len(records) == 6


def test_torchvision_run_with_head_dropout_reloads(image_folder, fast_overrides):
    result = finetune.adapt(
        "tv:resnet18", image_folder, verbose=False, head_dropout=0.2, **fast_overrides
    )
    assert len(finetune.predict(result.run_dir, [image_folder / "dog"])) == 6


@pytest.mark.parametrize(
    "items, message",
    [
        ([], "is empty"),
        ([(Image.new("RGB", (8, 8)), 0)] * 4, "all images have label 0"),
        (
            [(Image.new("RGB", (8, 8)), 0), (Image.new("RGB", (8, 8)), 5)],
            "labels [5] are outside 0..1",
        ),
    ],
)
def test_bad_torch_datasets_are_clear_errors(items, message, fast_overrides):
    class Items(torch.utils.data.Dataset):
        classes = ["a", "b"]

        def __len__(self):
            return len(items)

        def __getitem__(self, i):
            return items[i]

    with pytest.raises(finetune.DataError) as e:
        finetune.adapt("test_resnet", Items(), verbose=False, **fast_overrides)
    assert message in str(e.value)
