"""The loss for each task (class weights, label smoothing, multi-label BCE) and when Mixup is
built."""

import math

import pytest
import torch

from finetune.config import OptimConfig, TrainConfig
from finetune.train.loss import build_loss, build_mixup, soft_cross_entropy
from finetune.train.runtime import Task

CPU = torch.device("cpu")
MEAN, STD = (0.5,) * 3, (0.5,) * 3


def _task(n=2, multilabel=False, weights=None):
    return Task(n, multilabel, None if weights is None else torch.tensor(weights), MEAN, STD)


# (task, label smoothing, logits, targets) -> loss
CASES = [
    # two equal logits: log 2 whatever the smoothing
    (_task(), 0.1, [[0.0, 0.0]], [0], math.log(2)),
    # class weights [1, 3] on a batch of one: the weighted mean is the plain loss
    (_task(weights=[1.0, 3.0]), 0.0, [[2.0, 0.0]], [1], math.log(1 + math.exp(2))),
    # multi-label: targets 1 smoothed to 0.95 with 0.1; logit 0 costs log 2 either way
    (_task(multilabel=True), 0.1, [[0.0]], [[1.0]], math.log(2)),
]


@pytest.mark.parametrize("task,smoothing,logits,targets,expected", CASES)
def test_build_loss(task, smoothing, logits, targets, expected):
    loss = build_loss(task, label_smoothing=smoothing, device=CPU)
    dtype = torch.float32 if task.multilabel else torch.long
    value = loss(torch.tensor(logits), torch.tensor(targets, dtype=dtype))
    assert float(value) == pytest.approx(expected, rel=1e-5)


def test_label_smoothing_raises_the_loss_of_a_confident_right_answer():
    logits, target = torch.tensor([[8.0, 0.0]]), torch.tensor([0])
    plain = build_loss(_task(), label_smoothing=0.0, device=CPU)(logits, target)
    smooth = build_loss(_task(), label_smoothing=0.1, device=CPU)(logits, target)
    assert float(smooth) > float(plain)


@pytest.mark.parametrize(
    "mixup,cutmix,built", [(0.0, 0.0, False), (0.2, 0.0, True), (0.0, 1.0, True)]
)
def test_build_mixup_only_when_on(mixup, cutmix, built):
    train = TrainConfig(mixup=mixup, cutmix=cutmix)
    result = build_mixup(train, OptimConfig(label_smoothing=0.1), _task(3))
    assert (result is not None) == built
    if built:
        assert result.label_smoothing == 0.1 and result.num_classes == 3


# (class weights, logits, class index) -> the same row as probabilities gives the index loss
ONE_HOT = [
    (None, [[2.0, 0.0], [0.0, 1.0]], [1, 1]),
    ([1.0, 3.0], [[2.0, 0.0], [0.0, 1.0]], [0, 1]),
    ([0.2, 1.0, 5.0], [[1.0, 0.5, -1.0], [0.0, 0.0, 3.0]], [2, 0]),
]


@pytest.mark.parametrize("weights,logits,classes", ONE_HOT)
def test_soft_targets_one_hot_give_the_index_loss(weights, logits, classes):
    logits = torch.tensor(logits)
    task = _task(n=logits.shape[1], weights=weights)
    loss = build_loss(task, label_smoothing=0.0, device=CPU)
    one_hot = torch.nn.functional.one_hot(torch.tensor(classes), logits.shape[1]).float()
    assert float(loss(logits, one_hot)) == pytest.approx(float(loss(logits, torch.tensor(classes))))


def test_class_weights_apply_to_soft_targets():
    # regression: mixed and teacher targets took a separate unweighted path, so
    # --class-weights auto was silently ignored under --mixup or --teacher
    logits, soft = torch.tensor([[2.0, 0.0], [0.0, 2.0]]), torch.tensor([[0.9, 0.1], [0.3, 0.7]])
    plain = build_loss(_task(), label_smoothing=0.0, device=CPU)(logits, soft)
    weighted = build_loss(_task(weights=[1.0, 4.0]), label_smoothing=0.0, device=CPU)(logits, soft)
    assert float(weighted) != pytest.approx(float(plain))


def test_soft_targets_are_not_smoothed_again():
    # mixup and the teacher's mix smooth their targets themselves
    logits, soft = torch.tensor([[3.0, 0.0]]), torch.tensor([[0.95, 0.05]])
    smooth = build_loss(_task(), label_smoothing=0.2, device=CPU)(logits, soft)
    assert float(smooth) == pytest.approx(float(soft_cross_entropy(logits, soft)))
