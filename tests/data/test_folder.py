"""Image folders: class-folder and split layouts, stratified seeded splits, bad folders and
bad images, duplicates across splits, symlink loops, classes never validated, report-only scans
that list every problem."""

import re
import shutil
import warnings

import pytest
from rich.console import Console

from finetune.data.folder import scan_folder
from finetune.errors import DataError
from finetune.render import scan_report
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
        (lambda r: r.write_text("x"), "is a file: --data takes an image folder or a .csv"),
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
    with pytest.warns(UserWarning, match="class 'cat' .* never validated"):
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


@pytest.mark.parametrize("target", ["..", "."])
def test_symlink_loops_are_walked_once_with_a_warning_naming_the_link(image_folder, target):
    """Bug 5: `ln -s .. data/cat/up` listed files until MemoryError and `ln -s . data/cat/self`
    counted every image many times, without a word; each real folder is now listed once."""
    link = image_folder / "cat" / "loop"
    link.symlink_to(target)
    with pytest.warns(UserWarning, match=rf"skipping {re.escape(str(link))}: a link to .* loop"):
        info = scan_folder(image_folder)
    assert len(info.train + info.val) == 12 and len(info.checks) == 12
    assert [(path, reason.endswith("contains it (a loop)")) for path, reason in info.skipped] == [
        (str(link), True)
    ]  # in the scan report too: `finetune scan` shows no warnings


def test_a_second_link_to_a_folder_lists_its_images_once(image_folder):
    """Bug 5: a link to a folder already listed (not a loop) would count its images twice."""
    (image_folder / "cat" / "sub").mkdir()
    shutil.move(image_folder / "cat" / "cat0.png", image_folder / "cat" / "sub" / "cat0.png")
    (image_folder / "cat" / "alias").symlink_to("sub")
    with pytest.warns(UserWarning, match=r"alias: the same folder as .*sub, already listed"):
        info = scan_folder(image_folder)
    assert len(info.train + info.val) == 12
    assert [p for p, _ in info.skipped] == [str(image_folder / "cat" / "alias")]


def test_a_class_with_one_image_warns_that_it_is_never_validated(tmp_path):
    """Bug 17: a class of one image kept it for training, so it was never validated, silently."""
    make_folder(tmp_path / "d", classes=("cat",), n=1)
    make_folder(tmp_path / "d", classes=("dog",), n=4)
    with pytest.warns(UserWarning) as caught:
        info = scan_folder(tmp_path / "d")
    assert info.counts()["val"] == [0, 1]
    messages = [str(w.message) for w in caught]
    assert (
        "class 'cat' (1 image) has no validation image: it trains but is never validated; "
        "add images" in messages
    )
    with warnings.catch_warnings():  # no validation at all (val_split 0) is the user's choice
        warnings.simplefilter("error")
        scan_folder(tmp_path / "d", val_split=0.0)


def test_report_only_scan_lists_every_problem_with_the_bad_files(image_folder):
    """Bug 16: `finetune scan` stopped at the first empty class folder without reporting the bad
    files; a report-only scan collects the problems that stop a run in DataInfo.errors."""
    _break_images(image_folder)
    (image_folder / "fox").mkdir()
    with pytest.raises(DataError, match="fox: class folder has no readable images"):
        scan_folder(image_folder)  # a run still stops at once
    with pytest.warns(UserWarning, match="skipping unreadable image"):
        info = scan_folder(image_folder, report_only=True)
    assert len(info.errors) == 1 and "fox: class folder has no readable images" in info.errors[0]
    assert len(info.skipped) == 3 and info.classes == ("cat", "dog", "fox")
    console = Console(record=True, width=300)
    scan_report(info, console)
    text = console.export_text()
    assert "1 problem(s) that stop a run:" in text and "3 unreadable files (skipped)" in text


def test_report_only_collects_single_class_unknown_split_class_and_strict(tmp_path):
    """Bug 16: every kind of problem that stops a run is reported, not only the first."""
    root = make_folder(tmp_path / "d", classes=("cat",), split="train")
    make_folder(root, classes=("cat", "fox"), split="val")
    (root / "train" / "cat" / "cat0.png").write_bytes(b"")
    with pytest.warns(UserWarning):
        info = scan_folder(root, strict=True, report_only=True)
    assert [e.split(": ", 1)[1][:25] for e in info.errors] == [
        "only one class folder ('c",
        "classes ['fox'] are not i",
        "unreadable image (empty f",
    ]
    assert info.skipped == ((str(root / "train" / "cat" / "cat0.png"), "empty file"),)
    console = Console(record=True, width=300)
    scan_report(info, console)
    assert "3 problem(s) that stop a run:" in console.export_text()
