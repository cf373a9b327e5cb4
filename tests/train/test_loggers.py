"""finetune.train.loggers: metrics.csv beside metrics.jsonl, TensorBoard scalars."""

import csv
import json


def test_metrics_csv_mirrors_metrics_jsonl(image_folder, tmp_path, run_resnet):
    result = run_resnet(image_folder, output=str(tmp_path / "r"), epochs=2)
    lines = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    with open(result.run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [x["epoch"] for x in lines] == [1, 2]
    assert float(rows[1]["val_loss"]) == lines[1]["val_loss"]


def test_tensorboard_scalars_are_written_per_epoch(image_folder, tmp_path, run_resnet):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = run_resnet(image_folder, output=str(tmp_path / "r"), epochs=2, log=("tensorboard",))
    events = EventAccumulator(str(result.run_dir / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("val_loss")] == [1, 2]
    assert "train_accuracy" in events.Tags()["scalars"]


def test_an_unknown_logger_names_the_choices(image_folder, tmp_path, run_resnet):
    import pytest

    from finetune.errors import ConfigError

    with pytest.raises(ConfigError, match="output.log: 'wandb' is not one of tensorboard"):
        run_resnet(image_folder, output=str(tmp_path / "r"), log=("wandb",))
