"""Classification metrics from logits: accuracy, per-class precision/recall/F1, confusion matrix.

Example:
    >>> report = classification_report(logits, targets, classes=("cat", "dog"))  # doctest: +SKIP
    >>> report["accuracy"], report["per_class"]["cat"]["recall"]  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = [
    "confusion_matrix",
    "classification_report",
    "multilabel_report",
    "average_precision",
    "roc_auc",
    "best_thresholds",
]


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
    return {
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


def average_precision(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Area under the precision-recall curve of one label (NaN without positives)."""
    positives = float(targets.sum())
    if positives == 0:
        return float("nan")
    hits = targets[scores.argsort(descending=True)].double()
    precision = hits.cumsum(0) / torch.arange(1, len(hits) + 1, dtype=torch.float64)
    return float((precision * hits).sum() / positives)


def roc_auc(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """ROC AUC of one label (Mann-Whitney U with average ranks for ties; NaN if one-sided)."""
    pos = targets.bool()
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    sorted_scores, order = scores.double().sort()
    _, inverse, counts = torch.unique_consecutive(
        sorted_scores, return_inverse=True, return_counts=True
    )
    ends = counts.cumsum(0).double()
    average_rank = (ends - (counts.double() - 1) / 2)[inverse]
    ranks = torch.empty_like(average_rank)
    ranks[order] = average_rank
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


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
        values = [v[key] for v in per_label.values() if v["support"] and v[key] == v[key]]
        return sum(values) / len(values) if values else 0.0

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
