"""The augment preview grid (with the recipes commands that it is used with)."""

from PIL import Image


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
