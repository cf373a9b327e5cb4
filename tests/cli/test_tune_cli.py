"""finetune tune on the command line: flags become fixed fields, the report a table of trials."""

from typer.testing import CliRunner

import finetune.cli


def test_tune_prints_the_trials_and_where_the_result_is(image_folder, tmp_path):
    args = ["tune", "--data", str(image_folder), "--backbone", "test_resnet", "--no-pretrained",
            "--img-size", "32", "--batch-size", "4", "--num-workers", "0", "--epochs", "1",
            "--trials", "2", "--output", str(tmp_path / "study"), "--lr", "0.002"]  # fmt: skip
    result = CliRunner().invoke(finetune.cli.app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "study data-test_resnet: 2 trials" in result.output
    assert "best: val_accuracy" in result.output and "best.yaml" in result.output
    assert "Plan:" not in result.output  # each trial's plan table stays out of the study's view
    assert "lr=" not in result.output  # --lr is fixed, not searched


def test_tune_without_budget_or_trials_is_one_red_line(image_folder, tmp_path):
    args = ["tune", "--data", str(image_folder), "--output", str(tmp_path / "s")]
    result = CliRunner().invoke(finetune.cli.app, args)
    assert result.exit_code == 2 and "tune needs --budget" in result.output


def test_tune_help_shows_the_search_texts_whole():
    # regression: "[choices]" was read as rich markup and dropped ("{low, high, log} or .")
    result = CliRunner().invoke(finetune.cli.app, ["tune", "--help"], env={"COLUMNS": "250"})
    assert "{low, high, log} or a list of choices" in result.output
