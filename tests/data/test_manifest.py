"""Issue 4: CSV manifests, single- and multi-label (the multi-label run: train/test_evaluate.py)."""

import pytest

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
