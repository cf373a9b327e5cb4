"""Issue 4: CSV manifests, single- and multi-label (the multi-label run: train/test_evaluate.py);
missing files reported as bad files; report-only scans."""

import pytest
from typer.testing import CliRunner

import finetune
from finetune.data.manifest import scan_csv
from finetune.errors import DataError
from tests.conftest import COLOURS, make_image


@pytest.fixture
def single_csv(tmp_path, write_csv):
    rows = []
    for c in ("cat", "dog"):
        for i in range(6):
            make_image(tmp_path / "img" / f"{c}{i}.png", COLOURS[c], seed=i)
            rows.append((f"img/{c}{i}.png", c, "val" if i == 0 else "train"))
    return write_csv(tmp_path / "labels.csv", ["path", "label", "split"], rows)


def test_single_label_manifest_with_split_column(single_csv):
    info = scan_csv(single_csv)
    assert (info.classes, info.multilabel) == (("cat", "dog"), False)
    assert info.counts() == {"train": [5, 5], "val": [1, 1]}


def test_multilabel_manifest(multi_csv):
    info = scan_csv(multi_csv, val_split=0.25)
    assert info.multilabel and info.classes == ("bright", "cool", "warm")
    assert sum(len(s) for s in (info.train, info.val)) == 19
    assert any(y == () for _, y in info.train + info.val)


@pytest.mark.parametrize(
    "header, rows, message",
    [
        (["file", "label"], [("a.png", "x")], "needs a header with 'path'"),
        (["path", "label"], [("missing.png", "x"), ("gone.png", "y")], "image not found"),
        (["path", "label", "split"], [("a.png", "x", "holdout")], "split 'holdout' is not one of"),
        (["path", "label"], [("a.png", "")], "empty label"),
    ],
)
def test_bad_manifests(tmp_path, header, rows, message, write_csv):
    make_image(tmp_path / "a.png", COLOURS["cat"])
    with pytest.raises(DataError, match=None) as e:
        scan_csv(write_csv(tmp_path / "m.csv", header, rows))
    assert message in str(e.value)


def test_single_label_csv_run(single_csv, fast_overrides):
    result = finetune.adapt("test_resnet", single_csv, verbose=False, **fast_overrides)
    assert result.classes == ("cat", "dog") and result.metrics["val"]["num_samples"] == 2


def test_chestxray_style_pipe_separator_and_scan_command(tmp_path, write_csv):
    from typer.testing import CliRunner

    from finetune.cli import app

    for i in range(4):
        make_image(tmp_path / f"{i}.png", COLOURS["cat"], seed=i)
    path = write_csv(
        tmp_path / "cxr.csv",
        ["path", "labels"],
        [
            ("0.png", "Effusion|Infiltration"),
            ("1.png", "Effusion"),
            ("2.png", "No Finding"),
            ("3.png", "Infiltration"),
        ],
    )
    assert scan_csv(path).classes == ("Effusion", "Infiltration")
    result = CliRunner().invoke(app, ["scan", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "Effusion" in result.output


def test_missing_files_are_bad_files_in_the_scan_not_dropped_silently(tmp_path, write_csv):
    """Bug 15: rows whose files are missing were dropped without a word (4 of 10 rows gone from
    `finetune scan labels.csv`); each is now a bad file, "file not found", in DataInfo.skipped
    (so in the report and skipped_files.txt) with a warning; --strict makes it an error."""
    from finetune.cli import app

    rows = []
    for c in ("cat", "dog"):
        for i in range(5):
            if i < 3:
                make_image(tmp_path / "img" / f"{c}{i}.png", COLOURS[c], seed=i)
            rows.append((f"img/{c}{i}.png", c))
    path = write_csv(tmp_path / "labels.csv", ["path", "label"], rows)
    with pytest.warns(UserWarning, match=r"skipping unreadable image .*\.png: file not found"):
        info = scan_csv(path)
    missing = [str(tmp_path / "img" / f"{c}{i}.png") for c in ("cat", "dog") for i in (3, 4)]
    assert info.skipped == tuple((p, "file not found") for p in missing)
    assert len(info.train + info.val) == 6
    with pytest.raises(DataError, match=r"labels.csv:5: image not found: .*cat3.png \(4 missing"):
        scan_csv(path, strict=True)
    result = CliRunner().invoke(app, ["scan", str(path)], env={"COLUMNS": "300"})
    assert result.exit_code == 0 and "4 unreadable files (skipped)" in result.output
    assert result.output.count("file not found") == 4


def test_report_only_manifest_scan_collects_the_problems(tmp_path, write_csv):
    """Bug 16 (manifests): one class and a missing file are both reported, not raised."""
    make_image(tmp_path / "a.png", COLOURS["cat"])
    path = write_csv(tmp_path / "m.csv", ["path", "label"], [("a.png", "x"), ("b.png", "x")])
    with pytest.raises(DataError, match="1 distinct label"):
        scan_csv(path)
    with pytest.warns(UserWarning, match="b.png: file not found"):
        info = scan_csv(path, strict=True, report_only=True)
    assert [e.split(": ", 2)[1] for e in info.errors] == [
        "1 distinct label(s) (x); a classifier needs at least two classes",
        "unreadable image (file not found); remove or fix it, or drop --strict to skip bad "
        "images (1 bad, 0 suspicious)",
    ]
