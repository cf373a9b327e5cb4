"""Issue 5: a run killed with SIGKILL mid-epoch resumes to the same weights as an uninterrupted
run (bit-identical on CPU: weights, optimizer, scheduler, RNG and data order are restored from
the state written atomically after each finished epoch; the killed epoch is trained again)."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

import finetune
from tests.conftest import make_folder

pytestmark = pytest.mark.slow
ARGS = dict(
    pretrained=False,
    epochs=4,
    img_size=64,
    batch_size=8,
    num_workers=0,
    warmup_epochs=0.0,
    deterministic=True,
)


def _cli_args(data, out):
    flags = [
        "--backbone",
        "test_resnet",
        "--data",
        str(data),
        "--output",
        str(out),
        "--no-pretrained",
        "--epochs",
        "4",
        "--img-size",
        "64",
        "--batch-size",
        "8",
        "--num-workers",
        "0",
        "--warmup-epochs",
        "0",
        "--deterministic",
    ]
    return [sys.executable, "-m", "finetune", "run", *flags]


def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path):
    data = make_folder(tmp_path / "data", n=60)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        _cli_args(data, killed),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "120"},
    )
    metrics = killed / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 1:
            time.sleep(0.15)  # into epoch 2
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    done = len(metrics.read_text().splitlines())
    assert 1 <= done < 4
    assert not list(killed.glob(".*.tmp"))  # an interrupted atomic write leaves nothing behind

    resumed = finetune.adapt(resume=killed, verbose=False)
    reference = finetune.adapt(
        "test_resnet", data, verbose=False, output=str(tmp_path / "reference"), **ARGS
    )
    a = load_file(str(resumed.run_dir / "last.safetensors"))
    b = load_file(str(reference.run_dir / "last.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    lines = resumed.run_dir.joinpath("metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4  # each epoch once: the killed, unfinished epoch left no line
