"""DistributedDataParallel on 2 CPU processes (gloo), on one "node" or on two (torchrun c10d
rendezvous on localhost, one process each), matches one process with the same global batch. Tolerance: gradients are averaged in a different order (all-reduce of two
half-batch means vs one mean), so weights agree to float32 rounding, atol 1e-5 (SGD; see
tests/_ddp_train.py for why not AdamW)."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).parents[1] / "_ddp_train.py"  # tests/_ddp_train.py


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SCRIPT.parent.parent)}


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The reference: one process, batch 8."""
    out = tmp_path_factory.mktemp("ddp") / "one"
    single = subprocess.run([sys.executable, str(SCRIPT), str(out), "8"], env=_env(),
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert single.returncode == 0, single.stderr[-2000:]
    return out


def _same_weights(one, two):
    a = load_file(str(one / "last.safetensors"))
    b = load_file(str(two / "last.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key
    # only rank 0 wrote the run directory, in the usual format
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path, one_process):
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
         str(SCRIPT), str(tmp_path / "two"), "4"],
        env=_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    _same_weights(one_process, tmp_path / "two")


def test_a_halt_from_rank_0s_logger_ends_every_rank(tmp_path):
    """Loggers run on rank 0 only; its ``halt`` (tune's budget stop) ends the other ranks too.
    Without the all-reduce of the halt, rank 1 goes on to its next step and waits there for
    good (checked: the run below hung past 90 s)."""
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
         str(SCRIPT), str(tmp_path / "two"), "4", "halt"],
        env=_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    assert len((tmp_path / "two" / "metrics.jsonl").read_text().splitlines()) == 1  # of 2


def test_two_nodes_on_localhost_match_one_process(tmp_path, one_process):
    # what a Slurm job does across machines: torchrun per node, c10d rendezvous at one address
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes",
                "2",
                "--nproc-per-node",
                "1",
                "--node-rank",
                str(rank),
                "--rdzv-backend",
                "c10d",
                "--rdzv-id",
                "test",
                "--rdzv-endpoint",
                f"127.0.0.1:{port}",
                str(SCRIPT),
                str(tmp_path / "two"),
                "4",
            ],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for rank in (0, 1)
    ]
    try:
        results = [(node.wait(timeout=300), node.stderr.read()) for node in nodes]
    finally:
        for node in nodes:
            node.kill()
    for code, err in results:
        assert code == 0, err[-2000:]
    _same_weights(one_process, tmp_path / "two")
