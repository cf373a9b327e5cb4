"""Freezing policies (freeze_until, freeze_stages, linear probe, regexes, BatchNorm modes,
gradual unfreezing) on a ResNet, an EfficientNet, a ViT and a ConvNeXt (random init)."""

import pytest
import torch

from finetune.config import PolicyConfig
from finetune.models.backbones import load_backbone
from finetune.models.heads import replace_head
from finetune.train.policy import apply_policy, set_train_mode, thaw_for_epoch

ARCHS = ["test_resnet", "test_efficientnet", "test_vit", "test_convnext"]


def _build(name, num_classes=3):
    model, info = load_backbone(name, pretrained=False)
    replace_head(model, num_classes, info)
    return model, info


def _trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def _frozen_stages(model, report):
    named = dict(model.named_parameters())
    return [s.name for s in report.stages if not any(named[p].requires_grad for p in s.params)]


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


@pytest.mark.parametrize("name", ARCHS)
def test_freeze_stages_linear_probe_and_full(name):
    model, info = _build(name)
    report = apply_policy(model, PolicyConfig(freeze_stages=2), info)
    assert _frozen_stages(model, report) == [s.name for s in report.stages[:2]]
    report = apply_policy(model, PolicyConfig(linear_probe=True), info)
    assert _frozen_stages(model, report) == [s.name for s in report.stages[:-1]]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(report.stages[-1].params)
    apply_policy(model, PolicyConfig(full=True), info)
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize(
    "name, train_only, freeze",
    [
        ("test_resnet", r"layer4", r"bn"),
        ("test_efficientnet", r"blocks\.[34]", None),
        ("test_vit", r"blocks\.(4|5)\.", r"norm"),
        ("test_convnext", r"stages\.3", None),
    ],
)
def test_regex_policies(name, train_only, freeze):
    import re

    model, info = _build(name)
    report = apply_policy(model, PolicyConfig(train_only=train_only, freeze=freeze), info)
    head = set(report.stages[-1].params)
    for n, p in model.named_parameters():
        expected = n in head or (
            re.search(train_only, n) is not None and not (freeze and re.search(freeze, n))
        )
        assert p.requires_grad == expected, n


@pytest.mark.parametrize(
    "cfg, message",
    [
        (PolicyConfig(freeze_stages=99), "stages before the head"),
        (PolicyConfig(freeze="^fc"), "matches only head parameters"),
        (PolicyConfig(freeze_stages=1, unfreeze_at=(2, 3)), "only 1 stages are frozen"),
        (PolicyConfig(freeze_stages=3, unfreeze_at=(9,)), "after the last epoch (4)"),
        (PolicyConfig(train_only="nomatch"), "matches no parameter name"),
        (PolicyConfig(freeze="(["), "not a valid regular expression"),
    ],
)
def test_policy_errors_name_the_option(cfg, message):
    model, info = _build("test_resnet")
    with pytest.raises(ValueError, match=None) as e:
        apply_policy(model, cfg, info, epochs=4)
    assert message in str(e.value)


@pytest.mark.parametrize(
    "bn, frozen_layers", [("frozen", "some"), ("eval-all", "all"), ("train", "none")]
)
def test_batchnorm_modes(bn, frozen_layers):
    model, info = _build("test_resnet")
    report = apply_policy(model, PolicyConfig(freeze_until="layer3", bn=bn), info)
    bns = [n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    expected = {
        "all": bns,
        "none": [],
        "some": [n for n in bns if not n.startswith(("layer3", "layer4"))],
    }[frozen_layers]
    assert list(report.frozen_bn) == expected
    set_train_mode(model, report)
    assert [n for n in bns if not model.get_submodule(n).training] == expected


@pytest.mark.parametrize("name", ARCHS)
def test_gradual_unfreezing_thaws_from_the_top(name):
    model, info = _build(name)
    report = apply_policy(model, PolicyConfig(freeze_stages=3, unfreeze_every=2), info, epochs=6)
    assert report.thaw_order == tuple(s.name for s in reversed(report.stages[:3]))
    assert report.thaw_epochs == (3, 5)
    assert thaw_for_epoch(model, report, 2) == []
    ((stage, params),) = thaw_for_epoch(model, report, 3)
    assert stage == report.stages[2].name and params == list(report.stages[2].params)
    assert _frozen_stages(model, report) == [s.name for s in report.stages[:2]]
    assert [s for s, _ in thaw_for_epoch(model, report, 6)] == [report.stages[1].name]


def test_frozen_prefix_builds_no_backward_graph():
    model, info = _build("test_resnet")
    apply_policy(model, PolicyConfig(freeze_until="layer3"), info)
    seen = {}
    for name in ("layer2", "layer3"):

        def hook(_m, _i, output, name=name):
            seen[name] = output.requires_grad

        model.get_submodule(name).register_forward_hook(hook)
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    assert seen == {"layer2": False, "layer3": True}  # autograd records nothing before layer3
    assert all(p.grad is None for n, p in model.named_parameters() if n.startswith("layer1"))


def test_a_budgeted_run_thaws_every_frozen_stage_in_turn():
    """Regression: a budgeted run's thaw plan was cut at train.epochs (10), not its planned
    length (a 40-epoch budget with --unfreeze-every 5 thawed one stage of three), and
    --unfreeze-at 15 was refused as "after the last epoch (10)"."""
    from finetune.config import FinetuneConfig
    from finetune.train.build import build_model

    def thaws(**overrides):
        cfg = FinetuneConfig().with_overrides(name="test_resnet", pretrained=False, **overrides)
        return build_model("test_resnet", cfg, 3).policy.thaw_epochs

    assert thaws(freeze_stages=3, unfreeze_every=5) == (6,)  # 10 epochs: one thaw fits
    assert thaws(freeze_stages=3, unfreeze_every=5, budget="1h") == (6, 11, 16)
    assert thaws(freeze_stages=3, unfreeze_at=(15,), budget="1h") == (15,)
    with pytest.raises(ValueError, match="after the last epoch"):
        thaws(freeze_stages=3, unfreeze_at=(15,))
