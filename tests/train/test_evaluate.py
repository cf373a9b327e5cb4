"""Evaluation at the end of a run: the multi-label report, thresholds chosen on val, saved, and
used by predict."""

import json

import finetune


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
