"""Issue 5 (part): each training option changes what it should."""

import json
import math
import os
import signal

import pytest
import torch

import finetune
from finetune.config import OptimConfig
from finetune.train.optim import LRSchedule, build_optimizer


def _run(folder, **extra):
    base = dict(
        pretrained=False,
        epochs=2,
        img_size=32,
        batch_size=4,
        num_workers=0,
        warmup_epochs=0.0,
        verbose=False,
    )
    return finetune.adapt("test_resnet", folder, **{**base, **extra})


def _lines(result):
    return [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]


def test_exponential_schedule_expresses_the_seeds_decay():
    model = torch.nn.Linear(2, 2)
    cfg = OptimConfig(
        lr=0.01, schedule="exponential", decay_rate=math.exp(-1 / 10), warmup_epochs=0
    )
    opt = build_optimizer(
        [dict(params=list(model.parameters()), weight_decay=0.0, lr_scale=1.0, stage="head")], cfg
    )
    sched = LRSchedule(opt, cfg, steps_per_epoch=5, epochs=30)
    for epoch in (0, 3, 12):
        sched.step_update(epoch * 5)
        assert opt.param_groups[0]["lr"] == pytest.approx(0.01 * math.exp(-epoch / 10))


def test_step_schedule():
    model = torch.nn.Linear(2, 2)
    cfg = OptimConfig(lr=1.0, schedule="step", step_epochs=2, decay_rate=0.5, warmup_epochs=0)
    opt = build_optimizer(
        [dict(params=list(model.parameters()), weight_decay=0.0, lr_scale=1.0, stage="head")], cfg
    )
    sched = LRSchedule(opt, cfg, steps_per_epoch=10, epochs=6)
    lrs = []
    for step in (5, 25, 45):
        sched.step_update(step)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == pytest.approx([1.0, 0.5, 0.25])


def test_gradient_accumulation_takes_fewer_optimizer_steps(image_folder, tmp_path):
    plain = _run(image_folder, output=str(tmp_path / "a"))
    accum = _run(image_folder, output=str(tmp_path / "b"), accum_steps=2)
    assert _lines(accum)[-1]["step"] == math.ceil(_lines(plain)[-1]["step"] / 2)


def test_grad_clipping_bounds_the_update(image_folder, tmp_path):
    clipped = _run(
        image_folder,
        output=str(tmp_path / "a"),
        clip_grad=1e-6,
        optimizer="sgd",
        lr=1.0,
        weight_decay=0.0,
        momentum=0.0,
    )
    torch.manual_seed(0)
    from finetune.models.backbones import load_backbone

    init, _ = load_backbone("test_resnet", pretrained=False)
    delta = max(
        float((p - init.state_dict()[n]).abs().max())
        for n, p in clipped.model.state_dict().items()
        if n.startswith("layer") and n.endswith("conv1.weight")
    )
    assert delta < 1e-5  # lr 1 x a gradient clipped to norm 1e-6, for a few steps


def test_mixup_ema_drop_path_and_early_stopping(image_folder, tmp_path):
    result = _run(
        image_folder,
        output=str(tmp_path / "r"),
        mixup=0.4,
        cutmix=1.0,
        mixup_off_epochs=1,
        ema=True,
        ema_decay=0.5,
        drop_path=0.1,
        epochs=4,
        patience=1,
    )
    lines = _lines(result)
    assert "val_accuracy_ema" in lines[0]
    assert (result.run_dir / "model_ema.safetensors").is_file()
    assert "ema_val" in result.metrics
    stopped = result.metrics["stopped_early"]
    assert stopped == 0 or len(lines) == stopped < 4
    from timm.layers import DropPath

    assert any(isinstance(m, DropPath) and m.drop_prob > 0 for m in result.model.modules())


def test_nan_skip_batch_keeps_training(image_folder, tmp_path, monkeypatch):
    from finetune.train.trainer import Trainer

    real = Trainer.loss
    calls = {"n": 0}

    def sometimes_nan(self, logits, targets):
        calls["n"] += 1
        loss = real(self, logits, targets)
        return loss * float("nan") if calls["n"] == 2 else loss

    monkeypatch.setattr(Trainer, "loss", sometimes_nan)
    result = _run(image_folder, output=str(tmp_path / "r"), nan_policy="skip-batch")
    assert _lines(result)[0]["skipped_batches"] == 1
    assert all(torch.isfinite(p).all() for p in result.model.parameters())


def test_ctrl_c_mid_epoch_saves_and_resumes_to_the_same_weights(
    image_folder, tmp_path, monkeypatch
):
    from safetensors.torch import load_file

    from finetune.train.trainer import Trainer

    reference = _run(image_folder, output=str(tmp_path / "ref"), deterministic=True)
    real = Trainer.optimizer_step
    calls = {"n": 0}

    def ctrl_c_during_step_three(self):
        calls["n"] += 1
        if calls["n"] == 3:  # epoch 2's first of 2 steps: a real SIGINT, mid-epoch
            os.kill(os.getpid(), signal.SIGINT)
        real(self)

    monkeypatch.setattr(Trainer, "optimizer_step", ctrl_c_during_step_three)
    with pytest.raises(finetune.Interrupted, match="--resume"):
        _run(image_folder, output=str(tmp_path / "r"), deterministic=True)
    monkeypatch.setattr(Trainer, "optimizer_step", real)
    state = torch.load(tmp_path / "r" / "trainer_state.pt", weights_only=True)
    assert (state["epoch"], state["batches_done"], state["step"]) == (1, 1, 3)
    resumed = finetune.adapt(resume=tmp_path / "r", verbose=False)
    assert [x["epoch"] for x in _lines(resumed)] == [1, 2]
    a = load_file(str(resumed.run_dir / "last.safetensors"))
    b = load_file(str(reference.run_dir / "last.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_early_stopping_ends_the_run_when_validation_stalls(image_folder, tmp_path):
    # an LR of ~0 cannot improve validation after the first epoch: patience 1 stops at epoch 2
    result = _run(image_folder, output=str(tmp_path / "r"), lr=1e-12, epochs=5, patience=1)
    assert result.metrics["stopped_early"] == 2 and len(_lines(result)) == 2


def test_mixup_trains_on_soft_targets_until_switched_off(image_folder, tmp_path, monkeypatch):
    from finetune.train.trainer import Trainer

    seen = []
    real = Trainer.loss

    def record(self, logits, targets):
        seen.append(targets.ndim)
        return real(self, logits, targets)

    monkeypatch.setattr(Trainer, "loss", record)
    _run(image_folder, output=str(tmp_path / "r"), mixup=0.4, epochs=2, mixup_off_epochs=1)
    half = len(seen) // 2
    assert set(seen[:half]) == {2} and set(seen[half:]) == {1}  # mixed, then plain labels


def test_save_every_steps_writes_a_mid_epoch_state(image_folder, tmp_path, monkeypatch):
    from finetune.train.trainer import Trainer

    states = []
    real = Trainer.save_state

    def record(self, run_dir, epoch, history, loader, batches_done=0):
        states.append((epoch, batches_done, self.step))
        return real(self, run_dir, epoch, history, loader, batches_done=batches_done)

    monkeypatch.setattr(Trainer, "save_state", record)
    _run(image_folder, output=str(tmp_path / "r"), save_every_steps=1)
    assert (0, 1, 1) in states and (1, 1, 3) in states  # mid-epoch, after steps 1 and 3
