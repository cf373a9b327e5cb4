"""LR range test (``finetune lr-find``): raise the LR exponentially over a few hundred steps and
watch the loss, with the same model, freezing policy, param groups and data as a real run.

The suggestion is the LR at the steepest fall of the smoothed loss (fastai/Smith), reported
next to the minimum-loss LR / 10; the plot (loss against LR on a log axis) is written as a PNG.
Nothing is saved to a run directory: the weights it trains are thrown away.

Example:
    >>> result = lr_find("resnet50", "my_images", freeze_until="layer3")  # doctest: +SKIP
    >>> result.suggestion  # doctest: +SKIP
    0.00063
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

from torch import nn

from .._io import atomic_path
from ..config import FinetuneConfig
from ..data.datasets import build_datasets, build_loader, scan_data
from ..events import emit
from ..render import reporting
from ..train.build import build_model, task_of
from ..train.optim import RangeSchedule, build_optimizer, build_param_groups
from ..train.policy import set_train_mode
from ..train.runtime import resolve_runtime, seed_everything
from ..train.trainer import Trainer

__all__ = ["lr_find", "LRFindResult"]


@dataclass
class LRFindResult:
    """The sweep, the suggested LR and the plot's path."""

    lrs: list[float]
    losses: list[float]  # smoothed (EMA 0.98, bias-corrected)
    suggestion: float  # steepest descent
    min_loss_lr: float  # LR of the lowest smoothed loss
    plot: Optional[Path]


def lr_find(
    model: Any,
    dataset: Any,
    *,
    start_lr: float = 1e-7,
    end_lr: float = 1.0,
    steps: int = 100,
    output: Optional[str | Path] = "lr-find.png",
    recipe: Optional[str] = None,
    verbose: bool = True,
    **overrides: Any,
) -> LRFindResult:
    """Run the range test; ``recipe`` and ``overrides`` resolve the config as for ``adapt``.

    Every step is the Trainer's own (``forward_backward`` then ``optimizer_step``: the same
    autocast, GradScaler and clipping as a run); only the schedule differs.
    """
    with reporting(verbose):
        if isinstance(model, str):
            overrides = {"name": model, **overrides}
        cfg = FinetuneConfig.resolve(recipe=recipe, **overrides)
        seed_everything(cfg.train.seed)
        data = scan_data(dataset, cfg)
        built = build_model(
            model if isinstance(model, nn.Module) else cfg.backbone.name, cfg, data.num_classes
        )
        train_set, _, _ = build_datasets(dataset, data, cfg, built.info)
        loader = build_loader(
            train_set,
            batch_size=cfg.data.batch_size,
            training=True,
            num_workers=cfg.data.num_workers,
            seed=cfg.train.seed,
        )
        optimizer = build_optimizer(
            build_param_groups(built.net, cfg.optim, built.policy.stages), cfg.optim
        )
        schedule = RangeSchedule(
            optimizer, start_lr=start_lr, gamma=(end_lr / start_lr) ** (1 / max(1, steps - 1))
        )
        # one batch per step, no EMA, no mixup: the sweep measures the loss of plain steps
        trainer = Trainer(
            built.net,
            policy=built.policy,
            optimizer=optimizer,
            scheduler=schedule,
            optim=cfg.optim,
            train=replace(cfg.train, ema=False, mixup=0.0, cutmix=0.0),
            runtime=resolve_runtime(cfg.train, built.base),
            task=task_of(data, cfg, built.info),
        )
        lrs, losses = _sweep(trainer, loader, schedule, steps)
        if len(lrs) < 3:
            raise ValueError("lr-find: the loss diverged at once; lower --start-lr")
        slopes = [
            (losses[i + 1] - losses[i - 1]) / (math.log(lrs[i + 1]) - math.log(lrs[i - 1]))
            for i in range(1, len(lrs) - 1)
        ]
        suggestion = lrs[1 + min(range(len(slopes)), key=slopes.__getitem__)]
        skip = len(losses) // 10  # the first smoothed points are single noisy batches
        min_loss_lr = lrs[min(range(skip, len(losses)), key=losses.__getitem__)]
        plot = _plot(lrs, losses, suggestion, Path(output)) if output else None
        emit(
            "info",
            f"lr-find: steepest descent at lr {suggestion:.2g}; minimum loss at "
            f"{min_loss_lr:.2g} (a common pick: {min_loss_lr / 10:.2g})"
            + (f"; plot {plot}" if plot else ""),
        )
        return LRFindResult(lrs, losses, suggestion, min_loss_lr, plot)


def _sweep(
    trainer: Trainer, loader, schedule: RangeSchedule, steps: int
) -> tuple[list[float], list[float]]:
    """(LR, smoothed loss) per step until ``steps`` or divergence (EMA 0.98, bias-corrected)."""
    set_train_mode(trainer.inner, trainer.policy)
    trainer.optimizer.zero_grad(set_to_none=True)
    lrs, losses, avg, best = [], [], 0.0, math.inf
    batches = iter(loader)
    for step in range(steps):
        try:
            images, targets = next(batches)
        except StopIteration:
            batches = iter(loader)
            images, targets = next(batches)
        out = trainer.forward_backward(*trainer.to_device(images, targets))
        if out is None:  # skip-batch policy saw a non-finite loss: the sweep has diverged
            break
        trainer.optimizer_step()
        value = float(out[0].detach())
        if not math.isfinite(value):
            break
        avg = 0.98 * avg + 0.02 * value
        smoothed = avg / (1 - 0.98 ** (step + 1))
        lrs.append(schedule.lr(step))
        losses.append(smoothed)
        best = min(best, smoothed)
        if step > 10 and smoothed > 4 * best:  # diverged: the rest says nothing
            break
    return lrs, losses


def _plot(lrs: list[float], losses: list[float], suggestion: float, path: Path) -> Path:
    """Loss against log LR as a PNG, drawn with PIL (no plotting library needed)."""
    from PIL import Image, ImageDraw

    width, height, pad = 640, 400, 50
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    lo, hi = math.log10(lrs[0]), math.log10(lrs[-1])
    ymin, ymax = min(losses), max(losses)
    ymax = ymax if ymax > ymin else ymin + 1

    def xy(lr, loss):
        x = pad + (math.log10(lr) - lo) / max(hi - lo, 1e-12) * (width - 2 * pad)
        y = height - pad - (loss - ymin) / (ymax - ymin) * (height - 2 * pad)
        return x, y

    draw.rectangle([pad, pad, width - pad, height - pad], outline="black")
    for decade in range(math.ceil(lo), math.floor(hi) + 1):
        x, _ = xy(10**decade, ymin)
        draw.line([x, height - pad, x, height - pad + 5], fill="black")
        draw.text((x - 12, height - pad + 8), f"1e{decade}", fill="black")
    draw.text((pad, 15), f"loss vs learning rate (suggestion {suggestion:.2g})", fill="black")
    draw.text((pad - 45, pad), f"{ymax:.3g}", fill="black")
    draw.text((pad - 45, height - pad - 10), f"{ymin:.3g}", fill="black")
    draw.line([xy(lr, loss) for lr, loss in zip(lrs, losses)], fill="blue", width=2)
    sx, _ = xy(suggestion, ymin)
    draw.line([sx, pad, sx, height - pad], fill="red")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return path
