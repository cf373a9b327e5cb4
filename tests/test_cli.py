import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from finetune.cli import app

runner = CliRunner()
FAST = ["--no-pretrained", "--epochs", "1", "--img-size", "32", "--batch-size", "4",
        "--num-workers", "0"]


def invoke(*args):
    # a wide console, so that table cells are not wrapped across lines
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


@pytest.fixture
def run_dir(image_folder, tmp_path):
    out = tmp_path / "run"
    result = invoke("run", "--backbone", "test_resnet", "--data", image_folder, "--output", out,
                    *FAST)
    assert result.exit_code == 0, result.output
    assert "run directory" in result.output and "Plan: full" in result.output
    return out


def test_run_then_predict_csv_and_json(run_dir, image_folder, tmp_path):
    csv_path = tmp_path / "preds.csv"
    result = invoke("predict", run_dir, image_folder, "--top-k", "2", "--output", csv_path)
    assert result.exit_code == 0, result.output
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "path,label,prob,label_2,prob_2" and len(lines) == 13
    json_path = tmp_path / "preds.json"
    assert invoke("predict", run_dir, image_folder / "cat", "--output", json_path).exit_code == 0
    records = json.loads(json_path.read_text())
    assert len(records) == 6 and set(records[0]) == {"path", "label", "prob"}


def test_recipe_with_flag_override(image_folder, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("backbone:\n  name: test_resnet\ntrain:\n  epochs: 5\n")
    out = tmp_path / "run"
    result = invoke("run", "--recipe", recipe, "--data", image_folder, "--output", out, *FAST)
    assert result.exit_code == 0, result.output
    cfg = json.loads((out / "config.json").read_text())["finetune"]["config"]
    assert cfg["backbone"]["name"] == "test_resnet" and cfg["train"]["epochs"] == 1


@pytest.mark.parametrize("args, message", [
    (["--data", "{tmp}/missing"], "data folder not found"),
    (["--data", "{data}", "--backbone", "resnet5O"], "Did you mean: resnet50"),
    (["--data", "{data}", "--freeze-until", "layer9"], "no module named 'layer9'"),
    (["--data", "{data}", "--recipe", "{tmp}/bad.yaml"], "unknown key 'epoch'"),
    (["--data", "{data}", "--precision", "fp8"], "'fp8' is not one of"),
    (["--data", "{data}", "--weights", "{tmp}/none.pth"], "weight file not found"),
    (["--backbone", "test_resnet"], "--data is required"),
])
def test_user_errors_are_one_line_and_exit_2(image_folder, tmp_path, args, message):
    (tmp_path / "bad.yaml").write_text("train:\n  epoch: 3\n")
    args = [a.format(tmp=tmp_path, data=image_folder) for a in args]
    if "--backbone" not in args:
        args += ["--backbone", "test_resnet"]
    result = invoke("run", *args, *FAST, "--output", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("error:") and result.output.count("error:") == 1


def test_existing_output_refused_and_debug_shows_traceback(run_dir, image_folder):
    args = ["run", "--backbone", "test_resnet", "--data", image_folder, "--output", run_dir, *FAST]
    result = invoke(*args)
    assert result.exit_code == 2 and "already holds a run" in result.output
    result = invoke(*args, "--debug")
    assert isinstance(result.exception, FileExistsError)


def test_predict_on_a_truncated_checkpoint_fails_cleanly(run_dir, image_folder):
    weights = run_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    result = invoke("predict", run_dir, image_folder)
    assert result.exit_code == 2
    assert "model.safetensors: cannot read weights" in result.output


def test_help_is_fast_and_imports_no_torch():
    code = ("import sys, finetune.cli; from typer.testing import CliRunner; "
            "r = CliRunner().invoke(finetune.cli.app, ['run', '--help']); "
            "assert r.exit_code == 0 and '--freeze-until' in r.output; "
            "assert 'torch' not in sys.modules, 'torch imported by --help'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


def test_error_text_with_brackets_is_printed_verbatim(tmp_path):
    result = invoke("run", "--backbone", "test_resnet", "--data", tmp_path / "[raw]" / "x", *FAST)
    assert result.exit_code == 2 and "[raw]/x" in result.output


def test_inspect_prints_stages_and_the_plan():
    result = invoke("inspect", "--backbone", "test_efficientnet", "--freeze-stages", "2",
                    "--layer-decay", "0.5")
    assert result.exit_code == 0, result.output
    for text in ("Plan: freeze_stages=2", "blocks.0", "frozen", "peak lr", "trainable%",
                 "--peft lora would adapt"):
        assert text in result.output, text
    result = invoke("inspect", "--backbone", "test_resnet", "--freeze-until", "layer9")
    assert result.exit_code == 2 and "Valid stage names" in result.output


def test_dry_run_prints_the_plan_and_writes_nothing(image_folder, tmp_path):
    out = tmp_path / "run"
    result = invoke("run", "--backbone", "test_vit", "--data", image_folder, "--output", out,
                    "--peft", "lora", "--lora-r", "4", "--dry-run", *FAST)
    assert result.exit_code == 0, result.output
    assert "Plan: peft lora (r=4)" in result.output and not out.exists()


def test_unfreeze_schedule_from_the_cli(image_folder, tmp_path):
    result = invoke("run", "--backbone", "test_resnet", "--data", image_folder, "--output",
                    tmp_path / "run", "--freeze-stages", "4", "--unfreeze-at", "2", *FAST[:-4],
                    "--epochs", "2", "--batch-size", "4", "--num-workers", "0")
    assert result.exit_code == 0, result.output
    assert "thaws at" in result.output and "epoch 2: thawed layer3" in result.output


def test_a_selector_flag_replaces_the_recipes_selector(image_folder, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("backbone:\n  name: test_resnet\npolicy:\n  freeze_until: layer2\n")
    result = invoke("run", "--recipe", recipe, "--data", image_folder, "--freeze-stages", "3",
                    "--dry-run", *FAST)
    assert result.exit_code == 0, result.output
    assert "Plan: freeze_stages=3" in result.output
