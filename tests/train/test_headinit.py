"""LP-FT head init: the linear fit, when a run uses it, and the hand-over to the model."""

from types import SimpleNamespace

import pytest
import torch

from finetune.config import FinetuneConfig
from finetune.train.headinit import fit_linear, init_head, wants_probe


def test_fit_linear_separates_separable_classes():
    x = torch.cat([torch.randn(30, 5) + 4, torch.randn(30, 5) - 4])
    y = torch.tensor([0] * 30 + [1] * 30)
    w, b, acc = fit_linear(x, y, num_classes=2, label_smoothing=0.1)
    assert acc == 1.0 and w.shape == (2, 5)
    # label smoothing keeps the logits finite: the head hands over moderate confidences
    assert float((x @ w.T + b).abs().max()) < 20


def test_fit_linear_multilabel():
    x = torch.randn(40, 3)
    y = torch.stack([(x[:, 0] > 0), (x[:, 1] > 0)], 1).float()
    _, _, acc = fit_linear(x, y, num_classes=2, multilabel=True)
    assert acc > 0.9


def _built(head=None, classifier="fc"):
    base = torch.nn.Sequential()
    base.add_module(classifier, head or torch.nn.Linear(4, 2))
    return SimpleNamespace(base=base, info=SimpleNamespace(classifier=classifier))


@pytest.mark.parametrize(
    "overrides,head,use,why",
    [
        ({}, None, True, "LP-FT"),
        ({"head_init": "random"}, None, False, "head_init random"),
        ({"pretrained": False}, None, False, "not pretrained"),
        ({"linear_probe": True}, None, False, "linear probe"),
        ({"peft": "lora"}, None, False, "peft"),
        ({}, torch.nn.Sequential(torch.nn.Linear(4, 2)), False, "not one Linear"),
    ],
)
def test_wants_probe(overrides, head, use, why):
    cfg = FinetuneConfig().with_overrides(**overrides)
    got, reason = wants_probe(cfg, _built(head))
    assert got is use and why in reason


def test_probe_asked_for_where_it_cannot_apply_is_an_error():
    cfg = FinetuneConfig().with_overrides(head_init="probe", pretrained=False)
    with pytest.raises(ValueError, match="--head-init random"):
        wants_probe(cfg, _built())


def test_init_head_loads_the_fitted_head_and_keeps_the_backbone(tmp_path):
    import timm

    from finetune.train.runtime import Runtime, Task

    model = timm.create_model("test_resnet", pretrained=False, num_classes=2)
    built = SimpleNamespace(base=model, info=SimpleNamespace(classifier="fc"))
    backbone = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("fc")}
    images = torch.randint(0, 255, (8, 3, 32, 32), dtype=torch.uint8)
    labels = torch.tensor([0, 1] * 4)
    images[labels == 1] //= 4  # dark images are class 1: learnable from pooled features
    loader = [(images[:4], labels[:4]), (images[4:], labels[4:])]
    task = Task(2, False, None, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    fit = init_head(built, loader, runtime=Runtime(), task=task, cfg=FinetuneConfig())
    assert fit.images == 8 and fit.train_accuracy == 1.0
    state = model.state_dict()
    assert all(torch.equal(backbone[k], state[k]) for k in backbone)  # BN statistics too
    assert model.training  # left in the mode it was in
