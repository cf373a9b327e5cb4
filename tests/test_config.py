import pytest

from finetune.config import FinetuneConfig, recipes_dir
from finetune.errors import ConfigError


def test_overrides_by_field_and_dotted_name():
    cfg = FinetuneConfig().with_overrides(lr=3e-4, **{"train.epochs": 2}, freeze_until="layer3")
    assert (cfg.optim.lr, cfg.train.epochs, cfg.policy.freeze_until) == (3e-4, 2, "layer3")
    assert FinetuneConfig().optim.lr == 1e-3  # frozen: the original is untouched


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"lrr": 0.1}, "unknown config key 'lrr'. Did you mean: lr"),
        ({"epochs": "ten"}, "expected int"),
        ({"epochs": 0}, "train.epochs must be >= 1"),
        ({"precision": "fp8"}, "train.precision: 'fp8' is not one of auto, fp32, bf16, fp16"),
        ({"val_split": 1.5}, "data.val_split must be in [0, 1)"),
        ({"overwrite": "yes"}, "expected bool"),
    ],
)
def test_bad_overrides_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=None) as e:
        FinetuneConfig().with_overrides(**overrides)
    assert message in str(e.value)


def test_yaml_unknown_key_and_wrong_type(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: 0.01\n  momentun: 0.9\n")
    with pytest.raises(ConfigError, match="unknown key 'momentun'. Did you mean: momentum"):
        FinetuneConfig.from_yaml(bad)
    bad.write_text("trian:\n  epochs: 3\n")
    with pytest.raises(ConfigError, match="unknown key 'trian'"):
        FinetuneConfig.from_yaml(bad)
    bad.write_text("train:\n  epochs: 2.5\n")
    with pytest.raises(ConfigError, match="train.epochs: expected int"):
        FinetuneConfig.from_yaml(bad)


def test_yaml_round_trip_and_scientific_notation(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("optim:\n  lr: 1e-4\ndata:\n  img_size: 96\n")
    cfg = FinetuneConfig.from_yaml(path)
    assert cfg.optim.lr == 1e-4 and cfg.data.img_size == 96
    path.write_text(cfg.to_yaml())
    assert FinetuneConfig.from_yaml(path) == cfg


def test_default_recipe_lists_every_field():
    import yaml

    written = yaml.safe_load((recipes_dir() / "default.yaml").read_text())
    for section, fields in FinetuneConfig().to_dict().items():
        assert set(written[section]) == set(fields), section


def test_default_recipe_writes_out_the_defaults():
    assert FinetuneConfig.from_yaml(recipes_dir() / "default.yaml") == FinetuneConfig()
    assert FinetuneConfig.from_recipe("default") == FinetuneConfig()
    with pytest.raises(FileNotFoundError, match="recipe 'nope' not found: .* one of default"):
        FinetuneConfig.from_recipe("nope")
