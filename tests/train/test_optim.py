import math

import pytest
import torch

from finetune.config import OptimConfig, PolicyConfig
from finetune.models.backbones import load_backbone
from finetune.models.heads import replace_head
from finetune.train.optim import LRSchedule, build_optimizer, build_param_groups
from finetune.train.policy import apply_policy


def _model(freeze_until=None):
    model, info = load_backbone("test_resnet", pretrained=False)
    replace_head(model, 2, info)
    apply_policy(model, PolicyConfig(freeze_until=freeze_until), info)
    return model


def _build(name):
    model, info = load_backbone(name, pretrained=False)
    replace_head(model, 3, info)
    return model, info


def test_frozen_params_never_reach_the_optimizer_and_1d_params_get_no_decay():
    model = _model("layer3")
    opt = build_optimizer(model, OptimConfig(weight_decay=0.05))
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[i] for i in in_opt} == {n for n, p in model.named_parameters() if p.requires_grad}
    for group in opt.param_groups:
        assert group["weight_decay"] == (0.05 if all(p.ndim > 1 for p in group["params"]) else 0.0)


@pytest.mark.parametrize("name, cls", [("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)])
def test_optimizer_choice(name, cls):
    assert isinstance(build_optimizer(_model(), OptimConfig(optimizer=name)), cls)


def test_warmup_then_cosine_per_step():
    model = _model()
    cfg = OptimConfig(lr=1.0, warmup_epochs=1.0, min_lr_ratio=0.1)
    opt = build_optimizer(model, cfg)
    sched = LRSchedule(opt, cfg, steps_per_epoch=10, epochs=3)
    lrs = []
    for step in range(1, 31):
        sched.step_update(step)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] < lrs[5] < lrs[9]  # linear warmup over the first epoch (10 steps)
    assert lrs[9] == pytest.approx(1.0)  # peak at the end of warmup
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # cosine decays monotonically
    assert lrs[-1] == pytest.approx(0.1, abs=0.02)


def test_lr_scale_in_a_group_scales_its_lr():
    model = _model()
    cfg = OptimConfig(lr=1.0, warmup_epochs=0.0)
    opt = build_optimizer(model, cfg)
    opt.param_groups[0]["lr_scale"] = 0.5
    sched = LRSchedule(opt, cfg, steps_per_epoch=10, epochs=1)
    sched.step_update(1)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * opt.param_groups[1]["lr"])


def test_everything_frozen_is_an_error():
    model = _model()
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer(model, OptimConfig())


def test_groups_added_during_warmup_follow_the_warmup_with_their_scale():
    model = _model("layer4")
    cfg = OptimConfig(lr=1.0, warmup_epochs=1.0)
    opt = build_optimizer(model, cfg)
    sched = LRSchedule(opt, cfg, steps_per_epoch=10, epochs=2)
    for step in range(1, 3):
        sched.step_update(step)
    for n, p in model.named_parameters():
        if n.startswith("layer3"):
            p.requires_grad_(True)
    new = [
        dict(
            params=[p for n, p in model.named_parameters() if n.startswith("layer3")],
            weight_decay=0.0,
            lr_scale=0.5,
            stage="layer3",
        )
    ]
    sched.add_param_groups(new, step=2)
    sched.step_update(5)
    old_lr, new_lr = opt.param_groups[0]["lr"], opt.param_groups[-1]["lr"]
    assert old_lr < 1.0 and new_lr == pytest.approx(0.5 * old_lr)


def test_exponential_schedule_expresses_the_seeds_decay():
    model = torch.nn.Linear(2, 2)
    cfg = OptimConfig(
        lr=0.01, schedule="exponential", decay_rate=math.exp(-1 / 10), warmup_epochs=0
    )
    opt = build_optimizer(
        [dict(params=list(model.parameters()), weight_decay=0.0, lr_scale=1.0, stage="head")], cfg
    )
    sched = LRSchedule(opt, cfg, steps_per_epoch=5, epochs=30)
    for epoch in (0, 3, 12):
        sched.step_update(epoch * 5)
        assert opt.param_groups[0]["lr"] == pytest.approx(0.01 * math.exp(-epoch / 10))


def test_step_schedule():
    model = torch.nn.Linear(2, 2)
    cfg = OptimConfig(lr=1.0, schedule="step", step_epochs=2, decay_rate=0.5, warmup_epochs=0)
    opt = build_optimizer(
        [dict(params=list(model.parameters()), weight_decay=0.0, lr_scale=1.0, stage="head")], cfg
    )
    sched = LRSchedule(opt, cfg, steps_per_epoch=10, epochs=6)
    lrs = []
    for step in (5, 25, 45):
        sched.step_update(step)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == pytest.approx([1.0, 0.5, 0.25])


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


def test_lr_schedule_state_round_trips_after_groups_were_added():
    model = _model("layer4")
    cfg = OptimConfig(lr=1.0, warmup_epochs=1.0)
    opt = build_optimizer(model, cfg)
    sched = LRSchedule(opt, cfg, steps_per_epoch=10, epochs=2)
    for n, p in model.named_parameters():
        if n.startswith("layer3"):
            p.requires_grad_(True)
    new = [
        dict(
            params=[p for n, p in model.named_parameters() if n.startswith("layer3")],
            weight_decay=0.0,
            lr_scale=0.5,
            stage="layer3",
        )
    ]
    sched.add_param_groups(new, step=3)
    state = sched.state_dict()
    sched.step_update(7)
    expected = [g["lr"] for g in opt.param_groups]
    sched.load_state_dict(state)
    sched.step_update(7)
    assert [g["lr"] for g in opt.param_groups] == expected
