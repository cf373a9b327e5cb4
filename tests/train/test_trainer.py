"""The trainer: each training option changes what it should (accumulation, clipping, mixup,
EMA, drop path, early stopping, nan policy), uint8 batches, runs without validation data, and
CUDA mixed precision (runs where a GPU exists; skips cleanly everywhere else)."""

import json
import math

import pytest
import torch

import finetune
from finetune.config import DataConfig
from finetune.data.augment import build_transform
from finetune.data.images import load_image
from finetune.models.backbones import load_backbone
from finetune.train.policy import PolicyReport
from finetune.train.runtime import Task
from finetune.train.trainer import Trainer
from tests.conftest import COLOURS, make_image

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


def test_gradient_accumulation_takes_fewer_optimizer_steps(
    image_folder, tmp_path, run_resnet, metrics_lines
):
    plain = run_resnet(image_folder, output=str(tmp_path / "a"))
    accum = run_resnet(image_folder, output=str(tmp_path / "b"), accum_steps=2)
    assert metrics_lines(accum)[-1]["step"] == math.ceil(metrics_lines(plain)[-1]["step"] / 2)


def test_grad_clipping_bounds_the_update(image_folder, tmp_path, run_resnet):
    clipped = run_resnet(
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


def test_mixup_ema_drop_path_and_early_stopping(image_folder, tmp_path, run_resnet, metrics_lines):
    result = run_resnet(
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
    lines = metrics_lines(result)
    assert "val_accuracy_ema" in lines[0]
    assert (result.run_dir / "model_ema.safetensors").is_file()
    assert "ema_val" in result.metrics
    stopped = result.metrics["stopped_early"]
    assert stopped == 0 or len(lines) == stopped < 4
    from timm.layers import DropPath

    assert any(isinstance(m, DropPath) and m.drop_prob > 0 for m in result.model.modules())


def test_nan_skip_batch_keeps_training(
    image_folder, tmp_path, monkeypatch, run_resnet, metrics_lines
):
    from finetune.train.trainer import Trainer

    real = Trainer.loss
    calls = {"n": 0}

    def sometimes_nan(self, logits, targets):
        calls["n"] += 1
        loss = real(self, logits, targets)
        return loss * float("nan") if calls["n"] == 2 else loss

    monkeypatch.setattr(Trainer, "loss", sometimes_nan)
    result = run_resnet(image_folder, output=str(tmp_path / "r"), nan_policy="skip-batch")
    assert metrics_lines(result)[0]["skipped_batches"] == 1
    assert all(torch.isfinite(p).all() for p in result.model.parameters())


def test_early_stopping_ends_the_run_when_validation_stalls(
    image_folder, tmp_path, run_resnet, metrics_lines
):
    # an LR of ~0 cannot improve validation after the first epoch: patience 1 stops at epoch 2
    result = run_resnet(image_folder, output=str(tmp_path / "r"), lr=1e-12, epochs=5, patience=1)
    assert result.metrics["stopped_early"] == 2 and len(metrics_lines(result)) == 2
    assert (
        "Ended early: early stopping after epoch 2." in (result.run_dir / "README.md").read_text()
    )


class HaltAfter:
    """A logger that asks the run to end after epoch ``epoch`` (as tune's reporter does)."""

    def __init__(self, epoch):
        self.epoch, self.halt = epoch, None

    def log_epochs(self, records):
        if records[-1]["epoch"] >= self.epoch:
            self.halt = "the test says so"

    def close(self):
        pass


def test_a_logger_that_halts_ends_the_run_as_if_on_time(
    image_folder, tmp_path, run_resnet, metrics_lines
):
    """Raising from log_epochs abandons a run; ``halt`` ends it after the epoch with its best
    checkpoint evaluated and the run's files written (tune's budget stop needs a finished run)."""
    result = run_resnet(image_folder, output=str(tmp_path / "r"), epochs=4, save_every=3,
                        callbacks=[HaltAfter(2)])  # fmt: skip
    assert len(metrics_lines(result)) == 2 and result.metrics["epochs"][-1]["epoch"] == 2
    assert not result.metrics.get("stopped_early")  # early stopping's, which a resume keeps
    assert (result.run_dir / "model.safetensors").exists()
    assert result.metrics["halted"] == "stopped after epoch 2 of 4: the test says so"
    card = (result.run_dir / "README.md").read_text()  # the model card, written after training
    assert "Ended early: stopped after epoch 2 of 4: the test says so." in card
    # its state is saved at the halt (not at --save-every's epoch 3), not marked stopped
    resumed = finetune.adapt(resume=result.run_dir, verbose=False)
    assert [r["epoch"] for r in resumed.metrics["epochs"]] == [1, 2, 3, 4]


def test_mixup_trains_on_soft_targets_until_switched_off(
    image_folder, tmp_path, monkeypatch, run_resnet
):
    from finetune.train.trainer import Trainer

    seen = []
    real = Trainer.loss

    def record(self, logits, targets):
        seen.append(targets.ndim)
        return real(self, logits, targets)

    monkeypatch.setattr(Trainer, "loss", record)
    run_resnet(image_folder, output=str(tmp_path / "r"), mixup=0.4, epochs=2, mixup_off_epochs=1)
    half = len(seen) // 2
    assert set(seen[:half]) == {2} and set(seen[half:]) == {1}  # mixed, then plain labels


def test_without_validation_data_the_last_epoch_is_kept(image_folder, fast_overrides):
    result = finetune.adapt(
        "test_resnet", image_folder, verbose=False, val_split=0.0, **{**fast_overrides, "epochs": 2}
    )
    assert result.metrics["best_epoch"] == 2 and "val" not in result.metrics
    lines = (result.run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["val_accuracy"] for x in lines] == [None, None]


def test_non_finite_loss_stops_with_the_step(image_folder, fast_overrides):
    import finetune

    with pytest.raises(
        FloatingPointError, match=r"non-finite training loss \(detected at step \d+\)"
    ):
        finetune.adapt(
            "test_resnet",
            image_folder,
            verbose=False,
            lr=1e30,
            optimizer="sgd",
            **{**fast_overrides, "epochs": 2},
        )


def test_uint8_training_batches_are_normalised_like_the_float_transform(tmp_path):
    _, info = load_backbone("test_resnet", pretrained=False)
    uint8 = build_transform(
        info,
        DataConfig(img_size=32, hflip=0, color_jitter=0, min_crop_scale=1.0),
        training=True,
        uint8=True,
    )
    image = load_image(make_image(tmp_path / "u8.png", COLOURS["dog"], size=(32, 32)))
    torch.manual_seed(0)
    x = uint8(image)
    assert x.dtype == torch.uint8
    trainer = Trainer(
        torch.nn.Identity(),
        policy=PolicyReport("", "frozen", (), ()),
        task=Task(mean=info.mean, std=info.std),
    )
    normalised, _ = trainer.to_device(x[None], torch.zeros(1))
    expected = (x.float() / 255 - torch.tensor(info.mean).view(3, 1, 1)) / torch.tensor(
        info.std
    ).view(3, 1, 1)
    assert torch.allclose(normalised[0], expected, atol=1e-5)


@cuda
@pytest.mark.parametrize("precision", ["bf16", "fp16", "auto"])
def test_cuda_precisions_train_and_save(image_folder, fast_overrides, precision):
    result = finetune.adapt(
        "test_resnet",
        image_folder,
        verbose=False,
        device="cuda",
        precision=precision,
        **fast_overrides,
    )
    assert next(result.model.parameters()).is_cuda
    assert all(torch.isfinite(p).all() for p in result.model.parameters())
    records = finetune.predict(result.run_dir, [image_folder / "cat"], device="cuda")
    assert len(records) == 6


def test_a_diverged_validation_never_replaces_the_best_checkpoint(
    image_folder, tmp_path, run_resnet, monkeypatch
):
    # regression: with --lr 1e6 validation went NaN, argmax over NaN logits still gave an
    # accuracy, the NaN model was saved as the best one and the run exited 0
    from safetensors import safe_open

    real = Trainer.evaluate
    calls = {"n": 0}

    def nan_from_epoch_two(self, loader, model=None):
        calls["n"] += 1
        loss, logits, targets = real(self, loader, model)
        return (
            (math.nan, logits * math.nan, targets) if calls["n"] >= 2 else (loss, logits, targets)
        )

    monkeypatch.setattr(Trainer, "evaluate", nan_from_epoch_two)
    out = tmp_path / "r"
    with pytest.raises(
        FloatingPointError,
        match=r"non-finite validation loss .* best checkpoint "
        r"\(epoch 1\) .* is kept",
    ):
        run_resnet(image_folder, output=str(out), epochs=3)
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        assert f.metadata()["epoch"] == "1"
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1]


def test_a_run_that_diverges_before_any_checkpoint_says_so(image_folder, fast_overrides):
    with pytest.raises(FloatingPointError, match="no checkpoint was written"):
        finetune.adapt(
            "test_resnet",
            image_folder,
            verbose=False,
            lr=1e6,
            optimizer="sgd",
            **{**fast_overrides, "epochs": 2},
        )


def test_ema_of_a_short_run_follows_the_weights(image_folder, tmp_path, run_resnet):
    """Regression: a constant EMA decay of 0.999 over a fine-tune's few hundred steps kept most of
    the starting weights (elpv, 290 steps: EMA val accuracy 0.72, the majority class, against
    0.84). The decay now warms up (timm's use_warmup), so the EMA ends near the last weights."""
    from safetensors.torch import load_file

    result = run_resnet(image_folder, output=str(tmp_path / "r"), ema=True, epochs=3)
    torch.manual_seed(0)
    init, _ = load_backbone("test_resnet", pretrained=False)  # the run's seed-0 start
    ema = load_file(result.run_dir / "model_ema.safetensors")
    final, start = result.model.state_dict(), init.state_dict()
    names = [n for n in start if n.startswith("layer") and n.endswith("conv1.weight")]

    def distance(a, b):
        return sum(float((a[n] - b[n]).norm()) for n in names)

    assert distance(final, start) > 0
    assert distance(ema, final) < distance(ema, start)
