import pytest
import torch

from finetune.train.metrics import classification_report, confusion_matrix


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
