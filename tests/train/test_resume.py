"""Resume: gradual unfreezing through a real run and a resume across an unfreeze boundary,
Ctrl-C and mid-epoch saves, and a run killed with SIGKILL mid-epoch that resumes to the same
weights as an uninterrupted run (bit-identical on CPU: weights, optimizer, scheduler, RNG and data
order are restored from the state written atomically after each finished epoch; the killed epoch
is trained again)."""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

import finetune
from finetune.train.trainer import Trainer
from tests.conftest import make_folder, tiny_run


def _run_unfreezing(image_folder, out, **extra):
    return finetune.adapt(
        "test_resnet",
        image_folder,
        verbose=False,
        pretrained=False,
        epochs=3,
        img_size=32,
        batch_size=4,
        num_workers=0,
        warmup_epochs=0.0,
        freeze_stages=4,
        unfreeze_at=(2, 3),
        output=str(out),
        **extra,
    )


def _interrupt_at_step(monkeypatch, step, run):
    """``run()`` stopped by a real SIGINT during its ``step``-th optimizer step."""
    real = Trainer.optimizer_step
    calls = {"n": 0}

    def stepping(self):
        calls["n"] += 1
        if calls["n"] == step:
            os.kill(os.getpid(), signal.SIGINT)
        real(self)

    monkeypatch.setattr(Trainer, "optimizer_step", stepping)
    with pytest.raises(finetune.Interrupted, match="--resume"):
        run()
    monkeypatch.setattr(Trainer, "optimizer_step", real)


def _same_last_weights(a, b) -> bool:
    x = load_file(str(a.run_dir / "last.safetensors"))
    y = load_file(str(b.run_dir / "last.safetensors"))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_unfreezing_adds_param_groups_at_the_scheduled_epochs(image_folder, tmp_path):
    result = _run_unfreezing(image_folder, tmp_path / "run")
    state = torch.load(result.run_dir / "trainer_state.pt", weights_only=True)
    stages = [g["stage"] for g in state["optimizer"]["param_groups"]]
    # layer4 and the head from the start (weights, then 1-D params without decay), layer3
    # joins at epoch 2, layer2 at epoch 3
    assert stages == ["layer4", "layer4", "head", "head", "layer3", "layer3", "layer2", "layer2"]
    assert result.policy.thaw_epochs == (2, 3)


@pytest.mark.parametrize("crash_epoch", [2, 3])  # before the first / the second thaw
def test_resume_across_an_unfreeze_boundary_matches_an_uninterrupted_run(
    image_folder, tmp_path, monkeypatch, crash_epoch
):
    reference = _run_unfreezing(image_folder, tmp_path / "ref")

    real_thaw = Trainer.thaw

    def crash(self, epoch):
        if epoch == crash_epoch:
            raise KeyboardInterrupt(f"simulated crash before the unfreeze at epoch {epoch}")
        return real_thaw(self, epoch)

    monkeypatch.setattr(Trainer, "thaw", crash)
    with pytest.raises(finetune.Interrupted, match="--resume"):
        _run_unfreezing(image_folder, tmp_path / "crashed")
    monkeypatch.setattr(Trainer, "thaw", real_thaw)

    resumed = finetune.adapt(resume=tmp_path / "crashed", verbose=False)
    assert resumed.metrics["best_epoch"] == reference.metrics["best_epoch"]
    trainable = lambda r: {n for n, p in r.model.named_parameters() if p.requires_grad}  # noqa
    assert trainable(resumed) == trainable(reference)
    last_ref = load_file(str(reference.run_dir / "last.safetensors"))
    last_res = load_file(str(resumed.run_dir / "last.safetensors"))
    for key, value in last_ref.items():
        assert torch.equal(value, last_res[key]), key  # bit-identical on CPU
    lines = (resumed.run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3


def test_ctrl_c_in_the_epoch_a_stage_thawed_resumes_to_the_same_weights(
    image_folder, tmp_path, monkeypatch
):
    """Regression: a mid-epoch state was saved after its epoch's stage thawed, and the resume
    thawed only up to the epochs finished, so the optimizer's groups "did not fit this run"."""
    reference = _run_unfreezing(image_folder, tmp_path / "ref")
    # step 3: epoch 2's first of 2 steps, after layer3 thawed at its start
    _interrupt_at_step(monkeypatch, 3, lambda: _run_unfreezing(image_folder, tmp_path / "r"))
    state = torch.load(tmp_path / "r" / "trainer_state.pt", weights_only=True)
    assert (state["epoch"], state["batches_done"]) == (1, 1)
    resumed = finetune.adapt(resume=tmp_path / "r", verbose=False)
    assert _same_last_weights(resumed, reference)  # bit-identical on CPU


def test_resume_errors(image_folder, tmp_path):
    with pytest.raises(ValueError, match="exactly as it was configured; drop --lr"):
        finetune.adapt(resume=tmp_path, lr=0.1)
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        finetune.adapt(resume=tmp_path, verbose=False)


def test_ctrl_c_mid_epoch_saves_and_resumes_to_the_same_weights(
    image_folder, tmp_path, monkeypatch, run_resnet, metrics_lines
):
    reference = run_resnet(image_folder, output=str(tmp_path / "ref"), deterministic=True)
    # step 3: epoch 2's first of 2 steps, mid-epoch
    run = lambda: run_resnet(image_folder, output=str(tmp_path / "r"), deterministic=True)  # noqa
    _interrupt_at_step(monkeypatch, 3, run)
    state = torch.load(tmp_path / "r" / "trainer_state.pt", weights_only=True)
    assert (state["epoch"], state["batches_done"], state["step"]) == (1, 1, 3)
    resumed = finetune.adapt(resume=tmp_path / "r", verbose=False)
    assert [x["epoch"] for x in metrics_lines(resumed)] == [1, 2]
    assert _same_last_weights(resumed, reference)


def test_save_every_steps_writes_a_mid_epoch_state(image_folder, tmp_path, monkeypatch, run_resnet):
    from finetune.train.trainer import Trainer

    states = []
    real = Trainer.save_state

    def record(self, run_dir, epoch, history, loader, batches_done=0):
        states.append((epoch, batches_done, self.step))
        return real(self, run_dir, epoch, history, loader, batches_done=batches_done)

    monkeypatch.setattr(Trainer, "save_state", record)
    run_resnet(image_folder, output=str(tmp_path / "r"), save_every_steps=1)
    assert (0, 1, 1) in states and (1, 1, 3) in states  # mid-epoch, after steps 1 and 3


# the SIGKILL test: the killed CLI run and its uninterrupted reference
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


@pytest.mark.slow
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


def _finished(folder, tmp_path):
    return tiny_run(folder, output=str(tmp_path / "run")).run_dir


def test_resume_works_from_another_directory(image_folder, tmp_path, monkeypatch):
    # regression: the data path was stored as typed (relative), so --resume from elsewhere failed
    monkeypatch.chdir(image_folder.parent)
    run_dir = _finished("data", tmp_path)
    monkeypatch.chdir(tmp_path.parent)
    assert finetune.adapt(resume=run_dir, verbose=False).classes == ("cat", "dog")


@pytest.mark.parametrize(
    "change, message",
    [  # regression: resume trained on other data and silently replaced the class names
        (
            lambda root: (root / "cat").rename(root / "healthy"),
            "classes changed: cat, dog -> dog, healthy",
        ),
        (
            lambda root: shutil.copy(root / "cat" / "cat0.png", root / "cat" / "new.png"),
            "images per split changed: train",
        ),
        (
            lambda root: (root / "cat" / "cat0.png").rename(root / "cat" / "renamed.png"),
            "the same number of images, but other files",
        ),
        (  # regression (review): the same names with other pixels passed
            lambda root: _swap(root / "cat" / "cat0.png", root / "dog" / "dog0.png"),
            "the same number of images, but other files",
        ),
    ],
)
def test_resume_refuses_changed_data_saying_what_changed(image_folder, tmp_path, change, message):
    run_dir = _finished(image_folder, tmp_path)
    change(image_folder)
    with pytest.raises(finetune.DataError, match=message):
        finetune.adapt(resume=run_dir, verbose=False)


def test_resume_of_data_that_moved_takes_its_new_place(image_folder, tmp_path):
    run_dir = _finished(image_folder, tmp_path)
    moved = image_folder.rename(tmp_path / "moved")
    with pytest.raises(FileNotFoundError):
        finetune.adapt(resume=run_dir, verbose=False)
    assert finetune.adapt(dataset=moved, resume=run_dir, verbose=False).classes == ("cat", "dog")


def test_resume_with_more_epochs_extends_a_finished_run(image_folder, tmp_path):
    run_dir = _finished(image_folder, tmp_path)
    extended = finetune.adapt(resume=run_dir, epochs=3, verbose=False)
    assert [e["epoch"] for e in extended.metrics["epochs"]] == [1, 2, 3]
    assert extended.config.train.epochs == 3
    with pytest.raises(ValueError, match="already trained 3 epochs; --epochs 2 would not extend"):
        finetune.adapt(resume=run_dir, epochs=2, verbose=False)


def test_no_keep_state_leaves_only_what_is_shipped(image_folder, tmp_path):
    result = finetune.adapt("test_resnet", image_folder, verbose=False, pretrained=False,
                            epochs=1, img_size=32, batch_size=4, num_workers=0,
                            output=str(tmp_path / "r"), keep_state=False)  # fmt: skip
    names = {p.name for p in result.run_dir.iterdir()}
    assert "model.safetensors" in names and not {"trainer_state.pt", "last.safetensors"} & names


def _swap(a, b):
    data = a.read_bytes()
    a.write_bytes(b.read_bytes())
    b.write_bytes(data)


def test_an_early_stopped_run_stays_stopped_on_resume(image_folder, tmp_path):
    # regression (review): the state was saved before stopped_early was set, so a plain --resume
    # trained on and replaced model.safetensors
    result = finetune.adapt("test_resnet", image_folder, verbose=False, pretrained=False,
                            epochs=5, patience=1, lr=1e-12, img_size=32, batch_size=4,
                            num_workers=0, warmup_epochs=0.0, output=str(tmp_path / "r"))  # fmt: skip
    assert result.metrics["stopped_early"] == 2
    before = (result.run_dir / "model.safetensors").read_bytes()
    resumed = finetune.adapt(resume=result.run_dir, verbose=False)
    assert [e["epoch"] for e in resumed.metrics["epochs"]] == [1, 2]
    assert (result.run_dir / "model.safetensors").read_bytes() == before


def test_resume_keeps_the_original_runs_flags_on_record(image_folder, tmp_path):
    # regression (review): after --resume --epochs 3, config.json's overrides were {'epochs': 3}
    import json

    run_dir = _finished(image_folder, tmp_path)
    first = json.loads((run_dir / "config.json").read_text())["finetune"]["overrides"]
    finetune.adapt(resume=run_dir, epochs=2, verbose=False)
    after = json.loads((run_dir / "config.json").read_text())["finetune"]
    assert after["overrides"] == first and after["resumed_with"] == {"epochs": 2}
