"""PNG plots of a run and of an evaluation: training curves, confusion matrices, ROC/PR curves,
reliability diagrams, per-label bars and the most confident mistakes.

matplotlib is imported inside each function (``finetune --help`` must not pay for it) and only
through ``matplotlib.figure.Figure`` with the Agg canvas: no pyplot, no global state, safe in
threads and on machines without a display. Every file is written atomically; each function
returns the path it wrote.

Example:
    >>> curves_png([{"epoch": 1, "train_loss": 0.7, "val_loss": 0.6}], "curves.png")  # doctest: +SKIP
    PosixPath('curves.png')
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from .._io import atomic_path

__all__ = [
    "curves_png",
    "confusion_png",
    "roc_pr_png",
    "reliability_png",
    "per_label_png",
    "mistakes_grid_png",
]

MAX_LEGEND = 12  # more curves than this: a legend would hide the plot
MAX_TICK_CHARS = 28  # longer class names are shortened on axes (kept whole in files and cards)


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(fig, path: str | os.PathLike) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)  # attaches itself to the figure: rendering without pyplot
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")  # the temporary name has no .png suffix
    return path


def _short(name: str) -> str:
    return name if len(name) <= MAX_TICK_CHARS else name[: MAX_TICK_CHARS - 1] + "…"


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray")
    ax.set_xticks([])
    ax.set_yticks([])


def _series(records: Sequence[Mapping[str, Any]], key: str) -> tuple[list, list]:
    """(epochs, values) of ``key``, leaving out epochs where it is missing or null."""
    points = [(r["epoch"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
    return [e for e, _ in points], [v for _, v in points]


def curves_png(history_records: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Loss (train and val), score (train and val accuracy, or val mAP for multi-label) and
    learning rate per epoch, from ``metrics.jsonl`` records; the best epoch is a dotted line.
    Without records (an interrupted run) the figure says so.

    Example:
        >>> curves_png([{"epoch": 1, "train_loss": 0.7, "lr": 1e-3}], "c.png")  # doctest: +SKIP
    """
    from matplotlib.ticker import MaxNLocator

    by_epoch = {r["epoch"]: r for r in history_records if isinstance(r.get("epoch"), int)}
    records = [by_epoch[e] for e in sorted(by_epoch)]  # a resumed run may repeat an epoch
    fig = _figure(13, 3.8)
    axes = fig.subplots(1, 3)
    score = "val_map" if any("val_map" in r for r in records) else "val_accuracy"
    panels = [
        ("Loss", [("train_loss", "train"), ("val_loss", "val")]),
        (  # multi-label: train accuracy is per label, validation scores mAP
            "Accuracy and mAP" if score == "val_map" else "Accuracy",
            [
                ("train_accuracy", "train accuracy" if score == "val_map" else "train"),
                (score, "val mAP" if score == "val_map" else "val"),
                (score + "_ema", "val (EMA)"),
            ],
        ),
        ("Learning rate", [("lr", "lr")]),
    ]
    best = [r["epoch"] for r in records if r.get("best")]
    for ax, (title, keys) in zip(axes, panels):
        ax.set_title(title)
        drawn = 0
        for key, label in keys:
            epochs, values = _series(records, key)
            if epochs:
                ax.plot(epochs, values, marker="o" if len(epochs) < 30 else None, label=label)
                drawn += 1
        if not drawn:
            _empty(ax, "no finished epoch yet" if not records else "not recorded")
            continue
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if best:
            ax.axvline(best[-1], color="gray", linestyle=":", label=f"best ({best[-1]})")
        if title == "Learning rate":
            _, lrs = _series(records, "lr")
            if min(lrs) > 0 and max(lrs) / min(lrs) > 50:
                ax.set_yscale("log")
        ax.legend(fontsize=8)
    return _save(fig, path)


def confusion_png(
    matrix: Sequence[Sequence[int]],
    classes: Sequence[str],
    path: str | os.PathLike,
    *,
    title: str = "Confusion matrix",
) -> Path:
    """Counts and row-normalised (recall per true class) confusion matrices side by side; rows
    are true classes, columns predictions. Cells carry numbers up to 20 classes; the figure grows
    with the class count so that up to ~30 names stay readable.

    Example:
        >>> confusion_png([[5, 1], [0, 6]], ["cat", "dog"], "cm.png")  # doctest: +SKIP
    """
    import numpy as np

    counts = np.asarray(matrix, dtype=float).reshape(len(classes), len(classes))
    support = counts.sum(1, keepdims=True)
    normalised = np.divide(counts, support, out=np.zeros_like(counts), where=support > 0)
    n = len(classes)
    side = max(3.5, 0.3 * n + 2.5)  # ~0.3 inch per class: 8 pt names stay legible up to ~30
    fig = _figure(2 * side + 1.5, side + 0.8)
    fig.suptitle(title)
    font = 10.0 if n <= 10 else 8.0 if n <= 40 else max(4.0, 320 / n)
    cell_font = font if n <= 10 else 6.5
    names = [_short(c) for c in classes]
    panels = ((counts, "counts", "{:.0f}"), (normalised, "row-normalised (recall)", "{:.2f}"))
    for ax, (values, subtitle, fmt) in zip(fig.subplots(1, 2), panels):
        top = 1.0 if values is normalised else max(values.max(), 1.0)
        image = ax.imshow(values, cmap="Blues", vmin=0, vmax=top)
        fig.colorbar(image, ax=ax, shrink=0.8)
        ax.set_title(subtitle, fontsize=10)
        rotation = dict(rotation=90, ha="center") if n > 6 else dict(rotation=45, ha="right")
        ax.set_xticks(range(n), names, fontsize=font, **rotation)
        ax.set_yticks(range(n), names, fontsize=font)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        if n <= 20:
            threshold = top / 2
            for i in range(n):
                for j in range(n):
                    colour = "white" if values[i, j] > threshold else "black"
                    text = fmt.format(values[i, j])
                    ax.text(j, i, text, ha="center", va="center", fontsize=cell_font, color=colour)
    return _save(fig, path)


def roc_pr_png(
    curves: Mapping[str, Mapping[str, Any]], path: str | os.PathLike, *, title: str = ""
) -> Path:
    """ROC (left) and precision-recall (right) curves, one per label, from
    ``finetune.train.metrics.roc_pr_curve`` results keyed by label name; the legend gives
    each label's AUC and AP. A label without positives has no curve.

    Example:
        >>> roc_pr_png({"dog": roc_pr_curve(scores, targets)}, "roc_pr.png")  # doctest: +SKIP
    """
    fig = _figure(11, 5)
    if title:
        fig.suptitle(title)
    roc, pr = fig.subplots(1, 2)
    roc.plot([0, 1], [0, 1], color="gray", linestyle=":", linewidth=1)
    for name, c in curves.items():
        if c.get("fpr"):
            roc.plot(c["fpr"], c["tpr"], label=f"{_short(name)} (AUC {c['auc']:.3f})")
        if c.get("recall"):
            pr.plot(c["recall"], c["precision"], label=f"{_short(name)} (AP {c['ap']:.3f})")
    for ax, (x, y, name) in zip(
        (roc, pr),
        (
            ("false positive rate", "true positive rate", "ROC"),
            ("recall", "precision", "Precision-recall"),
        ),
    ):
        ax.set(xlabel=x, ylabel=y, title=name, xlim=(0, 1), ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        if not ax.get_legend_handles_labels()[0]:
            ax.text(0.5, 0.5, "no label with positives", ha="center", color="gray")
        elif len(curves) <= MAX_LEGEND:
            ax.legend(fontsize=8, loc="lower right" if ax is roc else "lower left")
    return _save(fig, path)


def reliability_png(
    bins: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    *,
    ece: Optional[float] = None,
    title: str = "Reliability",
) -> Path:
    """Reliability diagram from ``finetune.train.metrics.reliability_bins``: accuracy per
    confidence bin against the diagonal of perfect calibration (red: the gap to the bin's mean
    confidence), and below it how many predictions fall in each bin.

    Example:
        >>> reliability_png(calibration(probs, targets)["bins"], "rel.png", ece=0.04)  # doctest: +SKIP
    """
    fig = _figure(5.5, 6)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    lower = [b["lower"] for b in bins]
    width = [b["upper"] - b["lower"] for b in bins]
    filled = [b["count"] > 0 for b in bins]
    acc = [b["accuracy"] if f else 0.0 for b, f in zip(bins, filled)]
    conf = [b["confidence"] if f else 0.0 for b, f in zip(bins, filled)]
    top.bar(lower, acc, width=width, align="edge", edgecolor="black", label="accuracy")
    gap = [c - a for a, c in zip(acc, conf)]
    top.bar(lower, gap, bottom=acc, width=width, align="edge", color="red", alpha=0.3, label="gap")
    top.plot([0, 1], [0, 1], color="gray", linestyle=":", label="calibrated")
    top.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
    top.set_title(title + (f" (ECE {ece:.3f})" if ece is not None else ""))
    top.legend(fontsize=8, loc="upper left")
    bottom.bar(lower, [b["count"] for b in bins], width=width, align="edge", edgecolor="black")
    bottom.set(xlabel="confidence", ylabel="predictions")
    return _save(fig, path)


def per_label_png(
    per_label: Mapping[str, Mapping[str, Any]], path: str | os.PathLike, *, title: str = ""
) -> Path:
    """Horizontal bars of each label's AP and F1 (a multi-label report's ``per_label``); a
    label whose AP is undefined (no positives) has no AP bar.

    Example:
        >>> per_label_png(report["per_label"], "per_label.png", title="val")  # doctest: +SKIP
    """
    names = list(per_label)
    fig = _figure(8, max(2.5, 0.35 * len(names) + 1.5))
    ax = fig.subplots()
    rows = range(len(names))
    for offset, key in ((-0.2, "ap"), (0.2, "f1")):
        values = [per_label[n].get(key) for n in names]
        values = [v if isinstance(v, (int, float)) and not math.isnan(v) else 0.0 for v in values]
        ax.barh([r + offset for r in rows], values, height=0.4, label=key.upper())
    ax.set_yticks(list(rows), [_short(n) for n in names])
    ax.invert_yaxis()
    ax.set(xlim=(0, 1), xlabel="score", title=title or "Per-label AP and F1")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3, axis="x")
    return _save(fig, path)


def mistakes_grid_png(
    items: Sequence[Mapping[str, Any]], path: str | os.PathLike, *, columns: int = 4
) -> Path:
    """A grid of images with their true and predicted labels and the probability of the
    prediction as each title: pass the N most confident mistakes, most confident first. Items:
    ``{"path", "true", "predicted", "probability"}``; an image that cannot be read shows as a
    blank tile. No items: the figure says there were no mistakes.

    Example:
        >>> mistakes_grid_png([{"path": "a.png", "true": "cat", "predicted": "dog",
        ...                     "probability": 0.97}], "mistakes.png")  # doctest: +SKIP
    """
    columns = max(1, min(columns, len(items)))
    rows = max(1, math.ceil(len(items) / columns))
    fig = _figure(2.6 * columns + 0.4, 2.9 * rows + 0.4)
    if not items:
        _empty(fig.subplots(), "no mistakes")
        return _save(fig, path)
    fig.suptitle("Most confident mistakes")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, item in zip(axes, items):
        thumb = _thumbnail(str(item["path"]))
        if thumb is not None:
            ax.imshow(thumb)
        ax.set_title(
            f"true: {_short(str(item['true']))}\npred: {_short(str(item['predicted']))}"
            f" ({float(item['probability']):.2f})",
            fontsize=8,
            color="firebrick",
        )
        ax.set_xlabel(_short(Path(str(item["path"])).name), fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[len(items) :]:
        ax.axis("off")
    return _save(fig, path)


def _thumbnail(path: str, size: int = 160):
    """An RGB array of the image for display (multi-band images: their first three bands,
    stretched), or None when it cannot be read."""
    import numpy as np

    from ..data.images import load_bands, load_image

    try:
        image = load_image(path)
        image.thumbnail((size, size))
        return np.asarray(image)
    except Exception:  # not a PIL image (a 13-band TIFF), or unreadable
        pass
    try:
        arr = load_bands(path, 3)[:3].permute(1, 2, 0).numpy()
    except Exception:  # the evaluation already warned about unreadable files
        return None
    low, high = float(arr.min()), float(arr.max())
    return (arr - low) / (high - low) if high > low else np.zeros_like(arr)
