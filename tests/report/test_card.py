"""The run report: README.md model card (front matter, classes verbatim, results, how to load)
and plots, idempotent, on finished, interrupted and multi-label runs."""

import json
import shutil

import pytest
import yaml
from PIL import Image

import finetune
from finetune.report import model_card, write_run_report
from tests.conftest import COLOURS, make_image

CLASSES = ("cat [tabby] *x*", "dög_2|b")  # Markdown and YAML characters, non-ASCII


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("card")
    for split, n in (("train", 4), ("val", 2), ("test", 2)):
        for name, colour in zip(CLASSES, ("cat", "dog")):
            for i in range(n):
                make_image(root / "data" / split / name / f"{i}.png", COLOURS[colour], seed=i + n)
    result = finetune.adapt(
        "test_resnet",
        root / "data",
        pretrained=False,
        epochs=2,
        img_size=32,
        batch_size=4,
        num_workers=0,
        warmup_epochs=0.0,
        freeze_stages=1,
        output=str(root / "run"),
        verbose=False,
    )
    return result.run_dir


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_card_front_matter_body_and_plots(run_dir):
    written = write_run_report(run_dir)
    assert [p.relative_to(run_dir).as_posix() for p in written] == [
        "plots/curves.png",
        "plots/confusion_val.png",
        "plots/confusion_test.png",
        "README.md",
    ]
    for png in written[:-1]:
        with Image.open(png) as img:
            img.verify()
    text = (run_dir / "README.md").read_text()
    meta = front_matter(text)
    config = json.loads((run_dir / "config.json").read_text())
    metrics = config["finetune"]["metrics"]
    assert meta["library_name"] == "timm" and meta["pipeline_tag"] == "image-classification"
    assert meta["tags"] == ["image-classification", "timm", "finetune"]
    assert meta["license"] == config["pretrained_cfg"]["license"]
    results = meta["model-index"][0]["results"]
    assert [r["dataset"]["split"] for r in results] == ["validation", "test"]
    accuracy = {r["dataset"]["split"]: r["metrics"][0] for r in results}
    assert accuracy["test"]["type"] == "accuracy"
    assert accuracy["test"]["value"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-4)
    for name in CLASSES:
        assert f"| {name} | 4 | 2 | 2 |" in text  # verbatim, with its images per split
    assert "- freeze_stages: 1" in text and "random init" in text
    assert "| test | 4 |" in text and "- crop_pct: 0.95" in text and "- mean: 0.5, 0.5, 0.5" in text
    assert f'timm.create_model("local-dir:{run_dir}", pretrained=True)' in text
    assert "hf-hub:ORG/NAME" in text and f"finetune predict {run_dir}" in text
    assert f"finetune export {run_dir} --format onnx" in text and "onnxruntime" in text
    assert "![curves](plots/curves.png)" in text
    assert model_card(run_dir) == text


def test_write_run_report_is_idempotent(run_dir):
    first = write_run_report(run_dir)
    card = (run_dir / "README.md").read_bytes()
    assert write_run_report(run_dir) == first
    assert (run_dir / "README.md").read_bytes() == card
    assert not [p for p in run_dir.rglob("*.tmp")]


def test_interrupted_run_gets_curves_and_a_card_without_results(run_dir, tmp_path):
    copy = tmp_path / "interrupted"
    shutil.copytree(run_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    del config["finetune"]["metrics"]
    (copy / "config.json").write_text(json.dumps(config))
    (copy / "metrics.jsonl").unlink()
    shutil.rmtree(copy / "plots")
    (copy / "README.md").unlink()
    written = write_run_report(copy)
    assert [p.name for p in written] == ["curves.png", "README.md"]
    text = (copy / "README.md").read_text()
    assert "model-index" not in front_matter(text) and "No results yet" in text
    assert all(name in text for name in CLASSES)


def test_the_card_of_a_refit_says_the_validation_images_trained(run_dir, tmp_path):
    copy = tmp_path / "refit"
    shutil.copytree(run_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    config["finetune"]["config"]["data"]["train_on_val"] = True
    (copy / "config.json").write_text(json.dumps(config))
    assert "train: 8 images (the validation images too: train_on_val)" in model_card(copy)
    assert "(the validation images too" not in model_card(run_dir)


def test_the_card_of_a_distilled_run_names_its_teacher(run_dir, tmp_path):
    copy = tmp_path / "taught"
    shutil.copytree(run_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    config["finetune"]["config"]["train"].update(teacher="/runs/big", distill=0.5)
    (copy / "config.json").write_text(json.dumps(config))
    assert "| teacher (distillation) | `/runs/big`, weight 0.5 against the labels |" in (
        model_card(copy)
    )
    assert "teacher (distillation)" not in model_card(run_dir)


def test_multilabel_run_gets_per_label_bars_and_map(run_dir, tmp_path):
    copy = tmp_path / "multi"
    shutil.copytree(run_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    label = {"auc": 0.9, "ap": 0.8, "f1": 0.7, "precision": 0.7, "recall": 0.7, "support": 3}
    report = {"mAP": 0.75, "macro_auc": 0.9, "macro_f1": 0.7, "micro_f1": 0.72,
              "num_samples": 4, "per_label": {c: label for c in CLASSES}}  # fmt: skip
    config["finetune"].update(multi_label=True, metrics={"best_epoch": 2, "val": report})
    (copy / "config.json").write_text(json.dumps(config))
    shutil.rmtree(copy / "plots")
    written = write_run_report(copy)
    assert [p.name for p in written] == ["curves.png", "per_label_val.png", "README.md"]
    text = (copy / "README.md").read_text()
    metric = front_matter(text)["model-index"][0]["results"][0]["metrics"][0]
    assert metric == {"type": "mAP", "value": 0.75, "name": "validation mAP"}
    assert "| validation | 4 | 0.7500 | 0.9000 | 0.7000 | 0.7200 |" in text
    assert "multi-label" in text and ".sigmoid()" in text


def test_card_of_a_plain_timm_directory(tmp_path):
    config = {
        "architecture": "resnet18",
        "num_classes": 2,
        "label_names": ["a", "b"],
        "pretrained_cfg": {"input_size": [3, 224, 224], "mean": [0.5] * 3, "std": [0.5] * 3},
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    text = model_card(tmp_path)
    assert "license" not in front_matter(text) and "no `finetune` section" in text
    assert "No results yet" in text
