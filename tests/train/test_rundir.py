"""finetune.train.rundir: the lock, and --overwrite that never loses the old run."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

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


def test_a_users_own_files_are_never_written_over_or_removed(
    image_folder, fast_overrides, monkeypatch
):
    # regression (review): a new run that failed before its first save deleted README.md,
    # plots/ and metrics.csv of a folder that held no run; a finished one replaced README.md
    from finetune.train.trainer import Trainer

    out = Path(fast_overrides["output"])
    (out / "plots").mkdir(parents=True)
    (out / "plots" / "mine.png").write_bytes(b"mine")
    (out / "README.md").write_text("my notes")
    with pytest.raises(FileExistsError, match="has README.md, which a run writes"):
        finetune.adapt("test_resnet", image_folder, verbose=False, **fast_overrides)
    (out / "README.md").unlink()

    def dies(self, *args, **kwargs):
        raise RuntimeError("dies before its first save")

    monkeypatch.setattr(Trainer, "fit", dies)
    with pytest.raises(RuntimeError):
        finetune.adapt("test_resnet", image_folder, verbose=False, **fast_overrides)
    assert (out / "plots" / "mine.png").read_bytes() == b"mine"
    assert not (out / "config.json").exists()  # what the failed run wrote is gone


def test_ctrl_c_in_the_first_epoch_of_an_overwrite_restores_the_old_run(
    image_folder, fast_overrides, monkeypatch
):
    # regression (review): a partial first-epoch state counted as "saved", so the finished
    # run being replaced was deleted and the message claimed best weights that did not exist
    from finetune.train.trainer import Trainer

    old = finetune.adapt("test_resnet", image_folder, verbose=False, **fast_overrides).run_dir
    before = (old / "model.safetensors").read_bytes()

    def partial(self, train_loader, *args, run_dir=None, **kwargs):
        (Path(run_dir) / "trainer_state.pt").write_bytes(b"partial epoch")
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "fit", partial)
    with pytest.raises(finetune.Interrupted, match="the run it was replacing .* is restored"):
        finetune.adapt("test_resnet", image_folder, verbose=False, overwrite=True,
                       **fast_overrides)  # fmt: skip
    assert (old / "model.safetensors").read_bytes() == before
    assert not (old / ".replaced-run").exists()


def test_an_old_run_left_aside_by_a_killed_overwrite_comes_back(tmp_path):
    # regression (review): after kill -9 of an --overwrite run, the next --overwrite deleted
    # .replaced-run/ (the old run) for good
    run = tmp_path / "run"
    (run / ".replaced-run").mkdir(parents=True)
    (run / ".replaced-run" / "model.safetensors").write_bytes(b"old weights")
    (run / ".replaced-run" / "config.json").write_text("{}")
    (run / "config.json").write_text('{"new": true}')  # the killed run's first file
    (run / ".finetune.lock").write_text("")  # killed while taking the lock: empty
    with pytest.warns(UserWarning, match="the run it replaced is restored"):
        with pytest.raises(FileExistsError, match="already holds a run"):
            with claim_run_dir(run):
                pass
    assert (run / "model.safetensors").read_bytes() == b"old weights"
    assert (run / "config.json").read_text() == "{}"
    assert not (run / ".replaced-run").exists() and not (run / ".finetune.lock").exists()


def test_overwrite_moves_the_old_exports_and_evaluations_aside_too(tmp_path):
    # regression (review): export/ and eval-*/ of the old model stayed beside the new one
    run = tmp_path / "run"
    for name in ("model.safetensors", "export/model.onnx", "eval-test/eval.json"):
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text("old")
    with claim_run_dir(run, overwrite=True):
        assert sorted(p.name for p in run.iterdir()) == [".finetune.lock", ".replaced-run"]
        (run / "model.safetensors").write_text("new")
    assert sorted(p.name for p in run.iterdir()) == ["model.safetensors"]


def test_a_new_run_inside_the_image_folder_is_refused_a_resumed_one_is_not(tmp_path,
                                                                          monkeypatch):  # fmt: skip
    # regression (hostile-input passes): a run written into --data made the next scan train on
    # a class named after it; the first check (in the config) also refused a resume whose
    # saved, relative output it resolved against the current folder
    from types import SimpleNamespace

    from finetune.errors import ConfigError
    from finetune.train.rundir import shared_run_dir

    single = SimpleNamespace(is_main=True, enabled=False)
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="is inside --data"):
        with shared_run_dir(None, "data/run", "x", overwrite=False, dist=single, data="data"):
            pass
    with shared_run_dir("data/old", "data/old", "x", overwrite=False, dist=single, data="data"):
        pass  # a resume stays where it is


def test_an_output_under_a_file_is_one_line(tmp_path):
    # regression (hostile-input pass): "[Errno 20] Not a directory" for --output afile/sub
    (tmp_path / "afile").write_text("x")
    with pytest.raises(FileExistsError, match=r"output .*afile/sub: cannot create it \(Not a directory\); choose another --output"):  # fmt: skip
        with claim_run_dir(tmp_path / "afile" / "sub"):
            pass
