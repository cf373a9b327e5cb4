"""The config: overrides by field and dotted name, YAML files, and the shipped recipes (every one
loads, validates and trains a step; a freezing override replaces a recipe's policy)."""

import json

import pytest

import finetune
from finetune.config import FinetuneConfig, recipes_dir
from finetune.errors import ConfigError

RECIPES = sorted(p.stem for p in recipes_dir().glob("*.yaml"))


def test_overrides_by_field_and_dotted_name():
    cfg = FinetuneConfig().with_overrides(lr=3e-4, **{"train.epochs": 2}, freeze_until="layer3")
    assert (cfg.optim.lr, cfg.train.epochs, cfg.policy.freeze_until) == (3e-4, 2, "layer3")
    assert FinetuneConfig().optim.lr is None  # frozen: the original is untouched (auto)


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


def test_a_recipes_range_error_names_the_recipe_file(tmp_path):
    # regression: "data.min_crop_scale must be in (0, 1]" named the key but not the recipe file,
    # where a type error in the same file named both
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  min_crop_scale: 1.5\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: data\.min_crop_scale must be in"):
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


def test_the_six_domain_recipes_ship():
    assert set(RECIPES) >= {
        "default",
        "natural",
        "medical-xray",
        "medical-pathology",
        "remote-sensing",
        "linear-probe",
        "few-shot",
    }


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_header_states_data_why_and_check(name):
    text = (recipes_dir() / f"{name}.yaml").read_text()
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    if name != "default":
        assert "Why:" in header and "Checked on:" in header


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_trains_a_step(name, image_folder, tmp_path):
    cfg = FinetuneConfig.from_recipe(name)
    arch = "test_vit" if name == "natural" else "test_resnet"
    epochs = max(cfg.policy.unfreeze_at, default=1)  # reach the unfreeze step, if any
    result = finetune.adapt(
        arch,
        image_folder,
        cfg,
        verbose=False,
        recipe=name,
        pretrained=False,
        epochs=epochs,
        img_size=32,
        batch_size=4,
        num_workers=0,
        output=str(tmp_path / "run"),
    )
    saved = json.loads((result.run_dir / "config.json").read_text())["finetune"]
    assert saved["recipe"] == name and saved["overrides"]["img_size"] == 32
    assert result.metrics["val"]["num_samples"] == 2


@pytest.mark.parametrize(
    "recipe, overrides",
    [
        ("medical-xray", dict(full=True)),
        ("medical-xray", dict(linear_probe=True, cache_features=True)),
        ("linear-probe", dict(freeze_until="layer3")),
    ],
)
def test_a_freezing_override_replaces_the_recipes_policy(recipe, overrides, image_folder, tmp_path):
    result = finetune.adapt(
        "test_resnet",
        image_folder,
        recipe=recipe,
        verbose=False,
        dry_run=True,
        pretrained=False,
        img_size=32,
        **overrides,
    )
    assert result.run_dir is None and result.policy.thaw_epochs == ()


def test_resolve_is_the_one_config_path(tmp_path):
    from finetune.config import FinetuneConfig

    # a freezing override replaces the recipe's own choice instead of conflicting with it
    cfg = FinetuneConfig.resolve(recipe="linear-probe", freeze_until="blocks.4")
    assert cfg.policy.freeze_until == "blocks.4" and not cfg.policy.linear_probe
    base = FinetuneConfig().with_overrides(epochs=3)
    assert FinetuneConfig.resolve(base=base, lr=0.1).train.epochs == 3


def test_resume_refuses_overrides_naming_the_real_flags(tmp_path):
    from finetune.config import FinetuneConfig
    from finetune.errors import ConfigError

    # regression: the refusal named --path, --name and --pretrained, flags that do not exist
    # (--data itself is allowed: the same data at a new place, checked by its fingerprint)
    with pytest.raises(ConfigError, match="drop --backbone, --no-pretrained$"):
        FinetuneConfig.resolve(resume=tmp_path, path="x", name="resnet50", pretrained=False)
    with pytest.raises(ConfigError, match="drop --recipe"):
        FinetuneConfig.resolve(resume=tmp_path, recipe="natural")


def test_from_yaml_takes_a_shipped_recipe_by_name():
    # regression: from_yaml("default") failed while --recipe default worked
    assert FinetuneConfig.from_yaml("default") == FinetuneConfig.from_recipe("default")


@pytest.mark.parametrize("epochs, expected", [(1, ()), (4, (2,)), (12, (3,)), (24, (6,))])
def test_a_recipes_unfreeze_epochs_follow_a_chosen_run_length(epochs, expected):
    # regression: --recipe medical-xray --epochs 1 failed naming --unfreeze-at 3, a flag the
    # user never passed (the recipe thaws at epoch 3 of 12)
    cfg = FinetuneConfig.resolve(recipe="medical-xray", epochs=epochs)
    assert cfg.policy.unfreeze_at == expected
    assert FinetuneConfig.resolve(
        recipe="medical-xray", epochs=2, unfreeze_at=(2,)
    ).policy.unfreeze_at == (2,)
