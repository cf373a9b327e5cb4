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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional


__all__ = ["lr_find", "LRFindResult"]


@dataclass
class LRFindResult:
    lrs: list[float]
    losses: list[float]       # smoothed (EMA 0.98, bias-corrected)
    suggestion: float         # steepest descent
    min_loss_lr: float        # LR of the lowest smoothed loss
    plot: Optional[Path]


def lr_find(model: Any, dataset: Any, *, start_lr: float = 1e-7, end_lr: float = 1.0,
            steps: int = 100, output: Optional[str | Path] = "lr-find.png",
            verbose: bool = True, **overrides: Any) -> LRFindResult:
    """Run the range test; ``overrides`` are config fields as for ``adapt``."""
    from .api import _build_model, _console, _is_cnn, _seed_everything
    from .config import FinetuneConfig
    from .data import build_datasets, build_loader, scan_data
    from .optim import build_optimizer, build_param_groups
    from .trainer import Trainer, resolve_device, resolve_precision

    cfg = FinetuneConfig().with_overrides(**overrides)
    if isinstance(model, str):
        cfg = cfg.with_overrides(name=model)
    console = _console(verbose)
    _seed_everything(cfg.train.seed)
    data = scan_data(dataset, cfg, console)
    net, base, info, policy = _build_model(model if not isinstance(model, str)
                                           else cfg.backbone.name, cfg, data.num_classes, console)
    train_set, _, _ = build_datasets(dataset, data, cfg, info)
    loader = build_loader(train_set, batch_size=cfg.data.batch_size, training=True,
                          num_workers=cfg.data.num_workers, seed=cfg.train.seed)
    device = resolve_device(cfg.train.device)
    optimizer = build_optimizer(build_param_groups(net, cfg.optim, policy.stages), cfg.optim)
    trainer = Trainer(net, optimizer=optimizer, scheduler=None, policy=policy, device=device,
                      precision=resolve_precision(cfg.train.precision, device),
                      channels_last=cfg.train.channels_last and _is_cnn(base),
                      label_smoothing=cfg.optim.label_smoothing, multilabel=data.multilabel,
                      mean=info.mean, std=info.std, optim_cfg=cfg.optim)
    gamma = (end_lr / start_lr) ** (1 / max(1, steps - 1))
    lrs, losses, avg, best = [], [], 0.0, math.inf
    from .policy import set_train_mode

    set_train_mode(net, policy)
    batches = iter(loader)
    for step in range(steps):
        lr = start_lr * gamma ** step
        for g in optimizer.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)
        try:
            images, targets = next(batches)
        except StopIteration:
            batches = iter(loader)
            images, targets = next(batches)
        images, targets = trainer._to_device(images, targets)
        with trainer._autocast():
            loss = trainer._loss(net(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            break
        avg = 0.98 * avg + 0.02 * value
        smoothed = avg / (1 - 0.98 ** (step + 1))
        lrs.append(lr)
        losses.append(smoothed)
        best = min(best, smoothed)
        if step > 10 and smoothed > 4 * best:  # diverged: the rest says nothing
            break
    if len(lrs) < 3:
        raise ValueError("lr-find: the loss diverged at once; lower --start-lr")
    slopes = [(losses[i + 1] - losses[i - 1]) / (math.log(lrs[i + 1]) - math.log(lrs[i - 1]))
              for i in range(1, len(lrs) - 1)]
    suggestion = lrs[1 + min(range(len(slopes)), key=slopes.__getitem__)]
    skip = len(losses) // 10  # the first smoothed points are single noisy batches
    min_loss_lr = lrs[min(range(skip, len(losses)), key=losses.__getitem__)]
    plot = _plot(lrs, losses, suggestion, Path(output)) if output else None
    console.print(f"lr-find: steepest descent at lr {suggestion:.2g}; minimum loss at "
                  f"{min_loss_lr:.2g} (a common pick: {min_loss_lr / 10:.2g})"
                  + (f"; plot {plot}" if plot else ""))
    return LRFindResult(lrs, losses, suggestion, min_loss_lr, plot)


def _plot(lrs: list[float], losses: list[float], suggestion: float, path: Path) -> Path:
    """Loss against log LR as a PNG, drawn with PIL (no plotting library needed)."""
    from PIL import Image, ImageDraw

    from .checkpoint import atomic_path

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
        x, _ = xy(10 ** decade, ymin)
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
