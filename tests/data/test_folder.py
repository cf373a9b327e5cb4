"""Image folders: class-folder and split layouts, stratified seeded splits, bad folders and
bad images, duplicates across splits."""

import shutil

import pytest

from finetune.data.folder import scan_folder
from finetune.errors import DataError
from tests.conftest import make_folder


def test_class_folder_layout_is_split_stratified_and_seeded(image_folder):
    info = scan_folder(image_folder, val_split=0.5, seed=1)
    assert info.layout == "classes" and info.classes == ("cat", "dog")
    assert info.counts() == {"train": [3, 3], "val": [3, 3]}
    assert scan_folder(image_folder, val_split=0.5, seed=1) == info
    assert scan_folder(image_folder, val_split=0.5, seed=2).val != info.val
    assert not set(info.train) & set(info.val)


def test_split_layout(split_folder):
    info = scan_folder(split_folder)
    assert info.layout == "splits"
    assert info.counts() == {"train": [6, 6], "val": [2, 2], "test": [2, 2]}


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda r: None, "data folder not found"),
        (lambda r: r.mkdir(), "no class folders found"),
        (lambda r: make_folder(r, classes=("cat",)), "only one class folder ('cat')"),
        (
            lambda r: (make_folder(r), (r / "fox").mkdir()),
            "fox: class folder has no readable images",
        ),
        (
            lambda r: (
                make_folder(r, split="train"),
                make_folder(r, classes=("cat", "fox"), split="val"),
            ),
            "classes ['fox'] are not in",
        ),
    ],
)
def test_bad_folders_fail_with_the_path(tmp_path, setup, message):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises((DataError, FileNotFoundError), match=None) as e:
        scan_folder(root)
    assert message in str(e.value)


def _break_images(root):
    truncated = root / "cat" / "cat0.png"
    truncated.write_bytes(truncated.read_bytes()[:60])
    (root / "dog" / "empty.png").write_bytes(b"")
    (root / "dog" / "text.jpg").write_text("not an image")
    return truncated


def test_bad_images_are_skipped_with_a_warning_naming_them(image_folder):
    truncated = _break_images(image_folder)
    with pytest.warns(UserWarning, match="skipping unreadable image .*cat0.png"):
        info = scan_folder(image_folder)
    skipped = dict(info.skipped)
    assert set(skipped) == {
        str(truncated),
        str(image_folder / "dog" / "empty.png"),
        str(image_folder / "dog" / "text.jpg"),
    }
    assert skipped[str(image_folder / "dog" / "empty.png")] == "empty file"
    assert all(p not in skipped for p, _ in info.train + info.val)


def test_strict_fails_on_the_first_bad_image(image_folder):
    _break_images(image_folder)
    with pytest.raises(DataError, match=r"unreadable image .* drop --strict"):
        scan_folder(image_folder, strict=True)


def test_split_keeps_a_training_image_in_every_class(tmp_path):
    make_folder(tmp_path / "d", classes=("cat",), n=1)
    make_folder(tmp_path / "d", classes=("dog",), n=4)
    info = scan_folder(tmp_path / "d", val_split=0.6)
    assert info.counts() == {"train": [1, 2], "val": [0, 2]}


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
