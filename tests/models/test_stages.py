"""Stages: how a model's parameters are grouped, from the stem to the head."""

import pytest

from finetune.config import PolicyConfig
from finetune.models.backbones import load_backbone
from finetune.models.heads import replace_head
from finetune.train.policy import apply_policy


def _build(name, num_classes=3):
    model, info = load_backbone(name, pretrained=False)
    replace_head(model, num_classes, info)
    return model, info


def test_stages_cover_every_parameter_once():
    model, info = _build("test_vit")
    report = apply_policy(model, PolicyConfig(freeze_until="blocks.1"), info)
    names = [p for s in report.stages for p in s.params]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())
    assert report.stages[0].name == "stem" and "cls_token" in report.stages[0].params
    assert "trainable%" in report.summary(model)


@pytest.mark.parametrize(
    "name",
    [
        "resnet18",
        "efficientnet_b0",
        "convnext_atto",
        "vit_tiny_patch16_224",
        "mobilenetv3_small_100",
        "regnety_002",
        "tv:mobilenet_v3_small",
        "tv:vit_b_16",
    ],
)
def test_inspect_works_for_real_architectures(name):
    import finetune

    model, report = finetune.inspect(name, verbose=False, freeze_stages=2, layer_decay=0.8)
    assert len(report.stages) >= 4 and report.stages[-1].name == "head"
    named = dict(model.named_parameters())
    assert sorted(p for s in report.stages for p in s.params) == sorted(named)
    frozen = [s.name for s in report.stages if not any(named[p].requires_grad for p in s.params)]
    assert frozen == [s.name for s in report.stages[:2]]
