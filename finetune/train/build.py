"""Assembly of a run's parts from its config: the model with its policy, and the Trainer (plain,
DistributedDataParallel, or a linear probe on cached features).

Example:
    >>> built = build_model("resnet50", cfg, num_classes=2)  # doctest: +SKIP
    >>> trainer, loaders = build_trainer(built, cfg, data, loaders, runtime)  # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from dataclasses import replace as dc_replace

import torch
from torch import nn

from ..config import FinetuneConfig, PolicyConfig
from ..data.balance import class_balance
from ..data.folder import DataInfo
from ..events import emit
from ..models.backbones import describe_module, load_backbone
from ..models.heads import replace_head
from ..models.info import BackboneInfo
from ..models.stages import Stage
from .autofreeze import resolve_freeze
from .optim import LRSchedule, build_optimizer, build_param_groups
from .policy import PolicyReport, apply_policy, refresh_report
from .runtime import Runtime, Task
from .trainer import Trainer

__all__ = ["BuiltModel", "build_model", "build_trainer", "task_of"]


@dataclass(frozen=True)
class BuiltModel:
    """``net`` trains (the base model, or its peft wrapper); ``base`` is the plain timm or
    torchvision module whose weights are saved."""

    net: nn.Module
    base: nn.Module
    info: BackboneInfo
    policy: PolicyReport
    policy_config: PolicyConfig  # cfg.policy with its "auto" fields resolved (autofreeze)
    reasons: tuple[str, ...] = ()  # why, for the "auto:" lines of plan_run


def build_model(model: str | nn.Module, cfg: FinetuneConfig, num_classes: int) -> BuiltModel:
    """Load the backbone (or describe a given module), replace its head for ``num_classes`` and
    apply the freezing policy and adapters of ``cfg``."""
    if isinstance(model, str):
        b = cfg.backbone
        base, info = load_backbone(
            b.name,
            weights=b.weights,
            pretrained=b.pretrained,
            drop_rate=cfg.head.head_dropout,
            img_size=cfg.data.img_size,
            in_chans=cfg.data.in_chans,
            drop_path=b.drop_path,
        )
    elif isinstance(model, nn.Module):
        base, info = model, describe_module(model)
    else:
        raise TypeError(
            f"model must be a backbone name or an nn.Module, got {type(model).__name__}"
        )
    emit("info", f"backbone {info.name}: weights from {info.weights_source}")
    if info.weight_mapping:
        emit("info", f"  {info.weight_mapping}")
    replace_head(base, num_classes, info)
    # a budgeted run's length is planned as it runs, not train.epochs. Regression: its thaw
    # plan stopped at train.epochs (a 40-epoch budget with --unfreeze-every 5 thawed one stage)
    # and --unfreeze-at was checked against it
    epochs = None if cfg.train.budget is not None else cfg.train.epochs
    policy = apply_policy(base, cfg.policy, info, epochs=epochs)
    pretrained = isinstance(model, str) and (cfg.backbone.pretrained or bool(cfg.backbone.weights))
    resolved, why = resolve_freeze(cfg, base, list(policy.stages), pretrained=pretrained)
    if resolved != cfg.policy and why is not None:
        policy = apply_policy(base, resolved, info, epochs=epochs)
    reasons = () if why is None else (why,)
    if cfg.adapter.peft == "none":
        return BuiltModel(base, base, info, policy, resolved, reasons)
    from ..models.adapters import adapter_stages, apply_adapter

    net = apply_adapter(base, cfg.adapter, head=info.classifier)
    policy = dc_replace(
        policy,
        stages=adapter_stages(policy.stages, net),
        description=f"peft {cfg.adapter.peft} (r={cfg.adapter.lora_r})",
    )
    return BuiltModel(net, base, info, refresh_report(net, policy), resolved, reasons)


def task_of(data: DataInfo, cfg: FinetuneConfig, info: BackboneInfo) -> Task:
    """The ``Task`` of a scanned data set: classes, multi-label, class weights, normalisation."""
    class_weights, _ = class_balance(data, cfg)
    return Task(data.num_classes, data.multilabel, class_weights, info.mean, info.std)


def build_trainer(
    built: BuiltModel, cfg: FinetuneConfig, data: DataInfo, loaders: dict, runtime: Runtime
) -> tuple[Trainer, dict]:
    """The run's Trainer and the loaders it fits on (cached-feature loaders for a cached probe)."""
    task = task_of(data, cfg, built.info)
    if cfg.train.cache_features:
        return _cached_feature_trainer(built, cfg, data, loaders, runtime, task)
    net, dist = built.net, runtime.dist
    optimizer = build_optimizer(build_param_groups(net, cfg.optim, built.policy.stages), cfg.optim)
    run_model = _distributed(net, built.policy, cfg, runtime) if dist.enabled else net
    scheduler = LRSchedule(
        optimizer,
        cfg.optim,
        epochs=cfg.train.epochs,
        steps_per_epoch=math.ceil(len(loaders["train"]) / cfg.optim.accum_steps),
    )
    if cfg.optim.accum_steps > 1:
        emit(
            "info",
            f"gradient accumulation: {cfg.optim.accum_steps} batches per step, "
            f"effective batch {cfg.optim.accum_steps * cfg.data.batch_size}",
        )
    trainer = Trainer(
        run_model,
        policy=built.policy,
        optimizer=optimizer,
        scheduler=scheduler,
        optim=cfg.optim,
        train=cfg.train,
        runtime=runtime,
        task=task,
    )
    return trainer, loaders


def _distributed(net: nn.Module, policy: PolicyReport, cfg: FinetuneConfig, runtime: Runtime):
    """``net`` wrapped in DistributedDataParallel, after the checks that several processes need."""
    if policy.thaw_epochs:
        raise ValueError(
            "gradual unfreezing changes the trained parameters mid-run, which "
            "DistributedDataParallel cannot follow; train in one process"
        )
    if cfg.train.nan_policy == "skip-batch":
        raise ValueError(
            "--nan-policy skip-batch would let one process skip a step the "
            "others take; use stop with several processes"
        )
    device = runtime.device
    if cfg.train.sync_bn:
        if device.type != "cuda":
            raise ValueError("train.sync_bn needs CUDA (torch's SyncBatchNorm); drop it on CPU")
        net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
    emit(
        "info",
        f"DistributedDataParallel: {runtime.dist.world} processes, global batch "
        f"{runtime.dist.world * cfg.data.batch_size * cfg.optim.accum_steps}",
    )
    return torch.nn.parallel.DistributedDataParallel(
        net, device_ids=[device.index] if device.type == "cuda" else None
    )


def _cached_feature_trainer(
    built: BuiltModel, cfg: FinetuneConfig, data: DataInfo, loaders, runtime: Runtime, task: Task
) -> tuple[Trainer, dict]:
    """Linear probe on cached features: the backbone runs once per split, the head trains."""
    from .features import extract_features, feature_loader

    if runtime.dist.enabled:
        raise ValueError("train.cache_features runs in one process; drop it or torchrun")
    base, info = built.base, built.info
    t0 = time.perf_counter()
    cache = {
        split: extract_features(
            base, info.classifier, loader, runtime.device, runtime.memory_format
        )
        for split, loader in loaders.items()
        if split != "test"
    }
    emit(
        "info",
        f"cached features of {sum(len(t) for _, t in cache.values())} images in "
        f"{time.perf_counter() - t0:.1f} s (no augmentation: features are fixed)",
    )
    _, sample_weights = class_balance(data, cfg)
    fit_loaders = {
        split: feature_loader(
            f,
            t,
            batch_size=cfg.data.batch_size,
            training=split == "train",
            seed=cfg.train.seed,
            sample_weights=sample_weights,
        )
        for split, (f, t) in cache.items()
    }
    head = base.get_submodule(info.classifier)
    head_stage = Stage("head", tuple(n for n, _ in head.named_parameters()), (info.classifier,))
    policy = PolicyReport("linear_probe (cached features)", built.policy.bn_mode, (head_stage,), ())
    optimizer = build_optimizer(build_param_groups(head, cfg.optim, [head_stage]), cfg.optim)
    scheduler = LRSchedule(
        optimizer,
        cfg.optim,
        epochs=cfg.train.epochs,
        steps_per_epoch=math.ceil(len(fit_loaders["train"]) / cfg.optim.accum_steps),
    )
    # features are already pooled tensors: no channels_last, no EMA, no mid-epoch saves
    trainer = Trainer(
        head,
        policy=policy,
        optimizer=optimizer,
        scheduler=scheduler,
        optim=cfg.optim,
        train=dc_replace(cfg.train, ema=False, save_every_steps=0),
        runtime=dc_replace(runtime, channels_last=False),
        task=task,
    )
    return trainer, fit_loaders
