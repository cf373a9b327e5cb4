import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import finetune
from finetune.cli import app
from finetune.config import CHOICES

runner = CliRunner()
FAST = "--no-pretrained --epochs 1 --img-size 32 --batch-size 4 --num-workers 0".split()


def invoke(*args):
    # a wide console, so that table cells are not wrapped across lines
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


@pytest.fixture
def run_dir(image_folder, tmp_path):
    out = tmp_path / "run"
    result = invoke(
        "run", "--backbone", "test_resnet", "--data", image_folder, "--output", out, *FAST
    )
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


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "{tmp}/missing"], "data folder not found"),
        (["--data", "{data}", "--backbone", "resnet5O"], "Did you mean: resnet50"),
        (["--data", "{data}", "--freeze-until", "layer9"], "no module named 'layer9'"),
        (["--data", "{data}", "--recipe", "{tmp}/bad.yaml"], "unknown key 'epoch'"),
        (["--data", "{data}", "--weights", "{tmp}/none.pth"], "weight file not found"),
        (["--backbone", "test_resnet"], "--data is required"),
    ],
)
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
    code = (
        "import sys, finetune.cli; from typer.testing import CliRunner; "
        "r = CliRunner().invoke(finetune.cli.app, ['run', '--help']); "
        "assert r.exit_code == 0 and '--freeze-until' in r.output; "
        "r = CliRunner().invoke(finetune.cli.app, ['--help']); "
        "assert r.exit_code == 0 and 'lr-find' in r.output; "
        "assert 'torch' not in sys.modules, 'torch imported by --help'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


def test_error_text_with_brackets_is_printed_verbatim(tmp_path):
    result = invoke("run", "--backbone", "test_resnet", "--data", tmp_path / "[raw]" / "x", *FAST)
    assert result.exit_code == 2 and "[raw]/x" in result.output


def test_inspect_prints_stages_and_the_plan():
    result = invoke(
        "inspect", "--backbone", "test_efficientnet", "--freeze-stages", "2", "--layer-decay", "0.5"
    )
    assert result.exit_code == 0, result.output
    for text in (
        "Plan: freeze_stages=2",
        "blocks.0",
        "frozen",
        "peak lr",
        "trainable%",
        "--peft lora would adapt",
    ):
        assert text in result.output, text
    result = invoke("inspect", "--backbone", "test_resnet", "--freeze-until", "layer9")
    assert result.exit_code == 2 and "Valid stage names" in result.output


def test_dry_run_prints_the_plan_and_writes_nothing(image_folder, tmp_path):
    out = tmp_path / "run"
    args = "--backbone test_vit --peft lora --lora-r 4 --dry-run".split()
    result = invoke("run", *args, "--data", image_folder, "--output", out, *FAST)
    assert result.exit_code == 0, result.output
    assert "Plan: peft lora (r=4)" in result.output and not out.exists()


def test_unfreeze_schedule_from_the_cli(image_folder, tmp_path):
    args = "--backbone test_resnet --freeze-stages 4 --unfreeze-at 2".split()
    out = tmp_path / "run"
    # the last --epochs wins
    result = invoke("run", *args, "--data", image_folder, "--output", out, *FAST, "--epochs", "2")
    assert result.exit_code == 0, result.output
    assert "thaws at" in result.output and "epoch 2: thawed layer3" in result.output


def test_a_selector_flag_replaces_the_recipes_selector(image_folder, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("backbone:\n  name: test_resnet\npolicy:\n  freeze_until: layer2\n")
    args = ["--recipe", recipe, "--freeze-stages", "3", "--dry-run", *FAST]
    result = invoke("run", *args, "--data", image_folder)
    assert result.exit_code == 0, result.output
    assert "Plan: freeze_stages=3" in result.output


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and result.output.strip() == f"finetune {finetune.__version__}"


def _help_line(output: str, flag: str) -> str:
    return next(line for line in output.splitlines() if re.search(rf"│ +{flag} ", line))


def test_run_help_shows_panels_choices_defaults_and_examples():
    result = invoke("run", "--help")
    assert result.exit_code == 0, result.output
    for panel in ("Data", "Model", "Policy", "Optimisation", "Training", "Output"):
        assert f"─ {panel} ─" in result.output, panel
    assert "|".join(CHOICES["policy.bn"]) in _help_line(result.output, "--bn")
    assert "|".join(CHOICES["optim.optimizer"]) in _help_line(result.output, "--optimizer")
    assert "default: (auto)" in _help_line(result.output, "--lr")  # by architecture
    assert "--no-ema" in _help_line(result.output, "--ema")
    assert "CSV manifest" in _help_line(result.output, "--data")
    assert "Examples:" in result.output and "(default" not in result.output
    for command in ("predict", "scan"):
        assert "Examples:" in invoke(command, "--help").output, command


@pytest.mark.parametrize(
    "flag, value, key", [("--bn", "nope", "policy.bn"), ("--precision", "fp8", "train.precision")]
)
def test_an_invalid_choice_exits_2_naming_the_choices(image_folder, flag, value, key):
    result = invoke("run", "--data", image_folder, flag, value)
    assert result.exit_code == 2, result.output
    assert f"'{value}' is not one of" in result.output and "Traceback" not in result.output
    for choice in CHOICES[key]:
        assert f"'{choice}'" in result.output, choice


def test_flags_reach_the_api_as_config_overrides(monkeypatch, image_folder, tmp_path):
    import finetune.api

    calls = []
    monkeypatch.setattr(finetune.api, "adapt", lambda **kw: calls.append(kw))
    result = invoke(
        "run",
        "--data",
        image_folder,
        "--backbone",
        "test_resnet",
        "--no-ema",
        "--bn",
        "train",
        "--lr",
        "0.01",
        "--no-pretrained",
        "--output",
        tmp_path,
    )
    assert result.exit_code == 0, result.output
    assert calls == [
        dict(
            recipe=None,
            resume=None,
            dry_run=False,
            path=str(image_folder),
            name="test_resnet",
            ema=False,
            bn="train",
            lr=0.01,
            pretrained=False,
            output=str(tmp_path),
        )
    ]
    assert type(calls[0]["bn"]) is str  # a plain string, not the Enum typer parsed


def test_an_unexpected_exception_is_one_line_with_the_traceback_in_a_file(
    monkeypatch, image_folder
):
    import finetune.api

    def boom(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(finetune.api, "adapt", boom)
    monkeypatch.delenv("FINETUNE_DEBUG", raising=False)
    result = invoke("run", "--data", image_folder)
    assert result.exit_code == 1, result.output
    assert result.output.count("error:") == 1 and "Traceback" not in result.output
    line = result.output.strip().splitlines()[-1]
    match = re.fullmatch(
        r"error: RuntimeError: boom \(traceback written to (.+); "
        r"--debug or FINETUNE_DEBUG=1 shows it\)",
        line,
    )
    assert match, line
    written = Path(match[1])
    try:
        assert "RuntimeError: boom" in written.read_text()
    finally:
        written.unlink()
    result = runner.invoke(
        app, ["run", "--data", str(image_folder)], env={"COLUMNS": "200", "FINETUNE_DEBUG": "1"}
    )
    assert isinstance(result.exception, RuntimeError) and str(result.exception) == "boom"
    assert isinstance(invoke("run", "--data", image_folder, "--debug").exception, RuntimeError)


def test_ctrl_c_outside_training_says_so_and_exits_130(monkeypatch, image_folder):
    """Regression (hostile pass): Ctrl-C while a command started up, or while tune wrote its
    files, ended with exit 130 and no line at all (typer's own handling)."""
    import finetune.api

    def pressed(**kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(finetune.api, "adapt", pressed)
    result = invoke("run", "--data", image_folder)
    assert result.exit_code == 130 and result.output.strip() == "interrupted (Ctrl-C)"


def test_switches_show_no_value_placeholder():
    result = invoke("run", "--help")
    switch_lines = [s for s in result.output.splitlines() if "--no-strict" in s or "--debug" in s]
    assert switch_lines and not any("<bool>" in s for s in switch_lines)


def test_piped_output_keeps_every_line_whole(image_folder, tmp_path):
    # regression: piped to a file the log was hard-wrapped at 80 columns (numbers and paths split
    # mid-word, table cells cut), with a blank line before every epoch line
    out = tmp_path / ("a-rather-long-run-directory-name-" * 3 + "end")
    bad = image_folder / "cat" / ("a-broken-image-with-a-long-name-" * 3 + ".png")
    bad.write_bytes(b"\x89PNG broken")
    result = runner.invoke(app, ["run", "--backbone", "test_resnet", "--data", str(image_folder),
                                 "--output", str(out), *FAST, "--epochs", "2"],
                           env={"COLUMNS": "80"})  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.endswith(str(out)) for line in lines)  # the run directory, whole
    assert any(str(bad) in line for line in lines)  # the bad file, named in full
    # the epoch lines (progress lines "epoch 1/2: 40% ..." may come before them on a slow machine)
    epochs = [i for i, line in enumerate(lines) if re.match(r"epoch \d+/\d+  train loss", line)]
    assert len(epochs) == 2 and all(lines[i - 1].strip() for i in epochs)
    assert "* = best validation score" in result.output


def test_predict_to_a_file_prints_a_summary_not_every_row(run_dir, image_folder, tmp_path):
    result = invoke("predict", run_dir, image_folder, "--output", tmp_path / "p.csv")
    assert result.exit_code == 0, result.output
    assert "wrote 12 predictions to" in result.output and "mean top-1 probability" in result.output
    assert "cat0.png" not in result.output  # the rows are in the file


def test_export_writes_and_verifies_an_onnx_file(run_dir, tmp_path):
    result = invoke("export", run_dir, "--output", tmp_path / "exp")
    assert result.exit_code == 0, result.output
    assert "top-1 agreement 1.000" in result.output
    assert (tmp_path / "exp" / "model.onnx").is_file()
    assert (tmp_path / "exp" / "model.onnx.json").is_file()
    bad = invoke("export", run_dir, "--format", "tflite")
    assert bad.exit_code == 2 and "onnx" in bad.output and "torchscript" in bad.output


def test_a_relative_data_path_is_recorded_absolute(image_folder, tmp_path, monkeypatch):
    # regression (review): --data from the CLI was recorded as typed, so --resume from another
    # folder failed ("data folder not found: data")
    monkeypatch.chdir(image_folder.parent)
    result = invoke("run", "--backbone", "test_resnet", "--data", "data", "--output",
                    tmp_path / "r", *FAST)  # fmt: skip
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["finetune"]["config"]["data"]["path"] == str(image_folder.resolve())
    monkeypatch.chdir(tmp_path)
    assert invoke("run", "--resume", tmp_path / "r", "--epochs", "2").exit_code == 0
