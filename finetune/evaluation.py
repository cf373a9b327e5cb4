"""``evaluate``: score a run directory on labelled images and write the evaluation's files.

Data: a class folder (``DIR/<class>/*``), a folder with a ``test/`` split (only ``test/`` is
used), or a CSV manifest (single- or multi-label; with a ``split`` column only its ``test`` rows
when there are any). Images go through ``finetune.inference.image_logits``: the run's model and
evaluation transform, exactly as ``predict`` uses them, with optional test-time augmentation.

Files (under ``output``, default ``RUN_DIR/eval-<data name>``): ``eval.json`` (every number),
``predictions.csv`` (path, true, predicted, probability, correct), ``confusion.png`` (multi-label:
``per_label.png``), ``reliability.png``, ``roc_pr.png`` (binary and multi-label), ``mistakes.png``.

Example:
    >>> report = evaluate("runs/my-run", "holdout/", tta=True)  # doctest: +SKIP
    >>> report.accuracy, report.ece, report.files["confusion"]  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from ._io import atomic_path
from .data.folder import DataInfo, scan_folder
from .data.manifest import scan_csv
from .errors import DataError
from .inference import LoadedRun, image_logits, load_for_inference
from .report import plots
from .train.metrics import (
    balanced_accuracy,
    calibration,
    classification_report,
    multilabel_report,
    roc_pr_curve,
)

__all__ = ["evaluate", "EvalReport", "EVAL_JSON", "PREDICTIONS_CSV"]

EVAL_JSON = "eval.json"
PREDICTIONS_CSV = "predictions.csv"


@dataclass(frozen=True)
class EvalReport:
    """What ``evaluate`` measured and where it wrote it. ``report`` is the content of
    ``eval.json``; ``files`` maps ``eval``, ``predictions``, ``confusion`` (or ``per_label``),
    ``reliability``, ``roc_pr`` (binary and multi-label) and ``mistakes`` to their paths."""

    run_dir: Path
    data: str
    split: str  # "test" (a test/ folder or the CSV's test rows) or "all"
    output: Path
    num_images: int
    tta: bool
    multilabel: bool
    classes: tuple[str, ...]
    accuracy: float  # top-1; multi-label: exact match (every label right)
    balanced_accuracy: Optional[float]  # mean recall of the classes present; None multi-label
    macro_f1: float
    ece: float
    mAP: Optional[float] = None  # multi-label
    macro_auc: Optional[float] = None  # binary and multi-label
    report: dict = field(default_factory=dict, repr=False)
    files: dict = field(default_factory=dict)


def evaluate(
    run_dir: str | os.PathLike,
    data: str | os.PathLike,
    *,
    output: Optional[str | os.PathLike] = None,
    tta: bool = False,
    batch_size: int = 32,
    device: str = "cpu",
    top_mistakes: int = 16,
) -> EvalReport:
    """Score the run on labelled images; write eval.json, predictions.csv and the plots.

    Classes in the data that the model does not know are a ``ValueError`` naming them; classes
    the model knows but the data lacks are fine. ``tta``: average each image's probabilities with
    those of its horizontal mirror. ``top_mistakes``: how many of the most confident mistakes
    ``mistakes.png`` shows (0: no such file).

    Example:
        >>> evaluate("runs/my-run", "data/labels.csv", output="eval-out").macro_f1  # doctest: +SKIP
    """
    run = load_for_inference(run_dir, device)
    info, samples, split = _scan(Path(data))
    _warn_if_trained_on(run, Path(data), split)
    paths, targets = _targets(run, info, samples, data)
    kept, logits = image_logits(run, paths, batch_size=batch_size, tta=tta, title="Evaluating")
    if not kept:
        raise DataError(f"{data}: none of the {len(paths)} images could be read")
    unread = set(range(len(paths))) - set(kept)  # files the scan passed but decoding failed
    skipped = sorted({p for p, _ in info.skipped} | {str(paths[i]) for i in unread})
    paths, targets = [paths[i] for i in kept], targets[kept]
    out = Path(output) if output is not None else Path(run_dir) / f"eval-{_data_name(Path(data))}"
    out.mkdir(parents=True, exist_ok=True)
    scorer = _score_multilabel if run.multilabel else _score_single
    report, rows, mistakes, curves = scorer(run, logits, targets, paths)
    report = {
        "run_dir": str(run_dir),
        "data": str(data),
        "split": split,
        "num_images": len(paths),
        "tta": tta,
        "multilabel": run.multilabel,
        "classes": list(run.labels),
        **report,
        "skipped": skipped,
    }
    files = _write_files(out, run, report, rows, mistakes[:top_mistakes], curves, top_mistakes)
    return EvalReport(
        run_dir=Path(run_dir),
        data=str(data),
        split=split,
        output=out,
        num_images=len(paths),
        tta=tta,
        multilabel=run.multilabel,
        classes=run.labels,
        accuracy=report["accuracy"],
        balanced_accuracy=report.get("balanced_accuracy"),
        macro_f1=report["macro_f1"],
        ece=report["ece"],
        mAP=report.get("mAP"),
        macro_auc=report.get("macro_auc"),
        report=report,
        files=files,
    )


def _scan(data: Path) -> tuple[DataInfo, list, str]:
    """The scan, the samples to evaluate and which part they are ("test" or "all").
    ``report_only``: a holdout folder with one class, or an empty class folder, is a fine
    evaluation set (a run needs two classes, an evaluation does not)."""
    if data.is_file():
        info = scan_csv(data, val_split=0.0, report_only=True)
        if info.test:
            return info, list(info.test), "test"
    elif not data.is_dir():
        raise FileNotFoundError(f"evaluation data not found: {data}")
    elif (data / "test").is_dir():  # scanned as a class folder of its own: every image counts
        info = scan_folder(data / "test", val_split=0.0, report_only=True)
        return info, list(info.train), "test"
    else:
        info = scan_folder(data, val_split=0.0, report_only=True)
    return info, list(info.train + info.val + info.test), "all"


def _warn_if_trained_on(run: LoadedRun, data: Path, split: str) -> None:
    """Regression (review): evaluating the run's own data folder scored its training images
    without a word. The run records its data root; a test/ split of it is held out."""
    ft = run.config.get("finetune", {})
    root = ft.get("data", {}).get("root")
    # a refit (data.train_on_val, tune's final trial) trained on root/val too
    refit = ft.get("config", {}).get("data", {}).get("train_on_val")
    own = {Path(root).resolve()} if root and split == "all" else set()
    own |= {(Path(root) / "val").resolve()} if root and refit else set()
    if data.resolve() in own:
        warnings.warn(f"{data} is the data {run.run_dir} trained on: these scores include "
                      "training images and are optimistic; evaluate held-out images (a test/ "
                      "split or another folder)")  # fmt: skip


def _data_name(data: Path) -> str:
    return data.stem if data.is_file() else data.resolve().name


def _targets(run: LoadedRun, info: DataInfo, samples: list, data) -> tuple[list, torch.Tensor]:
    """(paths, targets in the model's class order): class indices, or multi-hot rows for a
    multi-label run. Unknown classes and a single/multi-label mismatch are clear errors."""
    if not samples:
        raise DataError(f"{data}: no images to evaluate" + _first(info.errors))
    if info.multilabel != run.multilabel:
        kinds = ("multi-label", "single-label")
        raise ValueError(
            f"{data} is {kinds[not info.multilabel]} data but {run.run_dir} is a "
            f"{kinds[not run.multilabel]} model"
        )
    used = sorted({i for _, y in samples for i in (y if info.multilabel else (y,))})
    unknown = [info.classes[i] for i in used if info.classes[i] not in run.labels]
    if unknown:
        raise ValueError(
            f"{data}: {len(unknown)} class{'es' if len(unknown) > 1 else ''} the model does not "
            f"know: {', '.join(unknown)} (the model's classes: {', '.join(run.labels)})"
        )
    index = {c: run.labels.index(c) for c in info.classes if c in run.labels}
    paths = [p for p, _ in samples]
    if not run.multilabel:
        targets = torch.tensor([index[info.classes[y]] for _, y in samples], dtype=torch.long)
        return paths, targets
    targets = torch.zeros(len(samples), len(run.labels))
    for row, (_, labels) in enumerate(samples):
        for i in labels:
            targets[row, index[info.classes[i]]] = 1.0
    return paths, targets


def _first(errors) -> str:
    return f" ({errors[0]})" if errors else ""


def _score_single(run: LoadedRun, logits, targets, paths):
    """eval.json numbers, prediction rows, mistakes (most confident first) and ROC/PR curves
    (binary only) of a single-label run."""
    probs = logits.softmax(-1)
    report = classification_report(logits, targets, run.labels)
    del report["num_samples"]  # eval.json says num_images
    matrix = report.pop("confusion_matrix")
    per_class = report.pop("per_class")
    curves = {}
    if len(run.labels) == 2:  # one-vs-rest curves of each class
        for i, name in enumerate(run.labels):
            curves[name] = roc_pr_curve(probs[:, i], (targets == i).long())
            per_class[name].update(auc=curves[name]["auc"], ap=curves[name]["ap"])
        report["macro_auc"] = curves[run.labels[1]]["auc"]
    top_p, pred = probs.max(1)
    rows, mistakes = [], []
    for path, t, p, conf in zip(paths, targets.tolist(), pred.tolist(), top_p.tolist()):
        row = dict(path=str(path), true=run.labels[t], predicted=run.labels[p])
        row.update(probability=round(conf, 6), correct=t == p)
        rows.append(row)
        if t != p:
            mistakes.append(row)
    mistakes.sort(key=lambda r: -r["probability"])
    report.update(
        balanced_accuracy=balanced_accuracy(matrix),
        **calibration(probs, targets),
        per_class=per_class,
        confusion_matrix=matrix,
        confusion_matrix_normalized=_row_normalised(matrix),
    )
    report["reliability_bins"] = report.pop("bins")
    report["missing_classes"] = [c for c, v in per_class.items() if not v["support"]]
    return report, rows, mistakes, curves


def _score_multilabel(run: LoadedRun, logits, targets, paths):
    """The same for a multi-label run: per-label AUC, AP, F1 at the run's thresholds; a mistake
    is an image with any label wrong, as confident as its most confident wrong decision."""
    probs = logits.sigmoid()
    thresholds = run.thresholds or [0.5] * len(run.labels)
    report = multilabel_report(logits, targets, run.labels, thresholds)
    del report["num_samples"]
    chosen = probs >= torch.tensor(thresholds)[None, :]
    truth = targets.bool()
    curves = {
        name: roc_pr_curve(probs[:, j], truth[:, j].long()) for j, name in enumerate(run.labels)
    }
    wrong_conf = torch.where(chosen != truth, torch.where(chosen, probs, 1 - probs), 0.0)
    rows, mistakes = [], []
    for k, path in enumerate(paths):
        true = ";".join(n for n, t in zip(run.labels, truth[k].tolist()) if t)
        pred = ";".join(n for n, c in zip(run.labels, chosen[k].tolist()) if c)
        correct = true == pred
        probability = float(wrong_conf[k].max()) if not correct else float(probs[k].max())
        row = dict(path=str(path), true=true, predicted=pred)
        row.update(probability=round(probability, 6), correct=correct)
        row.update({f"prob_{n}": round(float(p), 6) for n, p in zip(run.labels, probs[k])})
        rows.append(row)
        if not correct:
            mistakes.append(row)
    mistakes.sort(key=lambda r: -r["probability"])
    cal = calibration(probs, targets, multilabel=True)
    report.update(
        accuracy=float((chosen == truth).all(1).float().mean()),
        ece=cal["ece"],
        reliability_bins=cal["bins"],
        thresholds=list(thresholds),
        missing_classes=[n for n, v in report["per_label"].items() if not v["support"]],
    )
    return report, rows, mistakes, curves


def _row_normalised(matrix: list[list[int]]) -> list[list[float]]:
    return [[round(v / sum(row), 6) if sum(row) else 0.0 for v in row] for row in matrix]


def _write_files(out: Path, run, report, rows, mistakes, curves, top_mistakes) -> dict[str, Path]:
    files = {"eval": out / EVAL_JSON, "predictions": out / PREDICTIONS_CSV}
    with atomic_path(files["eval"]) as tmp:
        Path(tmp).write_text(json.dumps(_finite(report), indent=2, allow_nan=False))
    with atomic_path(files["predictions"]) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    what = "TTA, " if report["tta"] else ""
    data = Path(report["data"]).name
    title = f"{run.run_dir.name} on {data} ({what}{report['num_images']} images)"
    if run.multilabel:
        files["per_label"] = plots.per_label_png(
            report["per_label"], out / "per_label.png", title=title
        )
    else:
        files["confusion"] = plots.confusion_png(
            report["confusion_matrix"], run.labels, out / "confusion.png", title=title
        )
    files["reliability"] = plots.reliability_png(
        report["reliability_bins"], out / "reliability.png", ece=report["ece"]
    )
    if curves:
        files["roc_pr"] = plots.roc_pr_png(curves, out / "roc_pr.png", title=title)
    if top_mistakes > 0:
        files["mistakes"] = plots.mistakes_grid_png(mistakes, out / "mistakes.png")
    return files


def _finite(value: Any) -> Any:
    """NaN (an AUC without positives) as null: eval.json is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
