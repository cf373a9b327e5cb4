"""finetune.train.rundir: the lock, and --overwrite that never loses the old run."""

import json
import os
import socket
import subprocess
import sys

import pytest

import finetune
from finetune.train.rundir import RunLocked, claim_run_dir


def test_a_second_run_into_a_locked_directory_fails_naming_the_first(tmp_path):
    # regression: two runs with the same --output both exited 0, the files of one replaced by the
    # other's and metrics.jsonl mixing both
    with claim_run_dir(tmp_path / "run"):
        with pytest.raises(RunLocked, match=f"in use by process {os.getpid()} on"):
            with claim_run_dir(tmp_path / "run"):
                pass
    assert not (tmp_path / "run" / ".finetune.lock").exists()  # released at the end


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    run = tmp_path / "run"
    run.mkdir()
    (run / ".finetune.lock").write_text(
        json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(), "started": 0})
    )
    with pytest.warns(UserWarning, match="is gone; taking over"):
        with claim_run_dir(run):
            assert json.loads((run / ".finetune.lock").read_text())["pid"] == os.getpid()


def test_a_lock_of_another_host_is_respected(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".finetune.lock").write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": 0}))
    with pytest.raises(RunLocked, match="on elsewhere"):
        with claim_run_dir(run):
            pass


def test_a_folder_with_only_resume_state_counts_as_a_run(tmp_path):
    # regression: a folder holding only trainer_state.pt / last.safetensors was cleared without
    # --overwrite
    (tmp_path / "trainer_state.pt").write_bytes(b"state")
    with pytest.raises(FileExistsError, match="already holds a run .*trainer_state.pt"):
        with claim_run_dir(tmp_path):
            pass
    assert (tmp_path / "trainer_state.pt").read_bytes() == b"state"


def test_overwrite_keeps_the_old_run_until_the_new_one_has_saved(
    image_folder, fast_overrides, monkeypatch
):
    # regression: --overwrite deleted the old run before the new one had saved anything
    from finetune.train.trainer import Trainer

    first = finetune.adapt("test_resnet", image_folder, verbose=False, **fast_overrides)
    before = {p.name: p.read_bytes() for p in first.run_dir.iterdir() if p.is_file()}

    def broken_fit(self, *args, **kwargs):
        raise RuntimeError("the new run dies before its first checkpoint")

    monkeypatch.setattr(Trainer, "fit", broken_fit)
    with pytest.raises(RuntimeError, match="dies before"):
        finetune.adapt("test_resnet", image_folder, verbose=False, overwrite=True, **fast_overrides)
    after = {p.name: p.read_bytes() for p in first.run_dir.iterdir() if p.is_file()}
    assert after == before  # the old run is back, byte for byte, and no lock is left
    monkeypatch.undo()
    finetune.adapt("test_resnet", image_folder, verbose=False, overwrite=True, **fast_overrides)
    assert not (first.run_dir / ".replaced-run").exists()
