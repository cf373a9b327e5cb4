"""Issue 4: the pre-scan - every bad-file kind, the cache, duplicates, the report."""

import os
import shutil

import pytest
import torch

import finetune
from finetune.config import FinetuneConfig
from finetune.data.datasets import build_loader, class_balance
from finetune.data.folder import scan_folder
from finetune.data.scan import check_file
from finetune.errors import DataError
from tests.conftest import COLOURS, make_folder, make_image


def _corrupt_png(path):
    data = bytearray(path.read_bytes())
    start = data.index(b"IDAT") + 8  # inside the compressed image data
    data[start : start + 20] = bytes(20)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_text("hello, not an image"), "not an image"),
        (lambda p: p.write_bytes(make_image(p, COLOURS["cat"]).read_bytes()[:-200]), "truncated"),
        (lambda p: (make_image(p, COLOURS["cat"]), _corrupt_png(p)), None),
    ],
)
def test_bad_file_kinds(tmp_path, make, expected):
    path = tmp_path / "x.png"
    make(path)
    problem = check_file(str(path)).problem
    assert problem is not None
    if expected:
        assert problem.startswith(expected), problem
    else:
        assert problem.startswith(("undecodable", "truncated")), problem


def test_pixel_limit_catches_decompression_bombs(tmp_path):
    path = make_image(tmp_path / "big.png", COLOURS["cat"], size=(100, 80))
    assert check_file(str(path), max_pixels=10_000).problem is None
    problem = check_file(str(path), max_pixels=5_000).problem
    assert problem.startswith("over the pixel limit (100x80 > 5,000 px")


def test_wrong_extension_is_suspicious_and_strict_rejects_it(image_folder):
    shutil.copy(image_folder / "cat" / "cat0.png", image_folder / "cat" / "really_png.jpg")
    info = scan_folder(image_folder)
    assert info.suspicious == (
        (str(image_folder / "cat" / "really_png.jpg"), "wrong extension: PNG data in a .jpg file"),
    )
    assert any(p.endswith("really_png.jpg") for p, _ in info.train + info.val)  # still used
    with pytest.raises(DataError, match="suspicious file"):
        scan_folder(image_folder, strict=True)


def test_scan_is_cached_by_size_and_mtime(image_folder):
    first = scan_folder(image_folder)
    assert first.cache_hits == 0
    again = scan_folder(image_folder)
    assert again.cache_hits == 12 and again.train == first.train
    target = image_folder / "dog" / "dog1.png"
    target.write_bytes(b"")  # changed on disk: size and mtime differ, so it is checked again
    os.utime(target, ns=(1, 1))
    with pytest.warns(UserWarning, match="dog1.png: empty file"):
        third = scan_folder(image_folder)
    assert third.cache_hits == 11 and len(third.skipped) == 1


def test_identical_files_across_splits_are_reported(split_folder):
    shutil.copy(split_folder / "train" / "cat" / "cat0.png", split_folder / "val" / "cat" / "x.png")
    with pytest.warns(UserWarning, match="identical copy in another split"):
        info = scan_folder(split_folder)
    assert info.duplicates == (
        (
            str(split_folder / "train" / "cat" / "cat0.png"),
            str(split_folder / "val" / "cat" / "x.png"),
        ),
    )


def test_scan_command_prints_the_report(image_folder):
    from typer.testing import CliRunner

    from finetune.cli import app

    (image_folder / "dog" / "broken.png").write_bytes(b"\x89PNG nope")
    result = CliRunner().invoke(app, ["scan", str(image_folder)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for text in (
        "2 classes",
        "train share",
        "image sizes: smallest 40x32",
        "RGB",
        "class imbalance",
        "1 unreadable files (skipped)",
        "broken.png",
        "from the scan cache",
    ):
        assert text in result.output, text
    result = CliRunner().invoke(app, ["scan", str(image_folder), "--strict"])
    assert result.exit_code == 2 and "broken.png" in result.output


def _imbalanced(tmp_path):
    root = tmp_path / "imb"
    make_folder(root, classes=("cat",), n=16)
    make_folder(root, classes=("dog",), n=4)
    return scan_folder(root, val_split=0.0)


def test_class_weights_are_inverse_frequency(tmp_path):
    info = _imbalanced(tmp_path)
    cfg = FinetuneConfig().with_overrides(class_weights="auto", sampler="balanced")
    loss_weights, sample_weights = class_balance(info, cfg)
    assert loss_weights.tolist() == pytest.approx([20 / (2 * 16), 20 / (2 * 4)])
    assert len(sample_weights) == 20


def test_balanced_sampler_draws_classes_evenly(tmp_path):
    info = _imbalanced(tmp_path)
    _, weights = class_balance(info, FinetuneConfig().with_overrides(sampler="balanced"))
    labels = torch.tensor([y for _, y in info.train])
    loader = build_loader(
        torch.utils.data.TensorDataset(labels),
        batch_size=20,
        training=True,
        num_workers=0,
        seed=0,
        sample_weights=weights,
    )
    drawn = torch.cat([torch.cat([b[0] for b in loader]) for _ in range(20)])
    assert 0.4 < drawn.float().mean() < 0.6  # dogs are 20 % of the data, ~50 % of the draws


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
