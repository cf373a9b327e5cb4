"""finetune.train.loggers: metrics.csv beside metrics.jsonl, TensorBoard scalars, offline W&B and
a local MLflow file store (read back from their files), trials grouped under a study."""

import csv
import glob
import json
import struct
import sys

import pytest


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
    from finetune.errors import ConfigError

    with pytest.raises(ConfigError, match="output.log: 'comet' is not one of tensorboard"):
        run_resnet(image_folder, output=str(tmp_path / "r"), log=("comet",))


def wandb_records(folder):
    """(kind, record) of every record of the offline W&B run under ``folder``: the .wandb file is
    a LevelDB-style log (7-byte header, 32 KiB blocks, records cut into FULL/FIRST/MIDDLE/LAST
    chunks) of protobuf ``Record`` messages."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = glob.glob(f"{folder}/wandb/offline-run-*/run-*.wandb")
    raw, pos, pending, out = open(path, "rb").read(), 7, b"", []
    while pos + 7 <= len(raw):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a chunk header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos : pos + 7])
        chunk, pos = raw[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            out.append((record.WhichOneof("record_type"), record))
    return out


def wandb_history(folder) -> list[dict]:
    rows = []
    for kind, record in wandb_records(folder):
        if kind == "history":
            rows.append(
                {"/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
            )
    return rows


def test_wandb_offline_run_has_config_epochs_plan_and_plots(
    image_folder, tmp_path, run_resnet, monkeypatch
):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    result = run_resnet(image_folder, output=str(tmp_path / "r"), epochs=2, log=("wandb",))
    import wandb

    wandb.teardown()  # the W&B service writes the run file on its own: wait until it has
    history = wandb_history(result.run_dir)
    epochs = [row for row in history if "val_loss" in row]
    lines = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in epochs] == [1, 2]
    assert [row["val_accuracy"] for row in epochs] == [x["val_accuracy"] for x in lines]
    keys = {k.split("/")[0] + ("/" + k.split("/")[1] if k.startswith("plots/") else "")
            for row in history for k in row}  # fmt: skip
    assert {"plan", "plots/curves"} <= keys
    (run,) = [r.run for kind, r in wandb_records(result.run_dir) if kind == "run"]
    config = {i.key: json.loads(i.value_json) for i in run.config.update}
    assert config["optim"]["lr"] == result.config.optim.lr and config["train"]["epochs"] == 2
    summary = {i.key: json.loads(i.value_json)
               for kind, r in wandb_records(result.run_dir) if kind == "summary"
               for i in r.summary.update if i.key}  # fmt: skip
    assert summary["val_accuracy"] == pytest.approx(result.metrics["val"]["accuracy"])


def mlflow_client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def test_mlflow_file_store_run_has_params_epochs_plan_and_plots(image_folder, tmp_path, run_resnet):
    result = run_resnet(image_folder, output=str(tmp_path / "r"), epochs=2, log=("mlflow",))
    client = mlflow_client((result.run_dir / "mlruns").as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("finetune").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "r"
    assert float(run.data.params["optim.lr"]) == result.config.optim.lr
    lines = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    history = client.get_metric_history(run.info.run_id, "val_loss")
    assert [(m.step, m.value) for m in history] == [(x["epoch"], x["val_loss"]) for x in lines]
    assert run.data.metrics["final_val_accuracy"] == pytest.approx(
        result.metrics["val"]["accuracy"]
    )
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.json", "plan.md", "plots"} <= names
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert "plots/curves.png" in plots


def test_tracked_runs_of_a_group_share_one_experiment(image_folder, tmp_path, run_resnet):
    from finetune.train.loggers import tracking_group

    with tracking_group("study-x", tmp_path / "study"):
        for name in ("t0", "t1"):
            run_resnet(image_folder, output=str(tmp_path / name), epochs=1, log=("mlflow",))
    client = mlflow_client((tmp_path / "study" / "mlruns").as_uri())
    runs = client.search_runs([client.get_experiment_by_name("study-x").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["t0", "t1"]
    assert {r.data.tags["finetune.study"] for r in runs} == {"study-x"}
    assert not (tmp_path / "t0" / "mlruns").exists()


def test_a_failed_run_is_marked_failed_not_finished(image_folder, tmp_path, run_resnet):
    """Regression guard: the trackers end their run in ``close`` only when an exception is on its
    way (``finish`` ends a normal run after the plots): a run that raised must not stay RUNNING."""

    class Boom:
        def log_epochs(self, records):
            raise RuntimeError("boom")

        def close(self):
            pass

    with pytest.raises(RuntimeError, match="boom"):
        run_resnet(image_folder, output=str(tmp_path / "r"), log=("mlflow",), callbacks=[Boom()])
    client = mlflow_client((tmp_path / "r" / "mlruns").as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("finetune").experiment_id])
    assert run.info.status == "FAILED"


def test_a_missing_tracker_package_names_the_extra(image_folder, tmp_path, run_resnet, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    with pytest.raises(ValueError, match=r"pip install 'finetune\[wandb\]'"):
        run_resnet(image_folder, output=str(tmp_path / "r"), log=("wandb",))
