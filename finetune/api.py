"""The Python API: ``adapt`` fine-tunes, ``inspect`` shows a plan; ``predict`` is in
``finetune.inference``. Orchestration only: each step is a call into the module that owns it.

Example:
    >>> import finetune
    >>> result = finetune.adapt("tf_efficientnet_lite0", "my_images", epochs=3, img_size=128)  # doctest: +SKIP
    >>> result.metrics["val"]["accuracy"], result.run_dir  # doctest: +SKIP
    >>> finetune.predict(result.run_dir, ["my_images/cat/1.jpg"], top_k=2)  # doctest: +SKIP
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import nn

from ._io import (
    EMA_WEIGHTS_NAME,
    LAST_WEIGHTS_NAME,
    STATE_NAME,
    TARGETS_NAME,
    USER_TENSORS,
    read_run_config,
)
from .autoconfig import resolve_auto
from .config import FinetuneConfig
from .data.augment import resolve_img_size
from .data.datasets import build_loaders, scan_data
from .data.fingerprint import describe_change, fingerprint
from .data.folder import DataInfo
from .data.hf import absolute_hf, is_hf, load_hf
from .data.loaders import load_skips
from .errors import DataError
from .events import emit
from .models.info import BackboneInfo
from .render import reporting
from .report import write_run_report
from .teacher import attach_teacher, check_teacher, saved_targets
from .train.autoplan import AutoPlan, budget_planner, plan_run, start_run
from .train.build import BuiltModel, build_model, build_trainer, task_of
from .train.checkpoint import save_run_config, save_weights
from .train.distributed import barrier, setup_distributed
from .train.evaluate import best_saver, evaluate_splits, restore_best
from .train.loggers import build_loggers, finish_loggers
from .train.plan import build_plan
from .train.policy import PolicyReport
from .train.resume import FitHistory
from .train.rundir import interrupted_message, shared_run_dir, write_skipped
from .train.runtime import Runtime, is_cnn, resolve_runtime, seed_everything
from .train.trainer import Trainer

__all__ = ["adapt", "inspect", "FitResult", "Interrupted"]


class Interrupted(Exception):
    """Training stopped by Ctrl-C; the message says how to resume."""


@dataclass
class FitResult:
    """What ``adapt`` returns: the fine-tuned model (best epoch's weights) and its report."""

    model: nn.Module
    classes: tuple[str, ...]
    metrics: dict[str, Any]  # {"val": report, "test": report?, "best_epoch", "epochs", ...}
    run_dir: Optional[Path]  # None after a dry run
    config: FinetuneConfig
    backbone: BackboneInfo
    policy: PolicyReport


def adapt(
    model: str | nn.Module | None = None,
    dataset: str | os.PathLike | torch.utils.data.Dataset | None = None,
    config: Optional[FinetuneConfig] = None,
    *,
    verbose: bool = True,
    recipe: Optional[str] = None,
    dry_run: bool = False,
    resume: Optional[str | os.PathLike] = None,
    callbacks: Sequence[Any] = (),
    **overrides: Any,
) -> FitResult:
    """Fine-tune a pretrained backbone on a labelled image folder, CSV manifest or ``Dataset``.

    Args:
        model: backbone name (timm name, ``hf-hub:ID``, ``tv:NAME``) or an ``nn.Module`` (timm
            or torchvision classification model; its classifier is replaced). Default: the
            config's ``backbone.name``.
        dataset: image folder (``DIR/<class>/*`` or ``DIR/train|val|test/<class>/*``), CSV
            manifest, or a torch ``Dataset`` of ``(PIL image or tensor, int label)``; a
            ``classes`` attribute, if present, names the labels. Default: the config's
            ``data.path``.
        config: base config (default: the recipe, else ``FinetuneConfig()``); ``overrides``
            replace its fields by name (``lr=3e-4``, ``freeze_until="layer3"``, ``epochs=5``).
        verbose: render the plan, progress and final tables; False prints nothing at all
            (warnings included).
        recipe: recipe name or YAML path, recorded in ``config.json``.
        dry_run: build the model and the plan and return without training (``run_dir`` None).
        resume: a run directory to continue from its last saved state, exactly as it was
            configured (no overrides).
        callbacks: extra loggers (``finetune.train.loggers.Logger``: ``log_epochs(records)``
            after every epoch, ``close()``), e.g. a tuner that prunes a trial by raising, or
            ends it after this epoch by setting the logger's ``halt`` to a reason.

    Returns:
        FitResult with the best epoch's weights loaded, metrics and the run directory.

    Example:
        >>> r = adapt("test_resnet", "tiny_folder", pretrained=False, epochs=1)  # doctest: +SKIP
    """
    with reporting(verbose):
        cfg, recipe, dataset = _resolve(model, dataset, config, recipe, resume, overrides)
        dist = setup_distributed(cfg.train.device)
        seed_everything(cfg.train.seed, deterministic=cfg.train.deterministic)
        data = scan_data(dataset, cfg)  # bad data (or a wrong teacher) fails before the model load
        if cfg.train.teacher and not saved_targets(resume):  # a resume reads its own
            check_teacher(cfg.train.teacher, classes=data.classes, multilabel=data.multilabel)
        if resume is not None:
            _check_same_data(resume, data)
        model = model if isinstance(model, nn.Module) else cfg.backbone.name
        built = build_model(model, cfg, data.num_classes)
        cfg, auto = plan_run(cfg, built, data, dist, resume=resume is not None)
        emit("plan", plan=build_plan(built.net, built.policy, cfg.optim))
        if dry_run:
            return FitResult(built.net, data.classes, {}, None, cfg, built.info, built.policy)
        out = cfg.output
        dirs = dict(overwrite=out.overwrite, dist=dist, data=cfg.data.path)
        with shared_run_dir(resume, out.output, built.info.name, **dirs) as run_dir:
            final, metrics = _run(
                built, cfg, data, dataset, dist, run_dir, resume, recipe, overrides, callbacks,
                auto,
            )  # fmt: skip
        if auto.budget_seconds is not None:
            before = metrics.get("resumed_after_seconds", 0.0)
            took = time.perf_counter() - auto.clock_start + before
            then = f", {_duration(before)} of them before --resume" if before else ""
            emit("info", f"budget {cfg.train.budget}: the run took {_duration(took)} after "
                 f"the scan{then} ({took / auto.budget_seconds:.0%} of the budget)")  # fmt: skip
        emit("info", f"run directory: {run_dir}")
        return FitResult(
            final.eval(), data.classes, metrics, run_dir, cfg, built.info, built.policy
        )


def _run(
    built: BuiltModel,
    cfg: FinetuneConfig,
    data: DataInfo,
    dataset,
    dist,
    run_dir: Path,
    resume,
    recipe,
    overrides: dict,
    callbacks: Sequence[Any] = (),
    auto: Optional["AutoPlan"] = None,
):
    """Train into the claimed ``run_dir``: config.json first, then fit, restore, evaluate, and
    config.json again with the metrics. Returns (final model, metrics)."""
    runtime = resolve_runtime(cfg.train, built.base, dist)
    pin = runtime.device.type == "cuda"
    loaders = build_loaders(dataset, data, cfg, built.info, pin_memory=pin, **dist.shard)
    if cfg.train.teacher:  # scored within the budget: the clock started at the plan
        attach_teacher(loaders["train"].dataset, cfg, data, runtime.device, dist,
                       run_dir=run_dir, resume=bool(resume))  # fmt: skip
    record = _run_record(cfg, built, data, runtime, recipe, overrides, auto)
    if resume:  # regression (review): the original run's flags were replaced by the resume's
        first = read_run_config(run_dir)["finetune"]
        record["extra"]["overrides"] = first.get("overrides", {})
        record["extra"]["resumed_with"] = {
            k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()
        }
    shape = _user_tensor_shape(dataset, data)
    if shape is not None:  # record what the run used: no preprocessing of ours
        record["data_config"].update(
            input_size=shape, mean=(0.0,) * shape[0], std=(1.0,) * shape[0], crop_pct=1.0
        )
        record["extra"]["preprocessing"] = USER_TENSORS
    if not resume and dist.is_main:
        save_run_config(run_dir, built.base, **record)
        write_skipped(run_dir, data.skipped)
    plan = build_plan(built.net, built.policy, cfg.optim)  # as it starts: for the trackers
    extend = bool(resume) and any(k in overrides for k in ("budget", "train.budget"))
    trainer, history = _fit(
        built, cfg, data, loaders, runtime, run_dir, resume, callbacks, auto, replan=extend
    )
    final, metrics = _finish(built, cfg, data, loaders, runtime, run_dir, trainer, history)
    _record_metrics(record, metrics, data.multilabel)
    if dist.is_main:
        late = load_skips(loaders.values())  # images that failed to decode while training
        if late:
            write_skipped(run_dir, tuple(data.skipped) + tuple(late))
            record["extra"]["data"]["skipped"] += [p for p, _ in late]
        save_run_config(run_dir, final, **record)
        if not cfg.output.keep_state:  # --no-keep-state: the run can no longer be resumed
            for name in (STATE_NAME, LAST_WEIGHTS_NAME, TARGETS_NAME):
                (run_dir / name).unlink(missing_ok=True)
        written = write_run_report(run_dir)  # plots/ and the README.md model card
        emit("info", f"plots and model card: {', '.join(str(p) for p in written)}")
        finish_loggers(trainer.loggers, plan=plan, files=written)  # W&B, MLflow: plan, plots
    return final, metrics


def _resolve(model, dataset, config, recipe, resume, overrides):
    """(config, recipe name, data) of a run: the one config path, the data path recorded so
    that ``--resume`` finds it, and the recipe a resumed run was made with."""
    if isinstance(model, str) and resume is None:
        overrides = {"name": model, **overrides}
    if isinstance(dataset, (str, os.PathLike)):
        overrides = {**overrides, "path": str(dataset)}
    for key in ("path", "data.path", "teacher", "train.teacher"):  # absolute: --resume anywhere
        if overrides.get(key) and is_hf(overrides[key]):
            overrides[key] = absolute_hf(overrides[key])
        elif overrides.get(key):
            overrides[key] = str(Path(overrides[key]).expanduser().resolve())
    cfg = FinetuneConfig.resolve(recipe=recipe, resume=resume, base=config, **overrides)
    if resume is not None:
        recipe = read_run_config(resume).get("finetune", {}).get("recipe")
    dataset = dataset if dataset is not None else cfg.data.path
    if is_hf(dataset):  # a Hugging Face data set: a Dataset with its own splits
        dataset = load_hf(dataset, image_column=cfg.data.image_column,
                          label_column=cfg.data.label_column)  # fmt: skip
    from .data.shards import is_shards, load_shards

    if is_shards(dataset):  # WebDataset shards: an index of the tar members, its own splits
        dataset = load_shards(dataset, scan=cfg.data.scan, val_split=cfg.data.val_split,
                              seed=cfg.train.seed, max_pixels=cfg.data.max_pixels,
                              strict=cfg.data.strict)  # fmt: skip
    if dataset is None:
        raise ValueError(
            "no data: --data is required (or data.path in the recipe; Python: pass a folder, "
            "CSV or Dataset); try 'finetune demo' for an example"
        )
    return cfg, recipe, dataset


def _user_tensor_shape(dataset, data: DataInfo) -> Optional[tuple[int, ...]]:
    """The shape of the tensors a user's Dataset gives (it preprocessed them itself), else None.
    Regression: a run on 64x64 tensors recorded the backbone's 160 px and mean 0.5, which
    predict and timm would then apply to images the model never saw preprocessed that way."""
    if data.layout != "dataset":
        return None
    image = dataset[data.train[0][0]][0]
    return tuple(int(n) for n in image.shape) if isinstance(image, torch.Tensor) else None


def _check_same_data(run_dir, data: DataInfo) -> None:
    """A resumed run must train on the data it started with (a run written before fingerprints
    were recorded has none to compare)."""
    data_record = read_run_config(run_dir)["finetune"].get("data")
    saved = data_record.get("fingerprint") if isinstance(data_record, dict) else None
    if saved is None:
        return
    if not (isinstance(saved, dict) and isinstance(saved.get("classes"), list)
            and isinstance(saved.get("images"), dict)):  # fmt: skip
        raise DataError(f"{run_dir}/config.json: finetune.data.fingerprint is damaged; restore "
                        "config.json, or start a new run")  # fmt: skip
    change = describe_change(saved, fingerprint(data))
    if change:
        raise DataError(
            f"--resume {run_dir}: the data at {data.root} is not what the run trained on "
            f"({change}); restore that data (or pass --data with its new place), or start a new run"
        )


def _record_metrics(record: dict, metrics: dict, multilabel: bool) -> None:
    extra = record["extra"]
    extra["metrics"] = {k: v for k, v in metrics.items() if k not in ("epochs", "thresholds")}
    if multilabel:
        extra["thresholds"] = metrics.get("thresholds")


def inspect(
    model: str | nn.Module | None = None,
    config: Optional[FinetuneConfig] = None,
    *,
    num_classes: int = 2,
    verbose: bool = True,
    **overrides: Any,
):
    """Build a backbone with random weights, apply the policy and show the plan.

    Returns ``(model, PolicyReport)``; nothing is downloaded and nothing trains.

    Example:
        >>> model, report = inspect("resnet50", freeze_until="layer3")  # doctest: +SKIP
    """
    with reporting(verbose):
        if isinstance(model, str):
            overrides = {"name": model, **overrides}
        cfg = FinetuneConfig.resolve(base=config, pretrained=False, **overrides)
        built = build_model(
            model if isinstance(model, nn.Module) else cfg.backbone.name, cfg, num_classes
        )
        cfg, _ = resolve_auto(cfg, cnn=is_cnn(built.base))  # the LR a run would use
        emit("plan", plan=build_plan(built.net, built.policy, cfg.optim))
        return built.net, built.policy


def _run_record(
    cfg: FinetuneConfig,
    built: BuiltModel,
    data: DataInfo,
    runtime: Runtime,
    recipe,
    overrides: dict,
    auto: Optional[AutoPlan] = None,
) -> dict[str, Any]:
    """What ``config.json`` records besides timm's fields: the resolved config, the recipe and
    overrides, the weights' source, the data, the device and precision."""
    info = built.info
    img_size = resolve_img_size(info, cfg.data.img_size)
    data_config = {**info.data_config, "input_size": (info.input_size[0], img_size, img_size)}
    extra = dict(
        config=cfg.to_dict(),
        recipe=recipe,
        overrides={k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()},
        backbone=info.name,
        weights_source=info.weights_source,
        weight_mapping=info.weight_mapping,
        data=dict(
            root=data.root,
            layout=data.layout,
            counts=data.counts(),
            fingerprint=fingerprint(data),
            skipped=[p for p, _ in data.skipped],
        ),
        precision=runtime.precision,
        device=str(runtime.device),
        auto=list(auto.reasons) if auto else [],  # the automatic choices and their reasons
    )
    if data.multilabel:  # predict on an interrupted run still knows it is multi-label
        extra.update(multi_label=True, thresholds=[0.5] * data.num_classes)
    return dict(info=info, classes=data.classes, data_config=data_config, extra=extra)


def _fit(
    built: BuiltModel,
    cfg: FinetuneConfig,
    data: DataInfo,
    loaders: dict,
    runtime: Runtime,
    run_dir: Path,
    resume,
    callbacks: Sequence[Any] = (),
    auto: Optional[AutoPlan] = None,
    *,
    replan: bool = False,
):
    """Fit the head first (LP-FT), build the Trainer, restore a resumed run, train; Ctrl-C
    becomes ``Interrupted``. ``replan``: a resumed budgeted run was given a new ``--budget``."""
    auto = auto or AutoPlan()
    built.base.to(device=runtime.device, memory_format=runtime.memory_format)
    spent = start_run(auto, built, cfg, data, loaders, runtime, task_of(data, cfg, built.info))
    if cfg.train.compile:  # the trained module is compiled; weights stay shared with ``net``
        emit("info", "torch.compile: the first step compiles the model (about a minute on CPU)")
        built.net.compile()
    trainer, fit_loaders = build_trainer(built, cfg, data, loaders, runtime)
    trainer.planner = budget_planner(auto, cfg, loaders, ema=cfg.train.ema)
    if runtime.dist.is_main:
        trainer.loggers = build_loggers(cfg.output.log, run_dir) + list(callbacks)
    start_epoch, history = 0, FitHistory(seconds=spent)  # the budget clock counts the probe
    if resume:
        start_epoch, history = trainer.load_state(run_dir, fit_loaders["train"])
        emit("info", f"resuming {run_dir} after epoch {start_epoch} of {trainer.epochs}")
    trainer.clock_start = time.perf_counter() - history.seconds
    # the first plan, from the estimate; a resumed run keeps its saved plan, unless its budget
    # changed (the re-plan counts the time it already trained)
    if trainer.planner is not None and (not resume or replan):
        trainer.planner.plan(trainer, in_epoch=trainer.skip_batches // cfg.optim.accum_steps)
    n_val = len(loaders["val"].dataset) if "val" in loaders else 0
    emit(
        "info",
        f"training {trainer.epochs} epochs on {runtime.device} ({runtime.precision}), "
        f"{len(loaders['train'].dataset)} train / {n_val} val images at "
        f"{resolve_img_size(built.info, cfg.data.img_size)} px, batch {cfg.data.batch_size} "
        f"-> {run_dir}",
    )
    if "val" not in loaders:  # by train_on_val it is the point (a refit), else maybe a slip
        why = "train_on_val" if cfg.data.train_on_val else "val_split 0, no val/ folder"
        emit("info" if cfg.data.train_on_val else "warning",
             f"no validation images ({why}): the last epoch is kept")  # fmt: skip
    is_main = runtime.dist.is_main
    try:
        history = trainer.fit(
            fit_loaders["train"],
            fit_loaders.get("val"),
            run_dir=run_dir if is_main else None,
            save_best=best_saver(run_dir, built, cfg) if is_main else None,
            start_epoch=start_epoch,
            history=history,
        )
    except KeyboardInterrupt:
        # regression: the message claimed saved weights even when nothing had been written
        raise Interrupted(interrupted_message(run_dir)) from None
    return trainer, history


def _finish(
    built: BuiltModel,
    cfg: FinetuneConfig,
    data: DataInfo,
    loaders: dict,
    runtime: Runtime,
    run_dir: Path,
    trainer: Trainer,
    history,
):
    """Keep the EMA weights, restore the best epoch, and score val and test."""
    barrier(runtime.dist)  # rank 0 has written the best weights every rank reloads
    if trainer.ema is not None and runtime.dist.is_main:  # the EMA weights as their own model
        save_weights(
            run_dir,
            trainer.ema.module,
            {"architecture": built.info.architecture, "ema_decay": str(cfg.train.ema_decay)},
            name=EMA_WEIGHTS_NAME,
        )
    final, merge_diff = restore_best(built, cfg, run_dir, runtime.device, loaders)
    metrics: dict[str, Any] = dict(
        best_epoch=history.best_epoch,
        train_seconds=history.seconds,
        epochs=history.epochs,
        stopped_early=history.stopped_early,
    )
    if merge_diff is not None:
        metrics["adapter_merge_max_abs_diff"] = merge_diff
    if history.halted:  # a logger (a tuner's budget) ended it before its last epoch
        metrics["halted"] = history.halted
    if history.resumed_at:  # the budget clock of a resumed run counts the time before it
        metrics["resumed_after_seconds"] = history.resumed_at
    task = task_of(data, cfg, built.info)
    evaluator = Trainer(final, policy=built.policy, runtime=runtime, task=task)
    metrics.update(evaluate_splits(evaluator, loaders, data, history.best_epoch))
    if trainer.ema is not None:
        ema_eval = Trainer(trainer.ema.module, policy=built.policy, runtime=runtime, task=task)
        ema = evaluate_splits(ema_eval, loaders, data, history.best_epoch, prefix="EMA ")
        metrics.update({f"ema_{k}": v for k, v in ema.items() if k != "thresholds"})
    return final, metrics


def _duration(seconds: float) -> str:
    """``293`` -> ``4m 53s``."""
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"
