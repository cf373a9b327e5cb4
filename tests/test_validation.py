"""Config validation: types, ranges and choices name the key; options that cannot go together
name the options."""

import pytest

from finetune.config import FinetuneConfig
from finetune.errors import ConfigError


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"lrr": 0.1}, "unknown config key 'lrr'. Did you mean: lr"),
        ({"epochs": "ten"}, "expected int"),
        ({"epochs": 0}, "train.epochs must be >= 1"),
        ({"precision": "fp8"}, "train.precision: 'fp8' is not one of auto, fp32, bf16, fp16"),
        ({"val_split": 1.5}, "data.val_split must be in [0, 1)"),
        ({"mixup_off_epochs": -1}, "train.mixup_off_epochs must be >= 0"),
        ({"overwrite": "yes"}, "expected bool"),
        ({"distill": 1.5}, "train.distill must be in [0, 1]"),
    ],
)
def test_bad_overrides_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=None) as e:
        FinetuneConfig().with_overrides(**overrides)
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
        (dict(teacher="runs/big", cutmix=1.0), "train.teacher gives soft targets"),
    ],
)
def test_bad_combinations_fail_naming_the_options(overrides, message):
    with pytest.raises(ConfigError) as e:
        FinetuneConfig().with_overrides(**overrides)
    assert message in str(e.value)


@pytest.mark.parametrize("key", ["lr", "weight_decay", "min_crop_scale", "ema_decay"])
@pytest.mark.parametrize("value", [float("inf"), float("nan"), "inf"])
def test_non_finite_numbers_are_refused(key, value):
    # regression: --lr inf passed validation ("> 0") and trained a NaN model to exit 0
    with pytest.raises(ConfigError, match=f"{key} must be a finite number"):
        FinetuneConfig().with_overrides(**{key: value})


@pytest.mark.parametrize("output", ["data/run1", "data", "data/a/b", "./data/../data/x"])
def test_an_output_inside_the_image_folder_is_refused(tmp_path, monkeypatch, output):
    # regression (hostile-input pass): a run written into --data made the next scan train on a
    # class named after it (its PNG plots are images), without a word
    from finetune.validation import check_output_outside_data

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    with pytest.raises(ConfigError, match=r"--output .* is inside --data .*: the next scan"):
        check_output_outside_data(output, "data")
    check_output_outside_data("data2/run", "data")  # a name that starts the same: beside it
    check_output_outside_data("missing/x", "missing")  # no such folder (a CSV, a hub name)


@pytest.mark.parametrize(
    "text,message",
    [
        ("abc", "'abc' is not a duration; write it like 90s"),
        ("-5m", "'-5m' is not a duration"),
        ("10x", "'10x' is not a duration"),
        ("0s", "'0s' is no time; give more than 0"),  # regression: "not a duration"
        (0, "'0' is no time"),
    ],
)
def test_a_bad_duration_names_the_key(text, message):
    from finetune.validation import parse_duration

    with pytest.raises(ConfigError, match=f"--budget: {message}"):
        parse_duration(text, "--budget")
