"""Classification metrics: accuracy, balanced accuracy, per-class precision/recall/F1, confusion
matrix; ranking (ROC AUC, AP, their curves) and calibration (ECE, reliability bins) on torchmetrics.

torchmetrics is imported inside the functions that use it: importing it takes seconds, and a
training run only needs it for multi-label reports.

Example:
    >>> report = classification_report(logits, targets, classes=("cat", "dog"))  # doctest: +SKIP
    >>> report["accuracy"], report["per_class"]["cat"]["recall"]  # doctest: +SKIP
    >>> calibration(logits.softmax(-1), targets)["ece"]  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = [
    "confusion_matrix",
    "classification_report",
    "balanced_accuracy",
    "multilabel_report",
    "average_precision",
    "roc_auc",
    "roc_pr_curve",
    "calibration",
    "reliability_bins",
    "best_thresholds",
    "ECE_BINS",
]

ECE_BINS = 15  # equal-width confidence bins of the expected calibration error


def confusion_matrix(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``cm[true, pred]`` counts."""
    index = targets.long() * num_classes + preds.long()
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def classification_report(
    logits: torch.Tensor, targets: torch.Tensor, classes: Sequence[str]
) -> dict:
    """Overall accuracy and macro averages plus per-class precision, recall, F1 and support."""
    n = len(classes)
    cm = confusion_matrix(logits.argmax(1), targets, n).double()
    tp = cm.diag()
    support = cm.sum(1)
    predicted = cm.sum(0)
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(support > 0, tp / support.clamp(min=1), torch.zeros_like(tp))
    f1 = torch.where(
        precision + recall > 0,
        2 * precision * recall / (precision + recall).clamp(min=1e-12),
        torch.zeros_like(tp),
    )
    present = support > 0
    return {  # macro_recall over the classes present is the balanced accuracy
        "accuracy": float(tp.sum() / cm.sum().clamp(min=1)),
        "macro_recall": float(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "num_samples": int(cm.sum()),
        "per_class": {
            c: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, c in enumerate(classes)
        },
        "confusion_matrix": cm.long().tolist(),
    }


def balanced_accuracy(matrix: Sequence[Sequence[int]] | torch.Tensor) -> float:
    """Mean recall over the classes present (rows with samples) of a ``cm[true, pred]`` matrix,
    as scikit-learn's ``balanced_accuracy_score``.

    Example:
        >>> balanced_accuracy([[2, 1], [0, 1]])
        0.8333333333333333
    """
    cm = torch.as_tensor(matrix, dtype=torch.float64)
    support = cm.sum(1)
    present = support > 0
    if not bool(present.any()):
        return 0.0
    return float((cm.diag()[present] / support[present]).mean())


def average_precision(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Area under the precision-recall curve of one label (NaN without positives); torchmetrics'
    ``binary_average_precision``, which groups tied scores as scikit-learn does.

    Example:
        >>> average_precision(torch.tensor([0.9, 0.2]), torch.tensor([1, 0]))
        1.0
    """
    from torchmetrics.functional.classification import binary_average_precision

    if not bool(targets.bool().any()):  # torchmetrics would warn and return 0
        return float("nan")
    return float(binary_average_precision(_scores(scores), targets.long()))


def roc_auc(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """ROC AUC of one label (ties count one half; NaN when only one side is present);
    torchmetrics' ``binary_auroc``.

    Example:
        >>> roc_auc(torch.tensor([0.9, 0.2]), torch.tensor([1, 0]))
        1.0
    """
    from torchmetrics.functional.classification import binary_auroc

    pos = targets.bool()
    if bool(pos.all()) or not bool(pos.any()):
        return float("nan")
    return float(binary_auroc(_scores(scores), targets.long()))


def roc_pr_curve(scores: torch.Tensor, targets: torch.Tensor) -> dict:
    """ROC and precision-recall curves of one label, with their areas: ``{"fpr", "tpr", "auc",
    "precision", "recall", "ap", "support"}`` (lists of floats; each curve empty when its area is
    NaN: no positive, or for ROC no negative).

    Example:
        >>> roc_pr_curve(torch.tensor([0.9, 0.2]), torch.tensor([1, 0]))["tpr"]
        [0.0, 1.0, 1.0]
    """
    from torchmetrics.functional.classification import binary_precision_recall_curve, binary_roc

    x, y = _scores(scores), targets.long().cpu()
    auc, ap = roc_auc(x, y), average_precision(x, y)
    out: dict = {"fpr": [], "tpr": [], "auc": auc, "precision": [], "recall": []}
    out.update(ap=ap, support=int(y.sum()))
    if auc == auc:
        fpr, tpr, _ = binary_roc(x, y)
        out.update(fpr=fpr.tolist(), tpr=tpr.tolist())
    if ap == ap:
        precision, recall, _ = binary_precision_recall_curve(x, y)
        out.update(precision=precision.tolist(), recall=recall.tolist())
    return out


def reliability_bins(
    confidences: torch.Tensor, hits: torch.Tensor, n_bins: int = ECE_BINS
) -> list[dict]:
    """Equal-width confidence bins: ``{"lower", "upper", "count", "confidence", "accuracy"}``
    each (mean confidence and fraction of hits of the samples in the bin; 0 for an empty bin).
    A confidence of exactly 1 falls in the last bin.

    Example:
        >>> reliability_bins(torch.tensor([0.95, 0.9]), torch.tensor([1, 0]), 10)[9]["accuracy"]
        0.5
    """
    conf = confidences.detach().float().cpu()
    hit = hits.detach().float().cpu()
    # float32 boundaries and bucketize, as torchmetrics bins them: the same samples per bin
    edges = torch.linspace(0, 1, n_bins + 1, dtype=conf.dtype)
    index = (torch.bucketize(conf, edges, right=True) - 1).clamp(0, n_bins - 1)
    count = torch.bincount(index, minlength=n_bins).double()
    conf_sum = torch.bincount(index, weights=conf.double(), minlength=n_bins)
    hit_sum = torch.bincount(index, weights=hit.double(), minlength=n_bins)
    safe = count.clamp(min=1)
    return [
        {
            "lower": i / n_bins,
            "upper": (i + 1) / n_bins,
            "count": int(count[i]),
            "confidence": round(float(conf_sum[i] / safe[i]), 6),
            "accuracy": round(float(hit_sum[i] / safe[i]), 6),
        }
        for i in range(n_bins)
    ]


def calibration(probs: torch.Tensor, targets: torch.Tensor, *, multilabel: bool = False) -> dict:
    """Expected calibration error (15 bins, L1; torchmetrics) and the reliability bins.

    Single-label: confidence is the top probability and a hit a correct top-1 prediction
    (``multiclass_calibration_error``). Multi-label: every (image, label) probability against
    whether the label is present (``binary_calibration_error``).

    Example:
        >>> calibration(torch.tensor([[0.8, 0.2], [0.3, 0.7]]), torch.tensor([0, 0]))["ece"]
        0.45
    """
    from torchmetrics.functional.classification import (
        binary_calibration_error,
        multiclass_calibration_error,
    )

    probs = probs.detach().float().cpu()
    if multilabel:
        conf, hits = probs.flatten(), targets.flatten().long().cpu()
        ece = binary_calibration_error(conf, hits, n_bins=ECE_BINS, norm="l1")
    else:
        targets = targets.long().cpu()
        conf, pred = probs.max(1)
        hits = (pred == targets).long()
        ece = multiclass_calibration_error(
            probs, targets, num_classes=probs.shape[1], n_bins=ECE_BINS, norm="l1"
        )
    return {"ece": round(float(ece), 6), "bins": reliability_bins(conf, hits)}


def _scores(scores: torch.Tensor) -> torch.Tensor:
    # torchmetrics applies a sigmoid to scores outside [0, 1]: harmless for a ranking, but a
    # double tensor keeps ties that float32 would create
    return scores.detach().double().cpu()


def best_thresholds(probs: torch.Tensor, targets: torch.Tensor) -> list[float]:
    """Per label, the probability threshold with the best F1 on these samples (0.5 without
    positives). Chosen on validation data, stored in config.json, applied by predict."""
    out = []
    for j in range(probs.shape[1]):
        p, t = probs[:, j].double(), targets[:, j].double()
        if t.sum() == 0:
            out.append(0.5)
            continue
        order = p.argsort(descending=True)  # predicting the top k positive, for every k
        p, t = p[order], t[order]
        tp = t.cumsum(0)
        last_of_tie = torch.ones_like(p, dtype=torch.bool)
        last_of_tie[:-1] = p[:-1] != p[1:]  # a threshold includes all equal scores
        k = torch.arange(1, len(p) + 1, dtype=torch.float64)
        f1 = torch.where(last_of_tie, 2 * tp / (k + t.sum()), torch.zeros_like(tp))
        out.append(float(p[int(f1.argmax())]))
    return out


def multilabel_report(
    logits: torch.Tensor,
    targets: torch.Tensor,
    classes: Sequence[str],
    thresholds: Sequence[float] | None = None,
) -> dict:
    """Per-label AUC, AP, F1 (at ``thresholds``, default 0.5) and support; mAP, macro AUC,
    macro/micro F1."""
    probs = logits.float().sigmoid()
    thresholds = list(thresholds) if thresholds is not None else [0.5] * len(classes)
    pred = probs >= torch.tensor(thresholds)[None, :]
    truth = targets.bool()
    per_label = {}
    for j, name in enumerate(classes):
        tp = int((pred[:, j] & truth[:, j]).sum())
        fp = int((pred[:, j] & ~truth[:, j]).sum())
        fn = int((~pred[:, j] & truth[:, j]).sum())
        per_label[name] = {
            "auc": roc_auc(probs[:, j], truth[:, j]),
            "ap": average_precision(probs[:, j], truth[:, j]),
            "precision": tp / (tp + fp) if tp + fp else 0.0,
            "recall": tp / (tp + fn) if tp + fn else 0.0,
            "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
            "support": int(truth[:, j].sum()),
            "threshold": thresholds[j],
        }

    def mean(key):
        # None, not 0.0, when no label defines it (no positives): an undefined score is not a bad one
        values = [v[key] for v in per_label.values() if v["support"] and v[key] == v[key]]
        return sum(values) / len(values) if values else None

    tp = int((pred & truth).sum())
    micro_den = int(pred.sum()) + int(truth.sum())
    return {
        "mAP": mean("ap"),
        "macro_auc": mean("auc"),
        "macro_f1": mean("f1"),
        "micro_f1": 2 * tp / micro_den if micro_den else 0.0,
        "label_accuracy": float((pred == truth).float().mean()),
        "num_samples": int(len(targets)),
        "per_label": per_label,
    }
