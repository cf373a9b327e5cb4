"""Datasets and loaders: torch datasets checked, files broken after the scan, band counts against
in_chans, class weights and the balanced sampler."""

import json

import pytest
import torch
from PIL import Image

import finetune
from finetune.config import FinetuneConfig
from finetune.data.datasets import ImageFileDataset
from finetune.data.folder import scan_folder
from finetune.errors import DataError
from tests.conftest import make_folder


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


def test_dataset_survives_a_file_broken_after_the_scan(image_folder):
    info = scan_folder(image_folder, val_split=0.0)
    path = info.train[0][0]
    open(path, "wb").close()
    dataset = ImageFileDataset(info.train, transform=lambda img: img.size)
    with pytest.warns(UserWarning, match="skipping unreadable image"):
        size, label = dataset[0]
    assert size == (40, 32)
    with pytest.raises(DataError):
        ImageFileDataset(info.train, transform=lambda img: img, strict=True)[0]


def test_set_targets_replaces_the_labels_with_vectors(image_folder):
    """A teacher's mixed targets (train.teacher) come out per sample, in sample order; a
    broken file's stand-in carries its own row, not the broken one's."""
    info = scan_folder(image_folder, val_split=0.0)
    dataset = ImageFileDataset(info.train, transform=lambda img: img.size)
    targets = torch.arange(len(info.train) * 2, dtype=torch.float32).view(-1, 2)
    dataset.set_targets(targets)
    assert torch.equal(dataset[3][1], targets[3])
    open(info.train[0][0], "wb").close()
    with pytest.warns(UserWarning, match="skipping unreadable image"):
        assert torch.equal(dataset[0][1], targets[1])


def test_multiband_tiffs_without_in_chans_are_an_error(tmp_path, fast_overrides, make_tiles):
    root = make_tiles(tmp_path / "s2")
    with pytest.raises(finetune.DataError, match="13-band image.*--in-chans 13"):
        finetune.adapt("test_resnet", root, verbose=False, **fast_overrides)


def test_band_count_must_match_in_chans(tmp_path, fast_overrides, make_tiles):
    root = make_tiles(tmp_path / "s2", bands=4)
    with pytest.raises(finetune.DataError, match="4-band image.*--in-chans 4"):
        finetune.adapt("test_resnet", root, verbose=False, **fast_overrides)
    with pytest.raises(finetune.DataError, match="4 bands, but --in-chans is 13"):
        finetune.adapt("test_resnet", root, verbose=False, in_chans=13, **fast_overrides)


def test_imbalance_options_run_end_to_end(tmp_path, fast_overrides):
    root = tmp_path / "imb"
    make_folder(root, classes=("cat",), n=9)
    make_folder(root, classes=("dog",), n=3)
    result = finetune.adapt(
        "test_resnet",
        root,
        verbose=False,
        class_weights="auto",
        sampler="balanced",
        **fast_overrides,
    )
    assert result.config.data.class_weights == "auto"


def test_quick_scan_keeps_a_truncated_image_and_the_run_skips_it_at_load_time(
    image_folder, fast_overrides
):
    """A quick scan reads headers only, so a truncated file reaches training; the dataset puts
    the next image in its place (batch sizes and step counts unchanged), warns once, and the
    loader reports it when the epoch ends."""
    bad = image_folder / "cat" / "cat1.png"
    bad.write_bytes(bad.read_bytes()[:-200])
    events = []
    with finetune.events.listening(events.append):
        result = finetune.adapt("test_resnet", str(image_folder), scan="quick", val_split=0.0,
                                verbose=False, **fast_overrides)  # fmt: skip
    assert result.metrics["epochs"][0]["epoch"] == 1
    scanned = [e.message for e in events if e.message.startswith("data ")]
    assert "scan quick" in scanned[0] and "unreadable" not in scanned[0]
    ended = [e.message for e in events if e.kind == "warning" and "at load time" in e.message]
    assert len(ended) == 1 and "cat1.png" in ended[0]
    # regression: images skipped at load time were only warned about, not recorded in the run
    listed = (result.run_dir / "skipped_files.txt").read_text()
    assert "cat1.png" in listed


def test_unaugmented_view_gives_the_evaluation_transform_of_the_same_images(image_folder):
    """LP-FT's probe reads the training images without augmentation (through their cache)."""
    from finetune.data.datasets import build_datasets, scan_data, unaugmented
    from finetune.train.build import build_model

    cfg = FinetuneConfig().with_overrides(
        name="test_resnet", pretrained=False, img_size=32, min_crop_scale=0.2
    )
    data = scan_data(image_folder, cfg)
    info = build_model("test_resnet", cfg, data.num_classes).info
    train, val, _ = build_datasets(image_folder, data, cfg, info)
    view = unaugmented(train, info, cfg)
    first, again = view[0][0], view[0][0]
    assert torch.equal(first, again) and first.dtype == torch.float32
    assert first.shape == val[0][0].shape == (3, 32, 32)
    assert train[0][0].dtype == torch.uint8  # the training set itself is untouched
    assert unaugmented(object(), info, cfg) is None


def test_train_on_val_trains_on_the_val_split_and_keeps_the_last_epoch(
    split_folder, fast_overrides
):
    """data.train_on_val (tune's final refit): val/ joins the training split, test/ stays out."""
    result = finetune.adapt("test_resnet", split_folder, verbose=False, train_on_val=True,
                            **{**fast_overrides, "epochs": 2})  # fmt: skip
    saved = json.loads((result.run_dir / "config.json").read_text())["finetune"]
    assert saved["config"]["data"]["train_on_val"] is True
    assert saved["data"]["counts"] == {"train": [8, 8], "test": [2, 2]}  # train/ + val/
    assert result.metrics["best_epoch"] == 2 and "val" not in result.metrics
    assert result.metrics["test"]["num_samples"] == 4
