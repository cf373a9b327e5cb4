import pytest
import torch

from finetune.config import PolicyConfig
from finetune.models.backbones import load_backbone
from finetune.models.heads import replace_head
from finetune.train.policy import apply_policy, set_train_mode


def _build(name, num_classes=3):
    model, info = load_backbone(name, pretrained=False)
    replace_head(model, num_classes, info)
    return model, info


def _trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize(
    "name, until, frozen_prefixes, trained_prefixes",
    [
        ("test_resnet", "layer3", ("conv1", "bn1", "layer1", "layer2"), ("layer3", "layer4", "fc")),
        (
            "test_efficientnet",
            "blocks.2",
            ("conv_stem", "bn1", "blocks.0", "blocks.1"),
            ("blocks.2", "conv_head", "bn2", "classifier"),
        ),
        ("test_convnext", "stages.2", ("stem", "stages.0", "stages.1"), ("stages.2", "head")),
        (
            "test_vit",
            "blocks.1",
            ("cls_token", "pos_embed", "patch_embed", "blocks.0"),
            ("blocks.1", "norm", "head"),
        ),
    ],
)
def test_freeze_until(name, until, frozen_prefixes, trained_prefixes):
    model, info = _build(name)
    report = apply_policy(model, PolicyConfig(freeze_until=until), info)
    trainable = _trainable(model)
    for n, _ in model.named_parameters():
        if n.startswith(frozen_prefixes):
            assert n not in trainable, n
        if n.startswith(trained_prefixes):
            assert n in trainable, n
    trainable, total = report.counts(model)
    assert 0 < trainable < total


def test_head_always_trains_even_when_named_first_is_later():
    model, info = _build("test_resnet")
    apply_policy(model, PolicyConfig(freeze_until="fc"), info)
    assert _trainable(model) == {"fc.weight", "fc.bias"}


def test_unknown_module_lists_stage_names():
    model, info = _build("test_resnet")
    with pytest.raises(ValueError) as e:
        apply_policy(model, PolicyConfig(freeze_until="layer5"), info)
    msg = str(e.value)
    assert "no module named 'layer5'" in msg
    assert "Valid stage names: conv1, bn1, layer1, layer2, layer3, layer4, fc" in msg


def test_frozen_batchnorm_statistics_stay_bit_identical():
    model, info = _build("test_resnet")
    report = apply_policy(model, PolicyConfig(freeze_until="layer3"), info)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    set_train_mode(model, report)
    for _ in range(2):
        loss = model(torch.randn(4, 3, 64, 64)).logsumexp(1).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
    after = model.state_dict()
    for k in before:
        if k.startswith(("conv1", "bn1", "layer1", "layer2")):
            assert torch.equal(before[k], after[k]), k  # weights and BN running stats
    assert not torch.equal(before["layer3.0.bn1.running_mean"], after["layer3.0.bn1.running_mean"])
    assert not model.layer1[0].bn1.training and model.layer3[0].bn1.training


def test_bn_train_mode_lets_frozen_statistics_update():
    model, info = _build("test_resnet")
    report = apply_policy(model, PolicyConfig(freeze_until="layer3", bn="train"), info)
    assert report.frozen_bn == ()
    set_train_mode(model, report)
    mean = model.bn1.running_mean.clone()
    model(torch.randn(4, 3, 64, 64))
    assert not torch.equal(mean, model.bn1.running_mean)


def test_frozen_prefix_gets_no_gradients():
    model, info = _build("test_efficientnet")
    apply_policy(model, PolicyConfig(freeze_until="blocks.3"), info)
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    assert all(p.grad is None for n, p in model.named_parameters() if n.startswith("blocks.0"))
    assert model.classifier.weight.grad is not None


def test_stages_cover_every_parameter_once():
    model, info = _build("test_vit")
    report = apply_policy(model, PolicyConfig(freeze_until="blocks.1"), info)
    names = [p for s in report.stages for p in s.params]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())
    assert report.stages[0].name == "stem" and "cls_token" in report.stages[0].params
    assert "trainable%" in report.summary(model)


def test_batchnorm_without_affine_params_is_frozen_by_position():
    from torch import nn

    from finetune.models.backbones import describe_module

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, affine=False))
            self.body = nn.Sequential(nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4, affine=False))
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.body(self.stem(x)).mean((2, 3)))

    model = Tiny()
    report = apply_policy(model, PolicyConfig(freeze_until="body"), describe_module(model))
    assert report.frozen_bn == ("stem.1",)
