"""The "auto" frozen start of a budgeted run (``policy.freeze_stages`` None): which runs freeze,
how many leading stages, and that the choice reaches the model and the resolved config."""

import pytest
from safetensors.torch import save_file

from finetune.config import FinetuneConfig
from finetune.data.datasets import scan_data
from finetune.models.backbones import load_backbone
from finetune.models.stages import model_stages
from finetune.train import autoplan
from finetune.train.autofreeze import resolve_freeze, share_stages
from finetune.train.build import build_model
from finetune.train.distributed import DistInfo


@pytest.mark.parametrize(
    "counts,n",
    [
        ([1, 1, 98], 2),  # 2 % exactly is kept
        ([1, 2, 97], 1),
        ([3, 97], 0),  # the first stage alone is over the share
        ([928, 896, 13_968, 39_712, 3_281_504], 4),  # tf_efficientnet_lite0: stem, blocks 0-2
        ([], 0),
    ],
)
def test_share_stages_counts_the_leading_stages_within_the_share(counts, n):
    assert share_stages(counts, max_share=0.02) == n


# test_efficientnet: the stem holds 0.7 % of the weights, stem + blocks.0 4.2 %
@pytest.mark.parametrize(
    "overrides,pretrained,frozen",
    [
        ({"budget": "90s"}, True, 1),
        ({}, True, 0),  # no budget: epochs from the config, nothing frozen
        ({"budget": "90s"}, False, 0),  # random weights would stay random
        ({"budget": "90s", "in_chans": 4}, True, 0),  # the adapted stem must learn
        ({"budget": "90s", "freeze_stages": 0}, True, 0),  # an explicit 0 is kept
        ({"budget": "90s", "full": True}, True, 0),
        ({"budget": "90s", "freeze_until": "blocks.1"}, True, 0),
        ({"budget": "90s", "peft": "lora"}, True, 0),
    ],
)
def test_which_runs_freeze_their_leading_stages(overrides, pretrained, frozen):
    cfg = FinetuneConfig().with_overrides(**overrides)
    model, _ = load_backbone("test_efficientnet", pretrained=False)
    policy, why = resolve_freeze(cfg, model, model_stages(model), pretrained=pretrained)
    assert policy.freeze_stages == frozen
    assert (why is not None) == bool(frozen)
    if frozen:
        assert why.startswith("freeze stem (--freeze-stages 1, 0.7% of the weights)")


def test_a_transformer_and_a_cnn_over_the_share_freeze_nothing():
    cfg = FinetuneConfig().with_overrides(budget="90s")
    for name in ("test_vit", "test_resnet"):  # not a CNN; test_resnet's stem holds 2.005 %
        model, _ = load_backbone(name, pretrained=False)
        policy, why = resolve_freeze(cfg, model, model_stages(model), pretrained=True)
        assert (policy.freeze_stages, why) == (0, None), name


def test_a_budgeted_run_from_a_weight_file_trains_with_its_stem_frozen(tmp_path, image_folder):
    source, _ = load_backbone("test_efficientnet", pretrained=False)
    save_file(
        {k: v.contiguous() for k, v in source.state_dict().items()}, tmp_path / "w.safetensors"
    )
    cfg = FinetuneConfig().with_overrides(
        name="test_efficientnet", weights=str(tmp_path / "w.safetensors"), budget="1h", device="cpu"
    )
    data = scan_data(image_folder, cfg)
    built = build_model("test_efficientnet", cfg, data.num_classes)
    params = dict(built.net.named_parameters())
    assert not params["conv_stem.weight"].requires_grad
    assert params["blocks.0.0.conv.weight"].requires_grad
    assert built.policy.description == "freeze_stages=1"
    planned, plan = autoplan.plan_run(cfg, built, data, DistInfo())
    assert planned.policy.freeze_stages == 1  # recorded in config.json, so --resume keeps it
    assert any(r.startswith("freeze stem") for r in plan.reasons)


def test_an_unbudgeted_run_records_an_explicit_zero(image_folder):
    cfg = FinetuneConfig().with_overrides(name="test_efficientnet", pretrained=False, epochs=1)
    data = scan_data(image_folder, cfg)
    built = build_model("test_efficientnet", cfg, data.num_classes)
    planned, plan = autoplan.plan_run(cfg, built, data, DistInfo())
    assert planned.policy.freeze_stages == 0
    assert all(p.requires_grad for p in built.net.parameters())
    assert not any(r.startswith("freeze") for r in plan.reasons)
