"""A run's automatic choices, made once from the scanned data, the built model and the machine:
the run length under ``--budget`` (from a measured step time), then the "auto" config fields
(``finetune.autoconfig``), and whether the head is fitted first (LP-FT, ``headinit``). Each
choice comes with the reason that is printed and recorded in ``config.json``.

Example:
    >>> cfg, plan = plan_run(cfg, built, data, dist)  # doctest: +SKIP
    >>> plan.reasons  # doctest: +SKIP
    ('12 epochs (first estimate): budget 5m at 61 img/s measured', 'augmentation medium ...')
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Optional

from ..autoconfig import resolve_auto
from ..config import FinetuneConfig
from ..data.augment import resolve_img_size
from ..data.folder import DataInfo
from ..events import emit
from ..validation import parse_duration
from .budget import EVAL_COST, BudgetPlanner, estimate_step_seconds
from .distributed import DistInfo
from .headinit import MAX_IMAGES, init_head, wants_probe
from .runtime import PRECISIONS, is_cnn, resolve_runtime

__all__ = ["length_warnings", "AutoPlan", "plan_run", "start_run"]

# data loading and the optimizer step on top of the model's forward/backward (first estimate
# only; the planner re-plans from measured steps)
LOADING_FACTOR = 1.25
# a budgeted CPU run picks the largest image size that leaves this many epochs: pretrained CNNs
# lose much of their features at low resolution, and from a fitted head a few epochs suffice.
# elpv (300 px cells), 90 s-equivalent runs, 3 seeds: 64 px x 8 epochs 0.822 test accuracy,
# 96 px x 4 0.833, 128 px x 2 0.836; 3 keeps room for the re-plans of a short budget
MIN_EPOCHS = 3
MIN_SIZE = 64  # px; below this pretrained CNNs lose most of their features
# under --budget the LP-FT feature pass gets at most this share of the budget: one forward per
# image, about 1/3 of a training step's time per image (forward 1x, backward 2x the FLOPs)
PROBE_SHARE = 0.1
FORWARD_SHARE = 1 / 3
MIN_PROBE_IMAGES = 256  # below this a fitted head is no better than a random one


@dataclass(frozen=True)
class AutoPlan:
    """The automatic choices of a run (see the module docstring)."""

    reasons: tuple[str, ...] = ()
    probe_head: bool = False
    probe_images: int = MAX_IMAGES  # at most this many training images for the LP-FT head
    budget_seconds: Optional[float] = None
    step_seconds: Optional[float] = None  # first estimate, budgeted runs only
    clock_start: float = 0.0  # time.perf_counter() when the budget clock started


def _steps_per_epoch(n: int, cfg: FinetuneConfig, world: int) -> int:
    batches = math.ceil(math.ceil(n / world) / cfg.data.batch_size)
    return max(1, math.ceil(batches / cfg.optim.accum_steps))


def plan_run(
    cfg: FinetuneConfig, built, data: DataInfo, dist: DistInfo, *, resume: bool = False
) -> tuple[FinetuneConfig, AutoPlan]:
    """``cfg`` with its "auto" fields resolved, and the plan with the reasons (emitted)."""
    clock_start = time.perf_counter()
    cfg = replace(cfg, policy=built.policy_config)  # "auto" freezing, chosen by build_model
    epochs, reasons, budget, step_seconds = cfg.train.epochs, list(built.reasons), None, None
    if cfg.train.budget is not None:
        budget = parse_duration(cfg.train.budget)
        cfg, step_seconds, epochs, why = _budget_estimate(cfg, built, data, dist, budget, resume)
        reasons += why
    if not resume:
        cfg, auto = resolve_auto(
            cfg, epochs=epochs, n_train=len(data.train), cnn=is_cnn(built.base)
        )
        reasons += auto
    probe, probe_images = False, MAX_IMAGES
    if not resume:
        probe, why = wants_probe(cfg, built)
        if probe and budget is not None:
            probe_images, capped = probe_budget(cfg, budget, step_seconds, len(data.train))
            why += capped
        reasons.append(why)
    for reason in reasons:
        emit("info", f"auto: {reason}")
    for warning in length_warnings(cfg, epochs, built.policy.thaw_epochs):
        emit("warning", warning)
    return cfg, AutoPlan(tuple(reasons), probe, probe_images, budget, step_seconds, clock_start)


def length_warnings(cfg: FinetuneConfig, epochs: int, thaw_epochs=()) -> list[str]:
    """Settings that the run's length (``epochs``: configured, or the budget's first estimate)
    turns into no-ops, each as a one-line warning.

    Example:
        >>> length_warnings(FinetuneConfig().with_overrides(schedule="step"), 10)[0][:31]
        '--schedule step: the LR decays '
    """
    o, t, out = cfg.optim, cfg.train, []
    if o.schedule == "step" and o.step_epochs >= epochs:
        out.append(f"--schedule step: the LR decays every {o.step_epochs:g} epochs and the run "
                   f"has {epochs}, so it never decays; lower --step-epochs")  # fmt: skip
    if (t.mixup or t.cutmix) and t.mixup_off_epochs >= epochs:
        out.append(f"--mixup-off-epochs {t.mixup_off_epochs} covers the whole {epochs}-epoch "
                   "run, so no batch is mixed; lower it")  # fmt: skip
    late = [e for e in thaw_epochs if cfg.train.budget is not None and e > epochs]
    if late:  # a budgeted run's thaw plan is fixed before its length is known (build_model)
        out.append(f"gradual unfreezing: the budget plans about {epochs} epochs, so the stages "
                   f"due at epoch {', '.join(map(str, late))} may stay frozen")  # fmt: skip
    return out


def probe_budget(
    cfg: FinetuneConfig, budget: float, step_seconds: float, n_train: int
) -> tuple[int, str]:
    """(images, reason suffix) for the LP-FT feature pass of a budgeted run: at most
    ``PROBE_SHARE`` of the budget at the measured speed, so a large set under a short budget
    keeps its time for fine-tuning.

    Example:
        >>> probe_budget(FinetuneConfig(), 10.0, 1.0, 5000)[0]  # 1 s per step of 32 images
        256
    """
    per_image = step_seconds * FORWARD_SHARE / (cfg.data.batch_size * cfg.optim.accum_steps)
    images = min(MAX_IMAGES, max(MIN_PROBE_IMAGES, int(PROBE_SHARE * budget / per_image)))
    if images >= min(n_train, MAX_IMAGES):
        return images, ""
    return images, (
        f" on {images:,} of {n_train:,} training images ({PROBE_SHARE:.0%} of budget "
        f"{cfg.train.budget} at the measured speed)"
    )


def _budget_estimate(cfg, built, data, dist, budget: float, resume: bool):
    """(cfg, seconds per step, epochs, reasons) of a budgeted run from a measured step: on a CPU,
    and for a CNN whose image size is "auto", the largest size that fits ``MIN_EPOCHS`` epochs
    (a CNN's cost grows with the pixels; a ViT keeps the size it was built for)."""
    runtime = resolve_runtime(cfg.train, built.base, dist)
    spe = _steps_per_epoch(len(data.train), cfg, dist.world)
    val_batches = math.ceil(len(data.val) / cfg.data.batch_size)

    measured: dict[int, float] = {}  # px -> seconds per step

    def measure(size: int) -> float:
        measured[size] = estimate_step_seconds(
            built.net,
            batch_size=cfg.data.batch_size,
            input_size=(cfg.data.in_chans or 3, size, size),
            device=runtime.device,
            memory_format=runtime.memory_format,
            dtype=PRECISIONS[runtime.precision],
        ) * LOADING_FACTOR * cfg.optim.accum_steps  # fmt: skip
        return measured[size]

    def epochs_at(seconds: float) -> int:
        return int(budget // (spe * seconds + val_batches * seconds * EVAL_COST))

    reasons = []
    size = resolve_img_size(built.info, cfg.data.img_size)
    auto_size = cfg.data.img_size is None and not resume and runtime.device.type == "cpu"
    if auto_size and is_cnn(built.base):
        choice, step_seconds = _fit_size(
            _size_cap(size, data), measure, lambda seconds: epochs_at(seconds) >= MIN_EPOCHS
        )
        if choice != size:
            cfg = cfg.with_overrides(img_size=choice)
            if size in measured:
                at_size = f"{epochs_at(measured[size])}"
            else:  # not measured: scaled by area, which underestimates large sizes on a CPU
                at_size = f"{epochs_at(step_seconds * (size / choice) ** 2)} (by area)"
            reasons.append(
                f"{choice} px (CPU, budget {cfg.train.budget}: ~{epochs_at(step_seconds)} "
                f"epochs at {choice} px, ~{at_size} at the pretrained {size} px; --img-size "
                "sets it)"
            )
    else:
        step_seconds = measure(size)
    epochs = max(1, epochs_at(step_seconds))
    rate = cfg.data.batch_size * cfg.optim.accum_steps / step_seconds * dist.world
    reasons.insert(0, f"about {epochs} epochs (first estimate, re-planned as it runs): budget "
                      f"{cfg.train.budget} at ~{rate:.0f} img/s measured")  # fmt: skip
    return cfg, step_seconds, epochs, reasons


def _fit_size(cap: int, measure, fits) -> tuple[int, float]:
    """(size, seconds per step): the largest size from ``cap`` down in 32 px steps (at least
    ``MIN_SIZE``) whose measured step ``fits``. The smallest size is measured first (its steps
    are cheap); its cost scaled by area picks the size to measure next; then the size steps down
    while it does not fit and up while the next larger one does. Regressions: the area model is
    only a guide (on 2 cores tf_efficientnet_lite0 measured 0.22 s per step at 96 px where
    scaling 1.84 s at 224 px by area predicts 0.34); and the pretrained size was always
    measured first, about 6 s of a 45 s budget on digits, where 64 px was the only candidate."""
    sizes = list(range(cap, MIN_SIZE - 1, -32)) or [cap]  # largest first
    seen: dict[int, float] = {}

    def cost(i: int) -> float:
        if i not in seen:
            seen[i] = measure(sizes[i])
        return seen[i]

    low = len(sizes) - 1
    if not fits(cost(low)):
        return sizes[low], cost(low)
    by_area = (i for i, s in enumerate(sizes) if fits(cost(low) * (s / sizes[low]) ** 2))
    i = next(by_area, low)
    while not fits(cost(i)):  # the guess was too large: step down (the smallest fits)
        i += 1
    while i > 0 and fits(cost(i - 1)):  # step up while the next larger size fits
        i -= 1
    return sizes[i], cost(i)


def _size_cap(pretrained: int, data: DataInfo) -> int:
    """The largest useful input size: the pretrained one, or twice the images' median short
    side (rounded up to 32 px, at least ``MIN_SIZE``) when they are smaller: upsampling further
    adds pixels to compute, not detail."""
    sides = sorted(
        min(c.width, c.height)
        for c in (data.checks.get(p) for p, _ in data.train[:2000])
        if c is not None and c.width and c.height
    )
    if not sides:
        return pretrained
    native = sides[len(sides) // 2]
    return min(pretrained, max(MIN_SIZE, -(-2 * native // 32) * 32))


def start_run(plan: AutoPlan, built, cfg: FinetuneConfig, data: DataInfo, loaders: dict,
              runtime, task) -> float:  # fmt: skip
    """Fit the head first when the plan says so (before DistributedDataParallel wraps the model:
    its first broadcast gives every process rank 0's head). Returns the seconds spent since the
    budget clock started."""
    if plan.probe_head:
        fit = init_head(
            built,
            loaders["train"],
            runtime=runtime,
            task=task,
            cfg=cfg,
            max_images=plan.probe_images,
        )
        held = (
            ""
            if fit.holdout_accuracy is None
            else f", held-out accuracy {fit.holdout_accuracy:.3f}"
        )
        emit(
            "info",
            f"head fitted on frozen features of {fit.images:,} training images in "
            f"{fit.seconds:.1f} s (LP-FT; L2 {fit.l2:g}{held})",
        )
    return time.perf_counter() - plan.clock_start


def budget_planner(plan: AutoPlan, cfg: FinetuneConfig, loaders: dict, *, ema: bool):
    """The Trainer's ``BudgetPlanner`` of a budgeted run, else None."""
    if plan.budget_seconds is None:
        return None
    spe = math.ceil(len(loaders["train"]) / cfg.optim.accum_steps)
    eval_batches = len(loaders["val"]) if "val" in loaders else 0
    final = eval_batches + (len(loaders["test"]) if "test" in loaders else 0)
    return BudgetPlanner(
        plan.budget_seconds,
        steps_per_epoch=spe,
        eval_batches=eval_batches * (2 if ema else 1),
        final_batches=final * (2 if ema else 1),
        step_seconds=plan.step_seconds or 1.0,
    )
