"""The methods of bench/transfer.py: finetune through its CLI, a cached-feature linear probe,
a plain hand-written fine-tune loop at equal wall time, fastai's ``fine_tune``, and (opt-in)
``finetune tune`` at 3x the default run's budget.

Each ``run_*`` returns a dict with ``test_accuracy`` and its timings; bench/transfer.py's
docstring states the exact settings of each.
"""

from __future__ import annotations

import json
import math
import os
import random
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BACKBONE = "tf_efficientnet_lite0"
PROBE_CS = (0.01, 0.1, 1.0, 10.0)
TUNE_FACTOR = 3  # issue 13: tune gets 3x the default run's budget


# ---------------------------------------------------------------------------------------------
# shared pieces


def device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")  # finetune's "auto"


def pretrained_model(num_classes: int):
    """The backbone with the weights finetune resolves (same order, same source), new head."""
    from finetune.models.backbones import load_backbone

    model, info = load_backbone(BACKBONE)
    model.reset_classifier(num_classes)
    return model, info.weights_source


def transforms(model, img_size: int, *, training: bool):
    from timm.data import create_transform, resolve_data_config

    cfg = resolve_data_config({"input_size": (3, img_size, img_size)}, model=model)
    return create_transform(**cfg, is_training=training)


def test_accuracy(model, folder: Path, img_size: int) -> float:
    import torch
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    data = ImageFolder(folder / "test", transforms(model, img_size, training=False))
    model.eval()
    correct = 0
    with torch.inference_mode():
        for images, targets in DataLoader(data, batch_size=64):
            correct += int((model(images.to(device())).argmax(1).cpu() == targets).sum())
    return correct / len(data)


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# 1. finetune, through the CLI


def finetune_cli(cmd: list[str], out_dir: Path) -> float:
    """Run ``python -m finetune CMD`` (this checkout, offline) with its output in
    ``OUT_DIR.log``; returns the wall seconds, raises with the log's tail when it fails."""
    shutil.rmtree(out_dir, ignore_errors=True)  # our own folder from an earlier bench run
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    log_path = out_dir.with_suffix(".log")
    start = time.perf_counter()
    with open(log_path, "w") as out:
        argv = [sys.executable, "-m", "finetune", *cmd]
        rc = subprocess.run(argv, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - start
    if rc != 0:
        tail = log_path.read_text().splitlines()[-15:]
        raise RuntimeError(f"finetune exited {rc}; {log_path} ends:\n" + "\n".join(tail))
    return wall


def run_finetune(folder: Path, budget: str, seed: int, run_dir: Path, extra: list[str]) -> dict:
    from finetune.validation import parse_duration

    cmd = ["run", "--data", str(folder), "--budget", budget]
    cmd += ["--seed", str(seed), "--output", str(run_dir), *extra]
    wall = finetune_cli(cmd, run_dir)
    run = json.loads((run_dir / "config.json").read_text())
    metrics = run["finetune"]["metrics"]
    return dict(
        test_accuracy=metrics["test"]["accuracy"],
        wall_s=wall,
        train_s=metrics["train_seconds"],
        epochs=epochs_trained(run, run_dir),
        img_size=int(run["pretrained_cfg"]["input_size"][-1]),
        budget_used=metrics["train_seconds"] / parse_duration(budget),
        weights_source=run["finetune"]["weights_source"],
        command=shlex.join(["finetune", *cmd]),
    )


def run_tune(folder: Path, budget: str, seed: int, out: Path, extra: list[str]) -> dict:
    """``finetune tune --data DIR --budget 3B --seed S``: the best trial's test accuracy (the
    trial with the best validation score: the study's result), its trials and budget use."""
    from finetune.validation import parse_duration

    study_budget = f"{TUNE_FACTOR * parse_duration(budget):g}s"
    cmd = ["tune", "--data", str(folder), "--budget", study_budget]
    cmd += ["--seed", str(seed), "--output", str(out), *extra]
    wall = finetune_cli(cmd, out)
    summary = json.loads((out / "study" / "summary.json").read_text())
    if not summary.get("best_run_dir"):
        raise RuntimeError(f"no trial finished ({summary['stop_reason']}); see {out}.log")
    best = json.loads((Path(summary["best_run_dir"]) / "config.json").read_text())
    return dict(
        test_accuracy=best["finetune"]["metrics"]["test"]["accuracy"],
        val_accuracy=summary["best_value"],
        best_trial=summary["best_trial"],
        trials=sum(summary["trials"].values()),
        trial_states=summary["trials"],
        wall_s=wall,
        study_s=summary["elapsed_s"],
        budget_used=summary["elapsed_s"] / parse_duration(study_budget),
        study_budget=study_budget,
        command=shlex.join(["finetune", *cmd]),
    )


def epochs_trained(run: dict, run_dir: Path) -> float:
    """Epochs as optimizer steps / steps per epoch: a budgeted run may end in a partial epoch."""
    records = [json.loads(line) for line in open(run_dir / "metrics.jsonl") if line.strip()]
    cfg, data = run["finetune"]["config"], run["finetune"]["data"]
    batch = cfg["data"]["batch_size"] * cfg["optim"].get("accum_steps", 1)
    steps_per_epoch = max(1, data["fingerprint"]["images"]["train"] // batch)  # drop_last
    return round(records[-1]["step"] / steps_per_epoch, 2) if records else 0.0


# ---------------------------------------------------------------------------------------------
# 2. cached-feature linear probe


def features(folder: Path, img_size: int) -> dict:
    """Pooled backbone features of every split at the eval transform, computed once."""
    import numpy as np
    import torch
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    model, _ = pretrained_model(0)  # num_classes=0: the model returns pooled features
    model.to(device()).eval()
    out = {}
    for split in ("train", "val", "test"):
        data = ImageFolder(folder / split, transforms(model, img_size, training=False))
        feats, labels = [], []
        with torch.inference_mode():
            for images, targets in DataLoader(data, batch_size=64):
                feats.append(model(images.to(device())).cpu().numpy())
                labels.append(targets.numpy())
        out[split] = (np.concatenate(feats), np.concatenate(labels))
    return out


def run_probe(feats: dict) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    start = time.perf_counter()
    best = None
    for c in PROBE_CS:
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000))
        clf.fit(*feats["train"])
        val = clf.score(*feats["val"])
        if best is None or val > best[0]:  # ties keep the smaller C (stronger regularisation)
            best = (val, c, clf)
    val, c, clf = best
    return dict(
        test_accuracy=float(clf.score(*feats["test"])),
        val_accuracy=float(val),
        C=c,
        fit_s=time.perf_counter() - start,
    )


# ---------------------------------------------------------------------------------------------
# 3. the plain hand-written loop at equal wall time


def run_plain(folder: Path, img_size: int, seconds: float, seed: int) -> dict:
    import torch
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    seed_everything(seed)
    dev = device()
    data = ImageFolder(folder / "train")
    model, source = pretrained_model(len(data.classes))
    data.transform = transforms(model, img_size, training=True)
    model.to(dev, memory_format=torch.channels_last).train()
    loader = DataLoader(
        data, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(seed)
    )
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    total_steps = None  # planned once the first epoch is timed; until then lr = cosine's start
    step, first_step_done = 0, 0.0
    start = time.perf_counter()
    out_of_time = False
    while not out_of_time and (total_steps is None or step < total_steps):
        for images, targets in loader:
            if total_steps is not None:
                for group in opt.param_groups:
                    group["lr"] = 1e-3 * 0.5 * (1 + math.cos(math.pi * step / total_steps))
            images = images.to(dev, memory_format=torch.channels_last)
            loss = loss_fn(model(images), targets.to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            first_step_done = first_step_done or time.perf_counter()
            out_of_time = time.perf_counter() - start >= seconds
            if out_of_time or step == total_steps:  # the time is up, mid-epoch or not
                break
        if total_steps is None:
            # the first step pays one-time set-up costs: time the epoch from the second on
            now = time.perf_counter()
            epoch_s = (now - first_step_done) / max(step - 1, 1) * len(loader)
            more = max(0, round((seconds - (now - start)) / epoch_s))
            total_steps = step + more * len(loader)
    train_s = time.perf_counter() - start
    return dict(
        test_accuracy=test_accuracy(model, folder, img_size),
        train_s=train_s,
        epochs=round(step / len(loader), 2),
        planned_epochs=total_steps / len(loader) if total_steps else 1,
        weights_source=source,
    )


# ---------------------------------------------------------------------------------------------
# 4. fastai vision_learner(...).fine_tune(E)


def run_fastai(folder: Path, img_size: int, epochs: int, seed: int) -> dict:
    from fastai.vision.all import (
        ImageDataLoaders,
        Resize,
        aug_transforms,
        get_image_files,
        set_seed,
        vision_learner,
    )

    set_seed(seed)
    dls = ImageDataLoaders.from_folder(
        folder,
        train="train",
        valid="val",
        item_tfms=Resize(img_size),
        batch_tfms=aug_transforms(),
        device=device(),
    )
    # fastai asks timm for pretrained weights, which would download them: hand timm the same
    # state dict finetune loads instead (timm drops the ImageNet classifier for num_classes=0)
    weights, _ = pretrained_model(1000)
    overlay = dict(state_dict=dict(weights.state_dict()))
    learn = vision_learner(dls, BACKBONE, pretrained=True, pretrained_cfg_overlay=overlay)
    start = time.perf_counter()
    with learn.no_bar(), learn.no_logging():
        learn.fine_tune(epochs)
    train_s = time.perf_counter() - start
    test_dl = dls.test_dl(get_image_files(folder / "test"), with_labels=True)
    with learn.no_bar():
        preds, targets = learn.get_preds(dl=test_dl)
    accuracy = float((preds.argmax(1) == targets).float().mean())
    return dict(test_accuracy=accuracy, train_s=train_s, epochs=epochs)
