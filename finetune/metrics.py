"""Classification metrics from logits: accuracy, per-class precision/recall/F1, confusion matrix.

Example:
    >>> report = classification_report(logits, targets, classes=("cat", "dog"))  # doctest: +SKIP
    >>> report["accuracy"], report["per_class"]["cat"]["recall"]  # doctest: +SKIP
"""
from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["confusion_matrix", "classification_report", "report_table"]


def confusion_matrix(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``cm[true, pred]`` counts."""
    index = targets.long() * num_classes + preds.long()
    return torch.bincount(index, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def classification_report(logits: torch.Tensor, targets: torch.Tensor, classes: Sequence[str]
                          ) -> dict:
    """Overall accuracy and macro averages plus per-class precision, recall, F1 and support."""
    n = len(classes)
    cm = confusion_matrix(logits.argmax(1), targets, n).double()
    tp = cm.diag()
    support = cm.sum(1)
    predicted = cm.sum(0)
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(support > 0, tp / support.clamp(min=1), torch.zeros_like(tp))
    f1 = torch.where(precision + recall > 0,
                     2 * precision * recall / (precision + recall).clamp(min=1e-12),
                     torch.zeros_like(tp))
    present = support > 0
    return {
        "accuracy": float(tp.sum() / cm.sum().clamp(min=1)),
        "macro_recall": float(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "num_samples": int(cm.sum()),
        "per_class": {
            c: {"precision": float(precision[i]), "recall": float(recall[i]),
                "f1": float(f1[i]), "support": int(support[i])}
            for i, c in enumerate(classes)
        },
        "confusion_matrix": cm.long().tolist(),
    }


def report_table(report: dict, title: str):
    """A rich table of a ``classification_report``."""
    from rich.table import Table

    table = Table(title=f"{title}: accuracy {report['accuracy']:.4f} "
                        f"(macro recall {report['macro_recall']:.4f}, n={report['num_samples']})")
    for col in ("class", "precision", "recall", "f1", "support"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for name, row in report["per_class"].items():
        table.add_row(name, f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}",
                      str(row["support"]))
    return table
