"""Knowledge distillation from a finished run (``train.teacher``; Hinton et al. 2015).

The teacher scores every training image once, before the first step, with its own
preprocessing (its image size, its crop); each image's target becomes
``distill * teacher probabilities + (1 - distill) * label`` (the label smoothed as the loss
would smooth it), and the run trains on those soft targets. Where the teacher's top class is
not the label, its probabilities of the two swap first (knowledge adjustment, Wen et al.
2019): the student learns how sure the teacher was and which classes it found alike, not the
teacher's mistakes. (Measured: on elpv, where a short teacher misses a quarter of the
defective cells it trained on, ahead of the plain mix in 6 of 6 pairs, +1.1 points; on
Fashion-MNIST, 5 % wrong, level, -0.2; docs/benchmarks.md.) Scoring once instead of at every
step costs one inference pass (seconds on a CPU for a few thousand images) rather than a
teacher forward per step; the crops of a short fine-tune keep most of the image (80 %), so
the teacher's view of the whole image stays a fair target for them.

``finetune tune``'s final trial uses it: the trial whose config it retrains teaches it.

Example:
    >>> targets = teacher_targets("runs/big", ["a.png", "b.png"], [0, 1], classes=("a", "b"),
    ...                           weight=0.5, smoothing=0.1)  # doctest: +SKIP
    >>> targets.shape  # doctest: +SKIP
    torch.Size([2, 2])
"""

from __future__ import annotations

import os
import time
from functools import partial
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from safetensors.torch import load_file, save_file

from ._io import TARGETS_NAME, WEIGHTS_NAME, atomic_path, read_run_config
from .errors import ConfigError
from .events import emit
from .inference import image_logits, load_for_inference
from .train.distributed import DistInfo, all_reduce_tensor

__all__ = [
    "check_teacher",
    "teacher_targets",
    "adjust_to_labels",
    "attach_teacher",
    "saved_targets",
]

CHUNK = 512  # images held at once while a user Dataset's PIL images are scored


def check_teacher(teacher: str | os.PathLike, *, classes: Sequence[str], multilabel: bool) -> None:
    """Fail before training when ``teacher`` is no finished run of the same classes.

    Example:
        >>> check_teacher("runs/big", classes=("cat", "dog"), multilabel=False)  # doctest: +SKIP
    """
    path = Path(teacher)
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"train.teacher {teacher}: no finished run there (config.json missing); give the "
            "run directory of a finished finetune run"
        )
    if not (path / WEIGHTS_NAME).is_file():  # found here, before the student's run directory
        raise ConfigError(
            f"train.teacher {teacher}: no {WEIGHTS_NAME} (the run has no saved weights yet); "
            "give a finished run"
        )
    config = read_run_config(path)
    labels = tuple(config.get("label_names") or ())
    if labels != tuple(classes):
        raise ConfigError(
            f"train.teacher {teacher}: it was trained on the classes {list(labels)}, this data "
            f"has {list(classes)}; a teacher needs the same classes in the same order"
        )
    if bool(config.get("finetune", {}).get("multi_label")) != multilabel:
        kind = "multi-label" if multilabel else "single-label"
        raise ConfigError(f"train.teacher {teacher}: this data is {kind} and the teacher is not")


def teacher_targets(
    teacher: str | os.PathLike,
    images: Sequence[Any],
    labels: Sequence[Any],
    *,
    classes: Sequence[str],
    weight: float,
    smoothing: float,
    multilabel: bool = False,
    device: str = "cpu",
    dist: DistInfo = DistInfo(),
) -> torch.Tensor:
    """(images, classes) float targets: the teacher's probabilities mixed with the labels.

    ``images`` are file paths, PIL images, or callables returning one (a user Dataset's item,
    read when its chunk is scored); ``labels`` class indices (multi-label: tuples of them). An
    image the teacher cannot read keeps its label alone (the run skips it anyway). Under
    torchrun (``dist``) each process scores every world-th image and the rows are summed over
    the processes, so the pass takes 1/world of the time and every process gets all targets.
    """
    run = load_for_inference(teacher, device=device)
    n, c = len(images), len(classes)
    hard = torch.zeros(n, c)
    for row, label in enumerate(labels):
        hard[row, list(label) if multilabel else int(label)] = 1.0
    if not multilabel:  # the soft-target loss does not smooth: smooth the label's part here
        hard = hard * (1 - smoothing) + smoothing / c
    scored = torch.zeros(n, c + 1)  # this process's rows: probabilities, then 1 where scored
    mine = range(dist.rank, n, dist.world)
    for start in range(0, len(mine), CHUNK):
        rows, chunk = [], []
        for row in mine[start : start + CHUNK]:
            image = images[row]() if callable(images[row]) else images[row]
            if image is not None:
                rows.append(row)
                chunk.append(image)
        kept, logits = image_logits(run, chunk, title="Teacher")
        rows = [rows[k] for k in kept]
        scored[rows, :c] = logits.sigmoid() if multilabel else logits.softmax(-1)
        scored[rows, c] = 1.0
    scored = all_reduce_tensor(scored, dist, device)
    probs = torch.where(scored[:, c:] > 0, scored[:, :c], hard)
    if not multilabel:
        labels_ = hard.argmax(1)
        wrong = int((probs.argmax(1) != labels_).sum())
        if wrong:
            emit("info", f"teacher {teacher}: its top class is not the label on {wrong:,} of "
                 f"{n:,} training images; there the two probabilities swap (knowledge "
                 "adjustment)")  # fmt: skip
        probs = adjust_to_labels(probs, labels_)
    return weight * probs + (1 - weight) * hard


def adjust_to_labels(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Rows of ``probs`` whose top class is not ``labels`` get the two probabilities swapped, so
    the label is the top class and the rest of the row is kept (Wen et al. 2019, "Preparing
    lessons: improve knowledge distillation with better supervision").

    Example:
        >>> adjust_to_labels(torch.tensor([[0.7, 0.2, 0.1]]), torch.tensor([1]))
        tensor([[0.2000, 0.7000, 0.1000]])
    """
    probs = probs.clone()
    rows = torch.arange(len(probs))
    top = probs.argmax(1)
    p_label, p_top = probs[rows, labels], probs[rows, top]
    probs[rows, top] = p_label
    probs[rows, labels] = p_top  # where top == label this writes the same value back
    return probs


def attach_teacher(
    train_set, cfg, data, device, dist: DistInfo = DistInfo(), *, run_dir=None, resume=False
) -> None:
    """Give the training split's dataset (``ImageFileDataset``, or the subset of a user's
    Dataset) its teacher targets, saying what that cost (under torchrun: the processes share
    the pass). The targets are kept in ``run_dir`` (``TARGETS_NAME``); a resumed run reads them
    back instead of scoring again, so it trains on the targets it started with even if the
    teacher's run changed or was deleted since. Regression: a resume scored the teacher again,
    and a teacher retrained in between silently changed the targets half-way through a run."""
    start = time.perf_counter()
    n, teacher = len(data.train), cfg.train.teacher
    saved = saved_targets(run_dir) if resume else None
    if saved is not None:
        train_set.set_targets(_read_targets(saved, n, len(data.classes)))
        emit("info", f"teacher {teacher}: its probabilities on {n:,} training images read back "
             f"from {saved} (scored when the run started)")  # fmt: skip
        return
    if hasattr(train_set, "indices"):  # a user Dataset: its images, read chunk by chunk
        images = [partial(_user_image, train_set.dataset, i) for i in train_set.indices]
    else:
        images = [path for path, _ in train_set.samples]
    targets = teacher_targets(
        teacher, images, [label for _, label in data.train], classes=data.classes,
        weight=cfg.train.distill, smoothing=cfg.optim.label_smoothing,
        multilabel=data.multilabel, device=str(device), dist=dist,
    )  # fmt: skip
    train_set.set_targets(targets)
    if run_dir is not None and dist.is_main:
        with atomic_path(Path(run_dir) / TARGETS_NAME) as tmp:
            save_file({"targets": targets.contiguous()}, tmp, metadata={"teacher": str(teacher)})
    emit("info", f"teacher {teacher}: its probabilities on {len(images):,} training "
         f"images ({time.perf_counter() - start:.0f} s), weight {cfg.train.distill:g} against "
         "the labels")  # fmt: skip


def saved_targets(run_dir) -> Optional[Path]:
    """The teacher targets a run kept (``TARGETS_NAME``), or None (none kept, or no run)."""
    path = None if run_dir is None else Path(run_dir) / TARGETS_NAME
    return path if path is not None and path.is_file() else None


def _read_targets(path: Path, n: int, c: int) -> torch.Tensor:
    """The kept targets, checked against the training split they were scored for."""
    why, targets = None, None
    try:
        targets = load_file(str(path)).get("targets")
    except Exception as e:  # safetensors raises its own error types on a damaged header
        why = f"unreadable ({type(e).__name__})"
    if why is None and targets is None:
        why = "no 'targets' tensor"
    elif why is None and tuple(targets.shape) != (n, c):
        why = (f"shape {tuple(targets.shape)} where {n:,} training images and {c} classes "
               f"need ({n}, {c})")  # fmt: skip
    elif why is None and not (
        targets.dtype.is_floating_point and bool(((targets >= 0) & (targets <= 1)).all())
    ):  # NaN fails both comparisons
        why = "values that are not probabilities (0-1)"
    if why is not None:
        raise ConfigError(
            f"{path}: {why}; delete the file to score the teacher again, or start a new run"
        )
    return targets


def _user_image(dataset, index: int):
    """Item ``index`` of a user's Dataset as the teacher takes it (None: it does not load)."""
    try:
        image = dataset[index][0]
    except Exception:  # the run's own loader reports the item when it fails there too
        return None
    if isinstance(image, torch.Tensor):
        raise ConfigError(
            "train.teacher: this Dataset gives tensors, which the teacher cannot preprocess "
            "as it was trained; give PIL images or image files"
        )
    return image
