import pytest
import torch

from finetune.train.metrics import (
    average_precision,
    best_thresholds,
    classification_report,
    confusion_matrix,
    roc_auc,
)


def test_confusion_matrix_and_per_class_report():
    targets = torch.tensor([0, 0, 0, 1, 1, 2])
    preds = torch.tensor([0, 0, 1, 1, 1, 1])
    logits = torch.nn.functional.one_hot(preds, 3).float()
    assert confusion_matrix(preds, targets, 3).tolist() == [[2, 1, 0], [0, 2, 0], [0, 1, 0]]
    r = classification_report(logits, targets, ("a", "b", "c"))
    assert r["accuracy"] == pytest.approx(4 / 6)
    assert r["per_class"]["a"] == pytest.approx(
        {"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3}
    )
    assert r["per_class"]["b"]["precision"] == pytest.approx(0.5)
    assert r["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert r["macro_recall"] == pytest.approx((2 / 3 + 1 + 0) / 3)


def test_ranking_metrics_match_known_values():
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    targets = torch.tensor([1, 0, 1, 0, 0, 1])
    assert average_precision(scores, targets) == pytest.approx((1 + 2 / 3 + 3 / 6) / 3)
    assert roc_auc(scores, targets) == pytest.approx(5 / 9)
    assert roc_auc(torch.tensor([0.5, 0.5]), torch.tensor([1, 0])) == pytest.approx(0.5)
    probs = torch.tensor([[0.9], [0.6], [0.4], [0.2]])
    assert best_thresholds(probs, torch.tensor([[1.0], [1.0], [0.0], [0.0]])) == pytest.approx(
        [0.6]
    )
