"""Issue 5: the LR finder works with frozen stages and writes its plot."""

from PIL import Image
from typer.testing import CliRunner

from finetune.cli import app
from finetune.tools.lrfind import lr_find


def test_lr_find_with_frozen_stages(image_folder, tmp_path):
    result = lr_find(
        "test_resnet",
        image_folder,
        pretrained=False,
        img_size=32,
        batch_size=4,
        num_workers=0,
        freeze_until="layer3",
        steps=40,
        start_lr=1e-5,
        end_lr=10,
        output=tmp_path / "lr.png",
        verbose=False,
    )
    assert 1e-5 <= result.suggestion <= 10 and len(result.lrs) == len(result.losses) >= 3
    assert all(b > a for a, b in zip(result.lrs, result.lrs[1:]))
    assert Image.open(result.plot).size == (640, 400)


def test_lr_find_cli(image_folder, tmp_path):
    out = tmp_path / "plot.png"
    result = CliRunner().invoke(
        app,
        [
            "lr-find",
            "--data",
            str(image_folder),
            "--backbone",
            "test_resnet",
            "--no-pretrained",
            "--img-size",
            "32",
            "--batch-size",
            "4",
            "--steps",
            "20",
            "--linear-probe",
            "--output",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "steepest descent" in result.output and out.is_file()


def test_lr_find_steps_through_the_trainers_own_step_and_takes_a_recipe(
    image_folder, tmp_path, monkeypatch
):
    # regression: lr-find called the Trainer's private _to_device/_autocast/_loss and stepped
    # without the GradScaler; now every point of the sweep is one Trainer.optimizer_step
    from finetune.train.trainer import Trainer

    calls = []
    real = Trainer.optimizer_step
    monkeypatch.setattr(Trainer, "optimizer_step", lambda self: calls.append(1) or real(self))
    result = lr_find(
        "test_resnet",
        image_folder,
        recipe="linear-probe",
        pretrained=False,
        img_size=32,
        batch_size=4,
        num_workers=0,
        steps=12,
        start_lr=1e-4,
        end_lr=1e-1,
        output=None,
        verbose=False,
    )
    assert len(calls) == len(result.lrs) == 12
