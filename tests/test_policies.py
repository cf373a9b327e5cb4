"""Issue 3: every policy on a ResNet, an EfficientNet, a ViT and a ConvNeXt (random init)."""

import pytest
import torch

from finetune.config import FinetuneConfig, OptimConfig, PolicyConfig
from finetune.errors import ConfigError
from finetune.models.backbones import load_backbone
from finetune.models.heads import replace_head
from finetune.train.optim import LRSchedule, build_optimizer, build_param_groups
from finetune.train.policy import apply_policy, set_train_mode, thaw_for_epoch

ARCHS = ["test_resnet", "test_efficientnet", "test_vit", "test_convnext"]


def _build(name):
    model, info = load_backbone(name, pretrained=False)
    replace_head(model, 3, info)
    return model, info


def _frozen_stages(model, report):
    named = dict(model.named_parameters())
    return [s.name for s in report.stages if not any(named[p].requires_grad for p in s.params)]


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
    "overrides, message",
    [
        (dict(freeze_until="layer3", freeze_stages=2), "freeze_until and freeze_stages"),
        (dict(linear_probe=True, full=True), "linear_probe and full"),
        (dict(full=True, freeze="bn"), "full trains everything"),
        (dict(peft="lora", linear_probe=True), "drop linear_probe"),
        (dict(unfreeze_every=2), "gradual unfreezing needs a frozen start"),
        (dict(freeze_stages=2, unfreeze_every=1, unfreeze_at=(3,)), "two schedules"),
        (dict(cache_features=True, full=True), "cache_features needs linear_probe"),
        (dict(layer_decay=1.5), "optim.layer_decay must be in (0, 1]"),
        (dict(bn="freeze"), "policy.bn: 'freeze' is not one of frozen, eval-all, train"),
        (dict(freeze_stages=2, unfreeze_every=1, freeze="bn"), "would thaw what freeze pins"),
        (dict(linear_probe=True, cache_features=True, head_dropout=0.2), "drop head_dropout"),
        (dict(peft="lora", bn="train"), "not BatchNorm statistics"),
        (dict(lora_r=4), "adapter.lora_r is set but adapter.peft is none"),
    ],
)
def test_bad_combinations_fail_naming_the_options(overrides, message):
    with pytest.raises(ConfigError) as e:
        FinetuneConfig().with_overrides(**overrides)
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


def test_layer_decay_and_head_lr_scale():
    model, info = _build("test_vit")
    report = apply_policy(model, PolicyConfig(), info)
    cfg = OptimConfig(lr=1.0, layer_decay=0.5, head_lr_scale=10, warmup_epochs=0)
    groups = build_param_groups(model, cfg, report.stages)
    scales = {g["stage"]: g["lr_scale"] for g in groups}
    n = len(report.stages)
    assert scales["head"] == 10
    assert scales[report.stages[-2].name] == 0.5
    assert scales["stem"] == pytest.approx(0.5 ** (n - 1))
    opt = build_optimizer(groups, cfg)
    assert {g["lr"] for g in opt.param_groups} == {1.0}  # the base LR: the schedule scales it
    LRSchedule(opt, cfg, steps_per_epoch=10, epochs=1).step_update(0)
    assert {g["lr"] for g in opt.param_groups if g["stage"] == "head"} == {10.0}
    for g in groups:  # no weight decay on 1-D params or pos_embed/cls_token
        names = {id(p) for p in g["params"]}
        named = {id(p): k for k, p in model.named_parameters()}
        if g["weight_decay"]:
            assert all(named[i] not in ("cls_token", "pos_embed") for i in names)


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
