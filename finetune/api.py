"""The Python API: ``adapt`` fine-tunes, ``predict`` applies a run directory to images.

Example:
    >>> import finetune
    >>> result = finetune.adapt("tf_efficientnet_lite0", "my_images", epochs=3, img_size=128)  # doctest: +SKIP
    >>> result.metrics["val"]["accuracy"], result.run_dir  # doctest: +SKIP
    >>> finetune.predict(result.run_dir, ["my_images/cat/1.jpg"], top_k=2)  # doctest: +SKIP
"""
from __future__ import annotations

import math
import os
import random
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from rich.markup import escape
from torch import nn

from .augment import resolve_img_size
from .backbones import BackboneInfo, load_backbone
from .checkpoint import (SKIPPED_NAME, WEIGHTS_NAME, atomic_path, load_run, prepare_run_dir,
                         read_run_config, save_run_config, save_weights)
from .config import FinetuneConfig, selector_reset
from .distributed import barrier, setup_distributed
from .data import (build_datasets, build_loader, class_balance, load_image, scan_data,
                   walk_images)
from .heads import replace_head
from .metrics import (best_thresholds, classification_report, multilabel_report,
                      multilabel_table, report_table)
from .optim import build_optimizer, build_param_groups, build_scheduler
from .policy import PolicyReport, apply_policy, plan_table, refresh_report
from .trainer import Trainer, resolve_device, resolve_precision

__all__ = ["adapt", "predict", "inspect", "FitResult", "Interrupted"]


class Interrupted(Exception):
    """Training stopped by Ctrl-C; the message says how to resume."""


@dataclass
class FitResult:
    """What ``adapt`` returns: the fine-tuned model (best epoch's weights) and its report."""

    model: nn.Module
    classes: tuple[str, ...]
    metrics: dict[str, Any]      # {"val": report, "test": report?, "best_epoch", "epochs", ...}
    run_dir: Optional[Path]      # None after a dry run
    config: FinetuneConfig
    backbone: BackboneInfo
    policy: PolicyReport


def adapt(model: str | nn.Module | None = None,
          dataset: str | os.PathLike | torch.utils.data.Dataset | None = None,
          config: Optional[FinetuneConfig] = None, *, verbose: bool = True,
          recipe: Optional[str] = None, dry_run: bool = False,
          resume: Optional[str | os.PathLike] = None, **overrides: Any) -> FitResult:
    """Fine-tune a pretrained backbone on a labelled image folder or ``Dataset``.

    Args:
        model: backbone name (timm name, ``hf-hub:ID``, ``tv:NAME``) or an ``nn.Module`` (timm
            or torchvision classification model; its classifier is replaced). Default: the
            config's ``backbone.name``.
        dataset: image folder (``DIR/<class>/*`` or ``DIR/train|val|test/<class>/*``) or a torch
            ``Dataset`` of ``(PIL image or tensor, int label)``; a ``classes`` attribute, if
            present, names the labels. Tensors are used as given (already resized/normalised).
            Default: the config's ``data.path``.
        config: base config (default ``FinetuneConfig()``); ``overrides`` replace its fields
            by name (``lr=3e-4``, ``freeze_until="layer3"``, ``epochs=5``).
        verbose: print the plan, progress and final tables.
        recipe: recipe name or YAML path; the base config when ``config`` is None, and recorded
            in ``config.json`` either way.
        dry_run: build the model and the plan, print it, and return without training
            (``run_dir`` is None).
        resume: a run directory to continue from its last finished epoch, exactly as it was
            configured (no overrides).

    Returns:
        FitResult with the best epoch's weights loaded, metrics and the run directory.

    Example:
        >>> r = adapt("test_resnet", "tiny_folder", pretrained=False, epochs=1)  # doctest: +SKIP
    """
    cfg, recipe = _resolve_config(model, config, recipe, resume, overrides)
    model = model if isinstance(model, nn.Module) else cfg.backbone.name
    dataset = dataset if dataset is not None else cfg.data.path
    if dataset is None:
        raise ValueError("no data: pass a folder or Dataset (CLI: --data DIR)")
    if isinstance(dataset, (str, os.PathLike)):  # recorded, so that --resume finds it
        cfg = cfg.with_overrides(path=str(dataset))
    dist = setup_distributed(cfg.train.device)
    console = _console(verbose and dist.is_main)
    _seed_everything(cfg.train.seed)
    if cfg.train.deterministic:
        # CUBLAS needs a fixed workspace for deterministic matmuls on CUDA
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    data = scan_data(dataset, cfg, console)  # bad data fails before a long model load
    net, base, info, policy = _build_model(model, cfg, data.num_classes, console)
    console.print(plan_table(net, policy, cfg.optim))
    if dry_run:
        return FitResult(net, data.classes, {}, None, cfg, info, policy)
    run_dir = _shared_run_dir(resume, cfg, info, dist)
    device = resolve_device(cfg.train.device)
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    precision = resolve_precision(cfg.train.precision, device)
    cached = cfg.train.cache_features
    splits = dict(zip(("train", "val", "test"),
                      build_datasets(dataset, data, cfg, info, train_augment=not cached)))
    class_weights, sample_weights = class_balance(data, cfg)
    loaders = {name: build_loader(ds, batch_size=cfg.data.batch_size,
                                  training=name == "train" and not cached,
                                  num_workers=cfg.data.num_workers, seed=cfg.train.seed,
                                  pin_memory=device.type == "cuda",
                                  sample_weights=sample_weights if name == "train" else None,
                                  world=dist.world, rank=dist.rank)
               for name, ds in splits.items() if ds}
    img_size = resolve_img_size(info, cfg.data.img_size)
    data_config = {**info.data_config, "input_size": (info.input_size[0], img_size, img_size)}
    extra = dict(config=cfg.to_dict(), recipe=recipe, overrides=_jsonable(overrides),
                 backbone=info.name,
                 weights_source=info.weights_source, weight_mapping=info.weight_mapping,
                 data=dict(root=data.root, layout=data.layout, counts=data.counts(),
                           skipped=[p for p, _ in data.skipped]),
                 precision=precision, device=str(device))
    if data.multilabel:  # predict on an interrupted run still knows it is multi-label
        extra.update(multi_label=True, thresholds=[0.5] * data.num_classes)
    if not resume and dist.is_main:
        save_run_config(run_dir, base, info=info, classes=data.classes, data_config=data_config,
                        extra=extra)
        if data.skipped:
            with atomic_path(run_dir / SKIPPED_NAME) as tmp:
                Path(tmp).write_text("".join(f"{p}\t{why}\n" for p, why in data.skipped))
    channels_last = cfg.train.channels_last and _is_cnn(base)
    base.to(device=device, memory_format=torch.channels_last if channels_last
            else torch.contiguous_format)
    if cfg.train.compile:  # the trained module is compiled; weights stay shared with ``net``
        console.print("torch.compile: the first step compiles the model (about a minute on CPU)")
        net.compile()
    if cached:
        if dist.enabled:
            raise ValueError("train.cache_features runs in one process; drop it or torchrun")
        trainer, fit_loaders = _cached_feature_trainer(base, info, policy, cfg, data, loaders,
                                                       device, precision, console, class_weights)
    else:
        trainer, fit_loaders = _trainer(net, info, policy, cfg, loaders, device, precision,
                                        channels_last, console, verbose, class_weights,
                                        data.multilabel, dist, data.num_classes)
    save_best = _best_saver(run_dir, base, cfg, info) if dist.is_main else None
    start_epoch, history = 0, None
    if resume:
        start_epoch, history = trainer.load_state(run_dir, fit_loaders["train"])
        console.print(f"resuming {run_dir} after epoch {start_epoch} of {cfg.train.epochs}")
    console.print(f"training {cfg.train.epochs} epochs on {device} ({precision}), "
                  f"{len(splits['train'])} train / {len(splits['val'] or [])} val images at "
                  f"{img_size} px, batch {cfg.data.batch_size} -> {run_dir}")
    if "val" not in loaders:
        console.print("[yellow]no validation images (val_split 0, no val/ folder): the last "
                      "epoch is kept[/]")
    try:
        history = trainer.fit(fit_loaders["train"], fit_loaders.get("val"),
                              epochs=cfg.train.epochs,
                              run_dir=run_dir if dist.is_main else None, save_best=save_best,
                              start_epoch=start_epoch, history=history)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; the best weights and the state after the last finished "
                          f"epoch are in {run_dir}: continue with "
                          f"'finetune run --resume {run_dir}'") from None
    barrier(dist)  # rank 0 has written the best weights every rank reloads
    if trainer.ema is not None and dist.is_main:  # the EMA weights as their own model
        save_weights(run_dir, trainer.ema.module, {"architecture": info.architecture,
                                                   "ema_decay": str(cfg.train.ema_decay)},
                     name="model_ema.safetensors")
    final, merge_diff = _restore_best(net, base, cfg, info, run_dir, device, loaders)
    metrics: dict[str, Any] = dict(best_epoch=history.best_epoch, train_seconds=history.seconds,
                                   epochs=history.epochs, stopped_early=history.stopped_early)
    if merge_diff is not None:
        metrics["adapter_merge_max_abs_diff"] = merge_diff
    evaluator = Trainer(final, optimizer=None, scheduler=None, policy=policy, device=device,
                        precision=precision, channels_last=channels_last,
                        multilabel=data.multilabel)
    metrics.update(_evaluate(evaluator, loaders, data, console, history.best_epoch))
    if trainer.ema is not None:
        ema_eval = Trainer(trainer.ema.module, optimizer=None, scheduler=None, policy=policy,
                           device=device, precision=precision, channels_last=channels_last,
                           multilabel=data.multilabel)
        ema_metrics = _evaluate(ema_eval, loaders, data, console, history.best_epoch)
        metrics.update({f"ema_{k}": v for k, v in ema_metrics.items() if k != "thresholds"})
    extra["metrics"] = {k: v for k, v in metrics.items() if k not in ("epochs", "thresholds")}
    if data.multilabel:
        extra.update(multi_label=True, thresholds=metrics.get("thresholds"))
    if dist.is_main:
        save_run_config(run_dir, final, info=info, classes=data.classes,
                        data_config=data_config, extra=extra)
    console.print(f"run directory: {run_dir}")
    return FitResult(final.eval(), data.classes, metrics, run_dir, cfg, info, policy)


def inspect(model: str | nn.Module | None = None, config: Optional[FinetuneConfig] = None, *,
            num_classes: int = 2, verbose: bool = True, **overrides: Any):
    """Build a backbone with random weights, apply the policy and print the plan table.

    Returns ``(model, PolicyReport)``; nothing is downloaded and nothing trains.

    Example:
        >>> model, report = inspect("resnet50", freeze_until="layer3")  # doctest: +SKIP
    """
    cfg = (config or FinetuneConfig()).with_overrides(pretrained=False, **overrides)
    if isinstance(model, str):
        cfg = cfg.with_overrides(name=model)
    console = _console(verbose)
    net, _, info, policy = _build_model(model if isinstance(model, nn.Module)
                                        else cfg.backbone.name, cfg, num_classes, console)
    console.print(plan_table(net, policy, cfg.optim))
    return net, policy


def predict(run_dir: str | os.PathLike, inputs: Sequence[str | os.PathLike], *, top_k: int = 1,
            device: str = "cpu", batch_size: int = 32) -> list[dict[str, Any]]:
    """Top-k labels and probabilities for images (folders are walked recursively).

    Uses the run's evaluation preprocessing. Returns one record per image:
    ``{"path", "label", "prob", "label_2", "prob_2", ...}``; for a multi-label run
    ``{"path", "labels": "a;b", "prob_<label>": ...}`` with the thresholds chosen on validation.

    Example:
        >>> predict("runs/my-run", ["photos/"], top_k=3)[0]["label"]  # doctest: +SKIP
    """
    from timm.data import create_transform

    model, config = load_run(run_dir, device=device)
    labels = config.get("label_names") or [str(i) for i in range(config["num_classes"])]
    cfg = config["pretrained_cfg"]
    channels = int(cfg["input_size"][0])
    read = load_image
    if channels != 3:  # a multi-band run: the same band reader and transform as its evaluation
        from functools import partial

        from .augment import build_band_transform
        from .backbones import BackboneInfo
        from .config import DataConfig
        from .data import load_bands

        info = BackboneInfo("", "", "timm", "", 0, tuple(cfg["input_size"]), tuple(cfg["mean"]),
                            tuple(cfg["std"]), cfg.get("interpolation", "bilinear"),
                            cfg.get("crop_pct", 0.875), "")
        transform = build_band_transform(info, DataConfig(), training=False)
        read = partial(load_bands, channels=channels)
    else:
        transform = create_transform(input_size=tuple(cfg["input_size"]),
                                     interpolation=cfg.get("interpolation", "bilinear"),
                                     mean=tuple(cfg["mean"]), std=tuple(cfg["std"]),
                                     crop_pct=cfg.get("crop_pct", 0.875),
                                     crop_mode=cfg.get("crop_mode", "center"))
    paths = list(walk_images(inputs))
    k = max(1, min(top_k, len(labels)))
    ft = config.get("finetune", {})
    thresholds = ft.get("thresholds") if ft.get("multi_label") else None
    records = []
    for start in range(0, len(paths), batch_size):
        chunk, tensors = [], []
        for path in paths[start:start + batch_size]:
            try:
                tensors.append(transform(read(path)))
                chunk.append(path)
            except Exception as e:  # PIL raises many types; name the file and go on
                warnings.warn(f"skipping unreadable image {path}: {type(e).__name__}: {e}")
        if not chunk:
            continue
        images = torch.stack(tensors).to(device)
        with torch.inference_mode():
            logits = model(images).float().cpu()
        if thresholds is not None:  # multi-label: every label over its threshold
            records += _multilabel_records(chunk, logits.sigmoid(), labels, thresholds)
            continue
        probs = logits.softmax(-1)
        top_p, top_i = probs.topk(k, dim=-1)
        for path, ps, idx in zip(chunk, top_p.tolist(), top_i.tolist()):
            record: dict[str, Any] = {"path": str(path)}
            for rank, (p, i) in enumerate(zip(ps, idx), start=1):
                suffix = "" if rank == 1 else f"_{rank}"
                record[f"label{suffix}"] = labels[i]
                record[f"prob{suffix}"] = round(p, 6)
            records.append(record)
    return records


# ---------------------------------------------------------------------------------------------


def _resolve_config(model, config, recipe, resume, overrides) -> tuple[FinetuneConfig, Any]:
    if resume is not None:
        if config is not None or recipe is not None:
            raise ValueError("--resume continues a run with its own config; drop --recipe")
        if overrides:
            # the LR schedule, data order and unfreeze plan were fixed by the original config
            raise ValueError("--resume continues a run exactly as it was configured; drop "
                             f"{', '.join('--' + k.replace('_', '-') for k in sorted(overrides))}")
        saved = read_run_config(resume).get("finetune", {})
        if "config" not in saved:
            raise ValueError(f"{resume}: config.json has no finetune config; not a finetune run")
        return FinetuneConfig.from_dict(saved["config"]).with_overrides(**overrides), \
            saved.get("recipe")
    if config is None:
        config = FinetuneConfig.from_recipe(recipe) if recipe else FinetuneConfig()
    cfg = config.with_overrides(**selector_reset(overrides), **overrides)
    if isinstance(model, str):
        cfg = cfg.with_overrides(name=model)
    return cfg, recipe


def _multilabel_records(paths, probs, labels, thresholds) -> list[dict[str, Any]]:
    records = []
    for path, row in zip(paths, probs.tolist()):
        chosen = [name for name, p, t in zip(labels, row, thresholds) if p >= t]
        record: dict[str, Any] = {"path": str(path), "labels": ";".join(chosen)}
        record.update({f"prob_{name}": round(p, 6) for name, p in zip(labels, row)})
        records.append(record)
    return records


def _evaluate(evaluator: Trainer, loaders, data, console, best_epoch: int) -> dict:
    """Reports on val and test. Multi-label: per-label thresholds that maximise F1 on val (0.5
    without val data) are chosen first and applied to both, and returned as ``thresholds``."""
    out: dict[str, Any] = {}
    logits = {s: evaluator.evaluate(loaders[s])[1:] for s in ("val", "test") if s in loaders}
    if data.multilabel:
        out["thresholds"] = (best_thresholds(logits["val"][0].sigmoid(), logits["val"][1])
                             if "val" in logits else [0.5] * data.num_classes)
    for split, (split_logits, targets) in logits.items():
        title = f"{split} (best epoch {best_epoch})"
        if data.multilabel:
            out[split] = multilabel_report(split_logits, targets, data.classes,
                                           out["thresholds"])
            console.print(multilabel_table(out[split], title))
        else:
            out[split] = classification_report(split_logits, targets, data.classes)
            console.print(report_table(out[split], title))
    return out


def _shared_run_dir(resume, cfg: FinetuneConfig, info: BackboneInfo, dist) -> Path:
    """The run directory, created by rank 0; every rank gets rank 0's path (its timestamp)."""
    if resume:
        return Path(resume)
    path = None
    if dist.is_main:
        path = prepare_run_dir(cfg.output.output or _default_run_dir(info.name),
                               overwrite=cfg.output.overwrite)
    if dist.enabled:
        shared = [str(path) if path else None]
        torch.distributed.broadcast_object_list(shared, src=0)
        path = Path(shared[0])
    return path


def _jsonable(values: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def _build_model(model, cfg: FinetuneConfig, num_classes: int, console):
    """(model to train, base model, BackboneInfo, PolicyReport): the base is the plain timm or
    torchvision module; the trained model is the base or its peft wrapper."""
    base, info = _resolve_model(model, cfg)
    console.print(f"[bold]backbone[/] {escape(info.name)}: weights from "
                  f"{escape(info.weights_source)}")
    if info.weight_mapping:
        console.print(f"  {escape(info.weight_mapping)}")
    replace_head(base, num_classes, info)
    policy = apply_policy(base, cfg.policy, info, epochs=cfg.train.epochs)
    if cfg.adapter.peft == "none":
        return base, base, info, policy
    from dataclasses import replace as dc_replace

    from .adapters import adapter_stages, apply_adapter

    net = apply_adapter(base, cfg.adapter, head=info.classifier)
    policy = dc_replace(policy, stages=adapter_stages(policy.stages, net),
                        description=f"peft {cfg.adapter.peft} (r={cfg.adapter.lora_r})")
    return net, base, info, refresh_report(net, policy)


def _trainer(net, info, policy, cfg, loaders, device, precision, channels_last, console, verbose,
             class_weights, multilabel, dist, num_classes):
    optimizer = build_optimizer(build_param_groups(net, cfg.optim, policy.stages), cfg.optim)
    run_model = net
    if dist.enabled:
        if policy.thaw_epochs:
            raise ValueError("gradual unfreezing changes the trained parameters mid-run, which "
                             "DistributedDataParallel cannot follow; train in one process")
        if cfg.train.nan_policy == "skip-batch":
            raise ValueError("--nan-policy skip-batch would let one process skip a step the "
                             "others take; use stop with several processes")
        if cfg.train.sync_bn:
            if device.type != "cuda":
                raise ValueError("train.sync_bn needs CUDA (torch's SyncBatchNorm); drop it on CPU")
            net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
        run_model = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None)
        console.print(f"DistributedDataParallel: {dist.world} processes, global batch "
                      f"{dist.world * cfg.data.batch_size * cfg.optim.accum_steps}")
    scheduler = build_scheduler(optimizer, cfg.optim, epochs=cfg.train.epochs,
                                steps_per_epoch=math.ceil(len(loaders["train"])
                                                          / cfg.optim.accum_steps))
    mixup = None
    if cfg.train.mixup or cfg.train.cutmix:
        from timm.data import Mixup

        mixup = Mixup(mixup_alpha=cfg.train.mixup, cutmix_alpha=cfg.train.cutmix,
                      label_smoothing=cfg.optim.label_smoothing, num_classes=num_classes,
                      multi_label=multilabel)
    trainer = Trainer(run_model, optimizer=optimizer, scheduler=scheduler, policy=policy,
                      device=device, precision=precision, channels_last=channels_last,
                      label_smoothing=cfg.optim.label_smoothing, console=console,
                      progress=verbose, optim_cfg=cfg.optim, class_weights=class_weights, dist=dist,
                      multilabel=multilabel, mean=info.mean, std=info.std, mixup=mixup,
                      mixup_off_epoch=cfg.train.epochs - cfg.train.mixup_off_epochs,
                      ema_decay=cfg.train.ema_decay if cfg.train.ema else None,
                      nan_policy=cfg.train.nan_policy, patience=cfg.train.patience,
                      save_every=cfg.train.save_every,
                      save_every_steps=cfg.train.save_every_steps)
    if cfg.optim.accum_steps > 1 and console is not None:
        console.print(f"gradient accumulation: {cfg.optim.accum_steps} batches per step, "
                      f"effective batch {cfg.optim.accum_steps * cfg.data.batch_size}")
    return trainer, loaders


def _cached_feature_trainer(base, info, policy, cfg, data, loaders, device, precision, console,
                            class_weights):
    """Linear probe on cached features: the backbone runs once per split, the head trains."""
    from .features import extract_features, feature_loader
    from .stages import Stage

    memory = torch.channels_last if cfg.train.channels_last and _is_cnn(base) \
        else torch.contiguous_format
    t0 = time.perf_counter()
    cache = {split: extract_features(base, info.classifier, loader, device, memory)
             for split, loader in loaders.items() if split != "test"}
    console.print(f"cached features of {sum(len(t) for _, t in cache.values())} images in "
                  f"{time.perf_counter() - t0:.1f} s (no augmentation: features are fixed)")
    _, sample_weights = class_balance(data, cfg)
    fit_loaders = {split: feature_loader(f, t, batch_size=cfg.data.batch_size,
                                         training=split == "train", seed=cfg.train.seed,
                                         sample_weights=sample_weights)
                   for split, (f, t) in cache.items()}
    head = base.get_submodule(info.classifier)
    head_stage = Stage("head", tuple(n for n, _ in head.named_parameters()), (info.classifier,))
    head_policy = PolicyReport("linear_probe (cached features)", policy.bn_mode, (head_stage,), ())
    optimizer = build_optimizer(build_param_groups(head, cfg.optim, [head_stage]), cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, epochs=cfg.train.epochs,
                                steps_per_epoch=math.ceil(len(fit_loaders["train"])
                                                          / cfg.optim.accum_steps))
    trainer = Trainer(head, optimizer=optimizer, scheduler=scheduler, policy=head_policy,
                      device=device, precision=precision,
                      label_smoothing=cfg.optim.label_smoothing, console=console,
                      optim_cfg=cfg.optim, class_weights=class_weights,
                      multilabel=data.multilabel, patience=cfg.train.patience,
                      nan_policy=cfg.train.nan_policy, save_every=cfg.train.save_every)
    return trainer, fit_loaders


def _best_saver(run_dir: Path, base: nn.Module, cfg: FinetuneConfig, info: BackboneInfo):
    """How the best epoch is kept: the whole base model, or (peft) the adapter and head."""
    metadata = {"architecture": info.architecture}
    if cfg.adapter.peft != "none":
        from .adapters import save_adapter

        return lambda model, epoch: save_adapter(model, run_dir)
    return lambda model, epoch: save_weights(run_dir, base, {**metadata, "epoch": str(epoch)})


def _restore_best(net, base, cfg, info, run_dir: Path, device, loaders):
    """Load the best epoch into the base model; merge adapters into it (peft) and write the
    merged ``model.safetensors``. Returns (base model, max |merged - unmerged| logit or None)."""
    from safetensors.torch import load_model

    if cfg.adapter.peft == "none":
        load_model(base, str(run_dir / WEIGHTS_NAME), device=str(device))
        return base, None
    from .adapters import load_adapter, merge_adapter

    load_adapter(net, run_dir)
    images = next(iter(loaders.get("val") or loaders["train"]))[0][:8].to(device)
    if images.dtype == torch.uint8:  # training batches stop before normalisation
        mean = torch.tensor(info.mean, device=device).view(1, -1, 1, 1) * 255
        std = torch.tensor(info.std, device=device).view(1, -1, 1, 1) * 255
        images = (images.float() - mean) / std
    net.eval()
    with torch.inference_mode():
        unmerged = net(images).float()
        merged_model = merge_adapter(net)
        diff = float((merged_model(images).float() - unmerged).abs().max())
    if os.environ.get("RANK", "0") == "0":  # with torchrun every rank merges, rank 0 writes
        save_weights(run_dir, merged_model, {"architecture": info.architecture,
                                             "merged_adapter": cfg.adapter.peft})
    return merged_model, diff


def _console(verbose: bool):
    from rich.console import Console

    return Console(quiet=not verbose, highlight=False)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _default_run_dir(name: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)
    return Path("runs") / f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}"


def _is_cnn(model: nn.Module) -> bool:
    # channels_last pays off for conv nets; a ViT has a single (patch embedding) conv
    return sum(isinstance(m, nn.Conv2d) for m in model.modules()) > 1


def _resolve_model(model, cfg: FinetuneConfig) -> tuple[nn.Module, BackboneInfo]:
    if isinstance(model, str):
        return load_backbone(cfg.backbone.name, weights=cfg.backbone.weights,
                             pretrained=cfg.backbone.pretrained, drop_rate=cfg.head.head_dropout,
                             img_size=cfg.data.img_size, in_chans=cfg.data.in_chans,
                             drop_path=cfg.backbone.drop_path)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a backbone name or an nn.Module, got {type(model).__name__}")
    from .backbones import describe_module

    return model, describe_module(model)


