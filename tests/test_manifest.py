"""Issue 4: CSV manifests, single- and multi-label (sigmoid, BCE, AUC/F1/mAP, thresholds)."""

import csv
import json

import pytest
import torch

import finetune
from finetune.data.manifest import scan_csv
from finetune.errors import DataError
from finetune.train.metrics import average_precision, best_thresholds, roc_auc
from tests.conftest import COLOURS, make_image


def _write(path, header, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def single_csv(tmp_path):
    rows = []
    for c in ("cat", "dog"):
        for i in range(6):
            make_image(tmp_path / "img" / f"{c}{i}.png", COLOURS[c], seed=i)
            rows.append((f"img/{c}{i}.png", c, "val" if i == 0 else "train"))
    return _write(tmp_path / "labels.csv", ["path", "label", "split"], rows)


@pytest.fixture
def multi_csv(tmp_path):
    # red images carry "warm", green "cool", and every third image also "bright"
    rows = []
    for i in range(18):
        colour = "cat" if i % 2 else "dog"
        make_image(tmp_path / "img" / f"{i}.png", COLOURS[colour], seed=i)
        labels = ["warm" if colour == "cat" else "cool"] + (["bright"] if i % 3 == 0 else [])
        rows.append((f"img/{i}.png", ";".join(labels)))
    rows.append(("img/0.png", "No Finding"))  # an image without labels is allowed
    return _write(tmp_path / "multi.csv", ["path", "labels"], rows)


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
def test_bad_manifests(tmp_path, header, rows, message):
    make_image(tmp_path / "a.png", COLOURS["cat"])
    with pytest.raises(DataError, match=None) as e:
        scan_csv(_write(tmp_path / "m.csv", header, rows))
    assert message in str(e.value)


def test_ranking_metrics_match_known_values():
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    targets = torch.tensor([1, 0, 1, 0, 0, 1])
    assert average_precision(scores, targets) == pytest.approx((1 + 2 / 3 + 3 / 6) / 3)
    assert roc_auc(scores, targets) == pytest.approx(5 / 9)
    assert roc_auc(torch.tensor([0.5, 0.5]), torch.tensor([1, 0])) == pytest.approx(0.5)
    probs = torch.tensor([[0.9], [0.6], [0.4], [0.2]])
    assert best_thresholds(probs, torch.tensor([[1.0], [1.0], [0.0], [0.0]])) == pytest.approx(
        [0.6]
    )


def test_single_label_csv_run(single_csv, fast_overrides):
    result = finetune.adapt("test_resnet", single_csv, verbose=False, **fast_overrides)
    assert result.classes == ("cat", "dog") and result.metrics["val"]["num_samples"] == 2


def test_multilabel_run_thresholds_and_predict(multi_csv, fast_overrides, tmp_path):
    result = finetune.adapt(
        "test_resnet",
        multi_csv,
        verbose=False,
        class_weights="auto",
        **{**fast_overrides, "epochs": 2},
    )
    val = result.metrics["val"]
    assert set(val) >= {"mAP", "macro_auc", "micro_f1", "per_label"}
    assert set(val["per_label"]["warm"]) >= {"auc", "ap", "f1", "threshold"}
    config = json.loads((result.run_dir / "config.json").read_text())["finetune"]
    assert config["multi_label"] is True and len(config["thresholds"]) == 3
    lines = (result.run_dir / "metrics.jsonl").read_text().splitlines()
    assert "val_map" in json.loads(lines[0])
    records = finetune.predict(result.run_dir, [tmp_path / "img" / "1.png"])
    assert set(records[0]) == {"path", "labels", "prob_bright", "prob_cool", "prob_warm"}
    chosen = [
        n
        for n, t in zip(("bright", "cool", "warm"), config["thresholds"])
        if records[0][f"prob_{n}"] >= t
    ]
    assert records[0]["labels"] == ";".join(chosen)


def test_balanced_sampler_gives_unlabelled_images_their_share(multi_csv):
    from finetune.config import FinetuneConfig
    from finetune.data.datasets import class_balance

    info = scan_csv(multi_csv, val_split=0.0)
    _, weights = class_balance(info, FinetuneConfig().with_overrides(sampler="balanced"))
    empty = [w for (_, y), w in zip(info.train, weights.tolist()) if not y]
    assert empty and min(empty) > 1.0  # a group of its own, not the minimum weight of 1


def test_chestxray_style_pipe_separator_and_scan_command(tmp_path):
    from typer.testing import CliRunner

    from finetune.cli import app

    for i in range(4):
        make_image(tmp_path / f"{i}.png", COLOURS["cat"], seed=i)
    path = _write(
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
