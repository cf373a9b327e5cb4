"""Issue 4: every shipped recipe loads, validates, and trains a step; previews and the CLI."""

import json

import pytest
from PIL import Image

import finetune
from finetune.config import DataConfig, FinetuneConfig, recipes_dir
from finetune.data.augment import RandomDihedral, build_transform
from finetune.models.backbones import load_backbone

RECIPES = sorted(p.stem for p in recipes_dir().glob("*.yaml"))


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


def test_dihedral_covers_all_eight_symmetries():
    import random

    random.seed(0)
    img = Image.new("L", (2, 2))
    img.putdata([1, 2, 3, 4])
    seen = {RandomDihedral()(img).tobytes() for _ in range(200)}
    assert len(seen) == 8


@pytest.mark.parametrize(
    "data",
    [
        DataConfig(auto_augment="trivialaugment"),
        DataConfig(auto_augment="rand-m9-mstd0.5-inc1"),
        DataConfig(rotate=15, dihedral=True, hue_jitter=0.05, random_erasing=0.5),
    ],
)
def test_augmentation_options_build_and_run(data):
    _, info = load_backbone("test_resnet", pretrained=False)
    tf = build_transform(info, DataConfig(**{**data.__dict__, "img_size": 48}), training=True)
    assert tf(Image.new("RGB", (64, 40), (120, 30, 60))).shape == (3, 48, 48)


def test_recipes_cli_and_augment_preview(image_folder, tmp_path):
    from typer.testing import CliRunner

    from finetune.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["recipes", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "remote-sensing" in result.output
    result = runner.invoke(app, ["recipes", "show", "remote-sensing"])
    assert result.exit_code == 0 and "dihedral: true" in result.output and "Why:" in result.output
    result = runner.invoke(app, ["recipes", "show", "nope"])
    assert result.exit_code == 2 and "not one of" in result.output
    out = tmp_path / "preview.png"
    result = runner.invoke(
        app,
        [
            "augment-preview",
            "--data",
            str(image_folder),
            "--recipe",
            "remote-sensing",
            "--backbone",
            "test_resnet",
            "--img-size",
            "32",
            "--images",
            "2",
            "--samples",
            "3",
            "--output",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    grid = Image.open(out)
    assert grid.size == (4 * 32 + 5 * 4, 2 * 32 + 3 * 4)  # 4 columns, 2 rows, 4 px padding


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
