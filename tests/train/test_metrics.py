"""Metrics: classification report, ranking (AUC, AP, curves) against scikit-learn,
multi-label report, balanced accuracy, calibration (ECE and reliability bins)."""

import math

import pytest
import torch

from finetune.train.metrics import (
    average_precision,
    balanced_accuracy,
    best_thresholds,
    calibration,
    classification_report,
    confusion_matrix,
    multilabel_report,
    roc_auc,
    roc_pr_curve,
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


def test_ranking_metrics_equal_scikit_learn_with_ties_and_nan_without_positives():
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    gen = torch.Generator().manual_seed(0)
    scores = (torch.rand(200, generator=gen) * 10).round() / 10  # many ties
    targets = (torch.rand(200, generator=gen) < scores).long()
    assert roc_auc(scores, targets) == pytest.approx(roc_auc_score(targets, scores))
    assert average_precision(scores, targets) == pytest.approx(
        average_precision_score(targets, scores)
    )
    curve = roc_pr_curve(scores, targets)
    fpr, tpr, _ = roc_curve(targets, scores, drop_intermediate=False)
    assert curve["fpr"] == pytest.approx(fpr.tolist()) and curve["tpr"] == pytest.approx(tpr)
    assert curve["auc"] == pytest.approx(roc_auc_score(targets, scores))
    assert curve["support"] == int(targets.sum()) and len(curve["precision"]) > 2
    none = torch.zeros(5, dtype=torch.long)
    assert math.isnan(average_precision(scores[:5], none)) and math.isnan(roc_auc(scores[:5], none))
    assert math.isnan(roc_auc(scores[:5], none + 1))
    empty = roc_pr_curve(scores[:5], none)
    assert empty["fpr"] == [] and empty["recall"] == [] and math.isnan(empty["ap"])


def test_multilabel_report_equals_scikit_learn_and_keeps_its_keys():
    from sklearn.metrics import average_precision_score, roc_auc_score

    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(40, 3, generator=gen)
    targets = (torch.rand(40, 3, generator=gen) < 0.4).float()
    targets[:, 2] = 0  # a label without positives: NaN AUC and AP, left out of the means
    r = multilabel_report(logits, targets, ("a", "b", "c"))
    assert set(r) == {
        "mAP", "macro_auc", "macro_f1", "micro_f1", "label_accuracy", "num_samples", "per_label"
    }  # fmt: skip
    probs = logits.sigmoid()
    aps = [average_precision_score(targets[:, j], probs[:, j]) for j in (0, 1)]
    aucs = [roc_auc_score(targets[:, j], probs[:, j]) for j in (0, 1)]
    assert r["per_label"]["a"]["ap"] == pytest.approx(aps[0])
    assert r["per_label"]["b"]["auc"] == pytest.approx(aucs[1])
    assert math.isnan(r["per_label"]["c"]["auc"]) and math.isnan(r["per_label"]["c"]["ap"])
    assert r["mAP"] == pytest.approx(sum(aps) / 2) and r["macro_auc"] == pytest.approx(
        sum(aucs) / 2
    )


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_balanced_accuracy_and_calibration():
    from sklearn.metrics import balanced_accuracy_score
    from torchmetrics.functional.classification import multiclass_calibration_error

    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(300, 4, generator=gen) * 2
    targets = torch.randint(0, 4, (300,), generator=gen)
    targets[targets == 3] = 0  # class 3 absent from the truth: left out, as scikit-learn does
    cm = confusion_matrix(logits.argmax(1), targets, 4)
    expected = balanced_accuracy_score(targets, logits.argmax(1))
    assert balanced_accuracy(cm) == pytest.approx(expected)
    assert classification_report(logits, targets, "abcd")["macro_recall"] == pytest.approx(expected)
    probs = logits.softmax(-1)
    cal = calibration(probs, targets)
    reference = multiclass_calibration_error(probs, targets, num_classes=4, n_bins=15, norm="l1")
    assert cal["ece"] == pytest.approx(float(reference), abs=1e-6)
    bins = cal["bins"]
    assert len(bins) == 15 and sum(b["count"] for b in bins) == 300
    # the bins are the ECE's: their weighted gaps add up to it
    gap = sum(b["count"] / 300 * abs(b["accuracy"] - b["confidence"]) for b in bins)
    assert gap == pytest.approx(cal["ece"], abs=1e-5)
    conf, pred = probs.max(1)
    first = [b for b in bins if b["count"]][0]
    inside = (conf >= first["lower"]) & (conf < first["upper"])
    assert first["count"] == int(inside.sum())
    assert first["accuracy"] == pytest.approx(float((pred == targets)[inside].float().mean()))
    multi = calibration(torch.tensor([[0.9, 0.2]]), torch.tensor([[1.0, 0.0]]), multilabel=True)
    assert multi["ece"] == pytest.approx((0.1 + 0.2) / 2)
