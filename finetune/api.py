"""The Python API: ``adapt`` fine-tunes, ``predict`` applies a run directory to images.

Example:
    >>> import finetune
    >>> result = finetune.adapt("tf_efficientnet_lite0", "my_images", epochs=3, img_size=128)  # doctest: +SKIP
    >>> result.metrics["val"]["accuracy"], result.run_dir  # doctest: +SKIP
    >>> finetune.predict(result.run_dir, ["my_images/cat/1.jpg"], top_k=2)  # doctest: +SKIP
"""
from __future__ import annotations

import os
import random
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import nn

from .augment import build_transform, resolve_img_size
from .backbones import BackboneInfo, load_backbone
from .checkpoint import SKIPPED_NAME, atomic_path, load_run, prepare_run_dir, save_run_config
from .config import FinetuneConfig
from .data import (IMG_EXTENSIONS, DataError, DataInfo, ImageFileDataset, build_loader,
                   load_image, scan_folder, stratified_split, to_rgb)
from .heads import replace_head
from .metrics import classification_report, report_table
from .optim import build_optimizer, build_scheduler
from .policy import PolicyReport, apply_policy
from .trainer import Trainer, resolve_device, resolve_precision

__all__ = ["adapt", "predict", "FitResult"]


@dataclass
class FitResult:
    """What ``adapt`` returns: the fine-tuned model (best epoch's weights) and its report."""

    model: nn.Module
    classes: tuple[str, ...]
    metrics: dict[str, Any]      # {"val": report, "test": report?, "best_epoch", "epochs", ...}
    run_dir: Path
    config: FinetuneConfig
    backbone: BackboneInfo
    policy: PolicyReport


def adapt(model: str | nn.Module, dataset: str | os.PathLike | torch.utils.data.Dataset,
          config: Optional[FinetuneConfig] = None, *, verbose: bool = True,
          recipe: Optional[str] = None, **overrides: Any) -> FitResult:
    """Fine-tune a pretrained backbone on a labelled image folder or ``Dataset``.

    Args:
        model: backbone name (timm name, ``hf-hub:ID``, ``tv:NAME``) or an ``nn.Module`` (timm
            or torchvision classification model; its classifier is replaced).
        dataset: image folder (``DIR/<class>/*`` or ``DIR/train|val|test/<class>/*``) or a torch
            ``Dataset`` of ``(PIL image or tensor, int label)``; a ``classes`` attribute, if
            present, names the labels. Tensors are used as given (already resized/normalised).
        config: base config (default ``FinetuneConfig()``); ``overrides`` replace its fields
            by name (``lr=3e-4``, ``freeze_until="layer3"``, ``epochs=5``).
        verbose: print the plan, progress and final tables.
        recipe: recipe name or YAML path; the base config when ``config`` is None, and recorded
            in ``config.json`` either way.

    Returns:
        FitResult with the best epoch's weights loaded, metrics and the run directory.

    Example:
        >>> r = adapt("test_resnet", "tiny_folder", pretrained=False, epochs=1)  # doctest: +SKIP
    """
    if config is None:
        config = FinetuneConfig.from_recipe(recipe) if recipe else FinetuneConfig()
    cfg = config.with_overrides(**overrides)
    if isinstance(model, str):
        cfg = cfg.with_overrides(name=model)
    console = _console(verbose)
    _seed_everything(cfg.train.seed)
    data = _scan_data(dataset, cfg, console)  # bad data fails before a long model load
    net, info = _resolve_model(model, cfg)
    console.print(f"[bold]backbone[/] {info.name}: weights from {info.weights_source}")
    if info.weight_mapping:
        console.print(f"  {info.weight_mapping}")
    train_set, val_set, test_set = _build_datasets(dataset, data, cfg, info)
    replace_head(net, data.num_classes, info)
    policy = apply_policy(net, cfg.policy, info)
    console.print(policy.table())
    run_dir = prepare_run_dir(cfg.output.output or _default_run_dir(info.name),
                              overwrite=cfg.output.overwrite)
    device = resolve_device(cfg.train.device)
    precision = resolve_precision(cfg.train.precision, device)
    loaders = {name: build_loader(ds, batch_size=cfg.data.batch_size, training=name == "train",
                                  num_workers=cfg.data.num_workers, seed=cfg.train.seed,
                                  pin_memory=device.type == "cuda")
               for name, ds in (("train", train_set), ("val", val_set), ("test", test_set)) if ds}
    img_size = resolve_img_size(info, cfg.data.img_size)
    data_config = {**info.data_config, "input_size": (3, img_size, img_size)}
    extra = dict(config=cfg.to_dict(), recipe=recipe, backbone=info.name,
                 weights_source=info.weights_source, weight_mapping=info.weight_mapping,
                 data=dict(root=data.root, layout=data.layout, counts=data.counts(),
                           skipped=[p for p, _ in data.skipped]),
                 precision=precision, device=str(device))
    save_run_config(run_dir, net, info=info, classes=data.classes, data_config=data_config,
                    extra=extra)
    if data.skipped:
        with atomic_path(run_dir / SKIPPED_NAME) as tmp:
            Path(tmp).write_text("".join(f"{p}\t{why}\n" for p, why in data.skipped))

    optimizer = build_optimizer(net, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, steps_per_epoch=len(loaders["train"]),
                                epochs=cfg.train.epochs)
    trainer = Trainer(net, optimizer=optimizer, scheduler=scheduler, policy=policy, device=device,
                      precision=precision, channels_last=cfg.train.channels_last and _is_cnn(net),
                      label_smoothing=cfg.optim.label_smoothing, console=console,
                      progress=verbose)
    console.print(f"training {cfg.train.epochs} epochs on {device} ({precision}), "
                  f"{len(train_set)} train / {len(val_set)} val images at {img_size} px, "
                  f"batch {cfg.data.batch_size} -> {run_dir}")
    if "val" not in loaders:
        console.print("[yellow]no validation images (val_split 0, no val/ folder): the last "
                      "epoch is kept[/]")
    history = trainer.fit(loaders["train"], loaders.get("val"), epochs=cfg.train.epochs,
                          run_dir=run_dir, weights_metadata={"architecture": info.architecture})

    from safetensors.torch import load_model

    load_model(net, str(run_dir / "model.safetensors"), device=str(device))  # best epoch
    metrics: dict[str, Any] = dict(best_epoch=history.best_epoch, train_seconds=history.seconds,
                                   epochs=history.epochs)
    for split, loader in loaders.items():
        if split == "train":
            continue
        _, logits, targets = trainer.evaluate(loader)
        metrics[split] = classification_report(logits, targets, data.classes)
        console.print(report_table(metrics[split], f"{split} (best epoch {history.best_epoch})"))
    save_run_config(run_dir, net, info=info, classes=data.classes, data_config=data_config,
                    extra={**extra, "metrics": {k: v for k, v in metrics.items() if k != "epochs"}})
    console.print(f"run directory: {run_dir}")
    return FitResult(net.eval(), data.classes, metrics, run_dir, cfg, info, policy)


def predict(run_dir: str | os.PathLike, inputs: Sequence[str | os.PathLike], *, top_k: int = 1,
            device: str = "cpu", batch_size: int = 32) -> list[dict[str, Any]]:
    """Top-k labels and probabilities for images (folders are walked recursively).

    Uses the run's evaluation preprocessing. Returns one record per image:
    ``{"path", "label", "prob", "label_2", "prob_2", ...}``.

    Example:
        >>> predict("runs/my-run", ["photos/"], top_k=3)[0]["label"]  # doctest: +SKIP
    """
    from timm.data import create_transform

    model, config = load_run(run_dir, device=device)
    labels = config.get("label_names") or [str(i) for i in range(config["num_classes"])]
    cfg = config["pretrained_cfg"]
    transform = create_transform(input_size=tuple(cfg["input_size"]),
                                 interpolation=cfg.get("interpolation", "bilinear"),
                                 mean=tuple(cfg["mean"]), std=tuple(cfg["std"]),
                                 crop_pct=cfg.get("crop_pct", 0.875),
                                 crop_mode=cfg.get("crop_mode", "center"))
    paths = list(_walk_images(inputs))
    k = max(1, min(top_k, len(labels)))
    records = []
    for start in range(0, len(paths), batch_size):
        chunk, tensors = [], []
        for path in paths[start:start + batch_size]:
            try:
                tensors.append(transform(load_image(path)))
                chunk.append(path)
            except Exception as e:  # PIL raises many types; name the file and go on
                warnings.warn(f"skipping unreadable image {path}: {type(e).__name__}: {e}")
        if not chunk:
            continue
        images = torch.stack(tensors).to(device)
        with torch.inference_mode():
            probs = model(images).float().softmax(-1).cpu()
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
                             img_size=cfg.data.img_size)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a backbone name or an nn.Module, got {type(model).__name__}")
    from .backbones import describe_module

    return model, describe_module(model)


def _scan_data(dataset, cfg: FinetuneConfig, console) -> DataInfo:
    """Classes and splits of a folder (every image checked) or of a torch Dataset."""
    if isinstance(dataset, (str, os.PathLike)):
        data = scan_folder(dataset, val_split=cfg.data.val_split, seed=cfg.train.seed,
                           strict=cfg.data.strict, progress=console.is_terminal)
        counts = data.counts()
        console.print(f"[bold]data[/] {data.root} ({data.layout}): {data.num_classes} classes; "
                      + "; ".join(f"{split} {sum(c)}" for split, c in counts.items())
                      + (f"; [yellow]{len(data.skipped)} unreadable files skipped[/]"
                         if data.skipped else ""))
        return data
    if not isinstance(dataset, torch.utils.data.Dataset):
        raise TypeError("dataset must be a folder path or a torch Dataset, "
                        f"got {type(dataset).__name__}")
    if len(dataset) == 0:
        raise DataError(f"{type(dataset).__name__} is empty; a dataset needs labelled images")
    labels = getattr(dataset, "targets", None)
    if labels is None:
        labels = [int(dataset[i][1]) for i in range(len(dataset))]
    labels = [int(y) for y in labels]
    classes = tuple(getattr(dataset, "classes", None) or
                    [str(i) for i in range(max(labels) + 1)])
    bad = sorted({y for y in labels if not 0 <= y < len(classes)})
    if bad:
        raise DataError(f"{type(dataset).__name__}: labels {bad[:5]} are outside 0..{len(classes) - 1}"
                        f" ({len(classes)} classes: {', '.join(classes[:5])}...)")
    if len(set(labels)) < 2:
        raise DataError(f"{type(dataset).__name__}: all images have label {labels[0]}; a "
                        "classifier needs at least two classes")
    train_idx, val_idx = stratified_split(list(enumerate(labels)), cfg.data.val_split,
                                           cfg.train.seed)
    data = DataInfo(root=f"<{type(dataset).__name__}>", layout="dataset", classes=classes,
                    train=tuple(train_idx), val=tuple(val_idx))
    console.print(f"[bold]data[/] {data.root}: {len(classes)} classes; train {len(train_idx)}; "
                  f"val {len(val_idx)}")
    return data


def _build_datasets(dataset, data: DataInfo, cfg: FinetuneConfig, info: BackboneInfo):
    """(train, val, test or None) datasets with the backbone's preprocessing."""
    train_tf = build_transform(info, cfg.data, training=True)
    eval_tf = build_transform(info, cfg.data, training=False)
    if data.layout == "dataset":  # samples are (index, label) into the user's Dataset
        return (_IndexedDataset(dataset, [i for i, _ in data.train], train_tf),
                _IndexedDataset(dataset, [i for i, _ in data.val], eval_tf), None)
    make = lambda samples, tf: ImageFileDataset(samples, tf, strict=cfg.data.strict)  # noqa: E731
    return (make(data.train, train_tf), make(data.val, eval_tf),
            make(data.test, eval_tf) if data.test else None)


class _IndexedDataset(torch.utils.data.Dataset):
    """A subset of a user's dataset with our transform applied to PIL images."""

    def __init__(self, dataset, indices: list[int], transform):
        self.dataset, self.indices, self.transform = dataset, indices, transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        image, label = self.dataset[self.indices[i]]
        if not isinstance(image, torch.Tensor):
            image = self.transform(to_rgb(image))
        return image, int(label)


def _walk_images(inputs: Sequence[str | os.PathLike]):
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for dirpath, dirnames, filenames in os.walk(path, followlinks=True):
                dirnames.sort()
                for f in sorted(filenames):
                    if f.lower().endswith(IMG_EXTENSIONS):
                        yield Path(dirpath) / f
        elif path.is_file():
            yield path
        else:
            raise FileNotFoundError(f"image or folder not found: {path}")
