"""Hostile and broken inputs, end to end through the CLI: each ends in one line that names the
file or key and the fix, a non-zero exit, no traceback, and no earlier work lost.

Table-driven: every row was a bug (a traceback, a hang, silent wrong data or code run from a
file) found by a hostile-input campaign; the row's name says which. Finer-grained regression
tests sit beside the module that fixed each (named in the rows' comments).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
from typer.testing import CliRunner

from finetune.cli import app
from tests.conftest import make_folder

FAST = ["--no-pretrained", "--epochs", "1", "--img-size", "32", "--batch-size", "4",
        "--num-workers", "0", "--backbone", "test_resnet"]  # fmt: skip


@dataclass
class Ctx:
    tmp: Path
    data: Path
    run: Path  # a finished run of `data`, a private copy per test
    env: dict = field(default_factory=dict)


@dataclass
class Case:
    name: str
    setup: Callable[[Ctx], list]  # makes the bad input, returns the CLI arguments
    code: int
    message: str  # a regex the output must contain
    after: Callable[[Ctx], None] = lambda ctx: None  # what must still hold afterwards


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("trained")
    data = make_folder(root / "data")
    result = CliRunner().invoke(app, ["run", "--data", str(data), "--output", str(root / "run"),
                                      *FAST])  # fmt: skip
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture
def ctx(trained, tmp_path):
    data = shutil.copytree(trained / "data", tmp_path / "data", symlinks=True)
    run = shutil.copytree(trained / "run", tmp_path / "run")
    config = json.loads((run / "config.json").read_text())
    config["finetune"]["config"]["data"]["path"] = str(data)  # the copy is the run's data
    (run / "config.json").write_text(json.dumps(config))
    return Ctx(tmp_path, data, run)


def _edit_config(ctx: Ctx, edit) -> None:
    path = ctx.run / "config.json"
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))


def _plant_torchvision_pickle(ctx: Ctx) -> list:
    import collections

    import torch
    import torchvision

    ctx.env["TORCH_HOME"] = str(ctx.tmp / "torch")
    weights = torchvision.models.get_model_weights("mobilenet_v3_small").DEFAULT
    planted = ctx.tmp / "torch" / "hub" / "checkpoints" / os.path.basename(weights.url)
    planted.parent.mkdir(parents=True)

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {ctx.tmp / 'code-ran'}",))

    state = collections.OrderedDict(torchvision.models.mobilenet_v3_small().state_dict())
    state._metadata = Payload()
    torch.save(state, planted)
    return ["run", "--data", ctx.data, "--output", ctx.tmp / "o", "--backbone",
            "tv:mobilenet_v3_small", "--epochs", "1", "--img-size", "32"]  # fmt: skip


def _locked(ctx: Ctx) -> list:
    (ctx.tmp / "o").mkdir()
    (ctx.tmp / "o" / ".finetune.lock").write_text(
        json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": 0})
    )
    return ["run", "--data", ctx.data, "--output", ctx.tmp / "o", *FAST]


def _unchanged(path: Path) -> Callable[[Ctx], None]:
    def check(ctx: Ctx) -> None:
        assert not (ctx.tmp / "code-ran").exists()
        assert (ctx.run / "model.safetensors").read_bytes() == (
            path / "model.safetensors"
        ).read_bytes()

    return check


def _csv_with_missing(ctx: Ctx) -> None:
    rows = [f"{p},{p.parent.name}" for p in sorted(ctx.data.rglob("*.png"))]
    rows += [f"{ctx.data / 'cat' / 'gone1.png'},cat", f"{ctx.data / 'dog' / 'gone2.png'},dog"]
    (ctx.tmp / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n")


CASES = [
    # data intake (data/test_folder.py, test_images.py, test_scan.py, test_manifest.py)
    Case(
        "symlink-loop-up",
        lambda ctx: [os.symlink("..", ctx.data / "cat" / "up"), "scan", ctx.data][1:],
        0,
        r"cat/up .*a loop",
    ),
    Case(
        "symlink-loop-self",
        lambda ctx: [os.symlink(".", ctx.data / "cat" / "self"), "scan", ctx.data][1:],
        0,
        r"cat/self .*a loop",
    ),
    Case(
        "fifo-named-png-scan",
        lambda ctx: [os.mkfifo(ctx.data / "cat" / "x.png"), "scan", ctx.data][1:],
        0,
        "not a regular file",
    ),
    Case(
        "fifo-named-png-predict",
        lambda ctx: [os.mkfifo(ctx.data / "cat" / "x.png"), "predict", ctx.run, ctx.data][1:],
        0,
        "skipping .*x.png: not a regular file",
    ),
    Case(
        "csv-rows-with-missing-files",
        lambda ctx: [_csv_with_missing(ctx), "scan", ctx.tmp / "labels.csv"][1:],
        0,
        "2 unreadable files \\(skipped\\).*file not found",
    ),
    Case(
        "scan-empty-class-and-bad-file",
        lambda ctx: [
            (ctx.data / "fox").mkdir(),
            (ctx.data / "cat" / "bad.png").write_bytes(b"x"),
            "scan",
            ctx.data,
        ][2:],
        2,
        "bad.png.*problem.* that stop a run.*fox: class folder has no readable images",
    ),
    # security: code ran from a planted torchvision cache file (models/test_backbones.py)
    Case(
        "torchvision-cache-pickle",
        _plant_torchvision_pickle,
        2,
        "refused to load .*pickled code",
        after=lambda ctx: None if not (ctx.tmp / "code-ran").exists() else pytest.fail("ran"),
    ),
    # a NaN model was saved as the best one, exit 0 (test_validation.py, train/test_trainer.py)
    Case(
        "lr-inf",
        lambda ctx: ["run", "--data", ctx.data, "--output", ctx.tmp / "o", *FAST, "--lr", "inf"],
        2,
        "optim.lr must be a finite number",
    ),
    # resume trained on other data and relabelled it (train/test_resume.py)
    Case(
        "resume-classes-renamed",
        lambda ctx: [(ctx.data / "cat").rename(ctx.data / "healthy"), "run", "--resume", ctx.run][
            1:
        ],
        2,
        "classes changed: cat, dog -> dog, healthy",
    ),
    Case(
        "resume-images-added",
        lambda ctx: [
            shutil.copy(ctx.data / "dog" / "dog0.png", ctx.data / "dog" / "x.png"),
            "run",
            "--resume",
            ctx.run,
        ][1:],
        2,
        "images per split changed",
    ),
    # two runs with one --output mixed their files (train/test_rundir.py)
    Case("output-in-use", _locked, 2, "in use by process .* choose another --output"),
    # damaged run directories ended in TypeError/IndexError tracebacks (train/test_checkpoint.py)
    Case(
        "config-json-array",
        lambda ctx: [_edit_config(ctx, lambda c: [c]), "predict", ctx.run, ctx.data][1:],
        2,
        "config.json: the file is a JSON list, not an object",
    ),
    Case(
        "config-model-args-checkpoint-path",
        lambda ctx: [
            _edit_config(
                ctx,
                lambda c: {
                    **c,
                    "model_args": {**c["model_args"], "checkpoint_path": str(ctx.tmp / "x.pth")},
                },
            ),
            "predict",
            ctx.run,
            ctx.data,
        ][1:],
        2,
        "model_args.checkpoint_path is not allowed",
    ),
    Case(
        "config-no-pretrained-cfg",
        lambda ctx: [
            _edit_config(ctx, lambda c: {k: v for k, v in c.items() if k != "pretrained_cfg"}),
            "predict",
            ctx.run,
            ctx.data,
        ][1:],
        2,
        "pretrained_cfg is missing",
    ),
    Case(
        "config-mean-null",
        lambda ctx: [
            _edit_config(
                ctx, lambda c: {**c, "pretrained_cfg": {**c["pretrained_cfg"], "mean": None}}
            ),
            "predict",
            ctx.run,
            ctx.data,
        ][1:],
        2,
        "pretrained_cfg.mean must be 3 numbers",
    ),
    Case(
        "config-label-names-short",
        lambda ctx: [
            _edit_config(ctx, lambda c: {**c, "label_names": ["cat"]}),
            "predict",
            ctx.run,
            ctx.data,
        ][1:],
        2,
        "label_names must be 2 strings",
    ),
    Case(
        "trainer-state-foreign",
        lambda ctx: [
            __import__("torch").save({"epoch": 1}, ctx.run / "trainer_state.pt"),
            "run",
            "--resume",
            ctx.run,
        ][1:],
        2,
        "trainer_state.pt.*(damaged|does not fit)",
    ),
    # predict --device cuda / tpu ended in RuntimeError tracebacks (train/test_runtime.py)
    Case(
        "predict-cuda-without-gpu",
        lambda ctx: ["predict", ctx.run, ctx.data, "--device", "cuda"],
        2,
        "no CUDA device is available",
    ),
    Case(
        "predict-device-tpu",
        lambda ctx: ["predict", ctx.run, ctx.data, "--device", "tpu"],
        2,
        "'tpu' is not one of",
    ),
    # --resume --dry-run trained and changed the run; --resume --recipe was ignored silently;
    # the refusal named flags that do not exist (--path, --name, --pretrained)
    Case(
        "resume-recipe",
        lambda ctx: ["run", "--resume", ctx.run, "--recipe", "natural"],
        2,
        "drop --recipe",
    ),
    Case(
        "resume-backbone",
        lambda ctx: ["run", "--resume", ctx.run, "--backbone", "resnet50", "--no-pretrained"],
        2,
        "drop --backbone, --no-pretrained",
    ),
    # found by the review of this work: each ended in a traceback, exit 0 or a wrong message
    Case(
        "resume-config-json-array",
        lambda ctx: [_edit_config(ctx, lambda c: [c]), "run", "--resume", ctx.run][1:],
        2,
        "not a finetune run",
    ),
    Case(
        "resume-fingerprint-damaged",
        lambda ctx: [
            _edit_config(
                ctx,
                lambda c: {
                    **c,
                    "finetune": {
                        **c["finetune"],
                        "data": {**c["finetune"]["data"], "fingerprint": "x"},
                    },
                },
            ),
            "run",
            "--resume",
            ctx.run,
        ][1:],
        2,
        "fingerprint is damaged",
    ),
    Case(
        "resume-without-state",
        lambda ctx: [(ctx.run / "trainer_state.pt").unlink(), "run", "--resume", ctx.run][1:],
        2,
        "cannot be resumed or extended",
    ),
    Case(
        "predict-nothing-readable",
        lambda ctx: [
            (ctx.tmp / "junk").mkdir(),
            (ctx.tmp / "junk" / "x.png").write_bytes(b"x"),
            "predict",
            ctx.run,
            ctx.tmp / "junk",
        ][2:],
        2,
        "no readable image in",
    ),
    Case(
        "csv-not-utf8",
        lambda ctx: [
            (ctx.tmp / "l.csv").write_bytes(b"path,label\n\xff\xfe,cat\n"),
            "scan",
            ctx.tmp / "l.csv",
        ][1:],
        2,
        "l.csv: not UTF-8",
    ),
    Case(
        "eval-batch-size-0",
        lambda ctx: ["eval", ctx.run, ctx.data, "--batch-size", "0"],
        2,
        "--batch-size 0: must be at least 1",
    ),
    Case(
        "config-thresholds-short",
        lambda ctx: [
            _edit_config(
                ctx,
                lambda c: {
                    **c,
                    "finetune": {**c["finetune"], "multi_label": True, "thresholds": [0.5]},
                },
            ),
            "predict",
            ctx.run,
            ctx.data,
        ][1:],
        2,
        "finetune.thresholds must be 2 numbers",
    ),
]


@contextmanager
def _deadline(seconds: int):
    """A hang fails the test instead of the suite (SIGALRM in the main thread)."""

    def hung(signum, frame):
        raise TimeoutError(f"no answer in {seconds} s: the command hangs")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_input_ends_in_one_clear_line(case, ctx):
    args = [str(a) for a in case.setup(ctx)]
    before = {p.name: p.read_bytes() for p in ctx.run.iterdir() if p.is_file()}
    with _deadline(120):
        result = CliRunner().invoke(app, args, env={"COLUMNS": "200", **ctx.env})
    out = result.output
    assert result.exit_code == case.code, out
    assert "Traceback" not in out, out
    import re

    assert re.search(case.message, out, re.S), out
    if case.code == 2 and "Usage:" not in out:  # typer's own usage errors have their box
        errors = [line for line in out.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and out.strip().splitlines()[-1].startswith("error:"), out
    case.after(ctx)
    for name in ("model.safetensors", "trainer_state.pt"):  # earlier work is never lost
        if name in before and (ctx.run / name).exists():
            assert (ctx.run / name).read_bytes() == before[name] or name == "trainer_state.pt"


def test_resume_dry_run_shows_the_plan_and_changes_nothing(ctx):
    # regression: --resume RUN --dry-run trained and changed the run
    before = {p.name: p.stat().st_mtime_ns for p in ctx.run.iterdir()}
    result = CliRunner().invoke(
        app, ["run", "--resume", str(ctx.run), "--dry-run"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "Plan:" in result.output
    assert {p.name: p.stat().st_mtime_ns for p in ctx.run.iterdir()} == before


def test_markup_in_class_names_prints_as_it_is(ctx):
    # regression: a class named [/] trained, then crashed the final report (MarkupError) and
    # config.json never got its metrics ("/" cannot be in a folder name: a CSV label)
    rows = [
        f"{p},{'[/]' if p.parent.name == 'cat' else '[red]dog'}"
        for p in sorted(ctx.data.rglob("*.png"))
    ]
    (ctx.tmp / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    result = CliRunner().invoke(app, ["run", "--data", str(ctx.tmp / "labels.csv"), "--output",
                                      str(ctx.tmp / "o"), *FAST], env={"COLUMNS": "200"})  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "[/]" in result.output and "[red]dog" in result.output
    assert "metrics" in json.loads((ctx.tmp / "o" / "config.json").read_text())["finetune"]
