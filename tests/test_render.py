"""finetune.render: events to rich output, escaped; reporting(verbose) and its silence; the scan
report."""

import io
import logging
import warnings

from rich.console import Console

from finetune.events import emit, listening
from finetune.render import Renderer, report_table, reporting


def test_scan_command_prints_the_report(image_folder):
    from typer.testing import CliRunner

    from finetune.cli import app

    (image_folder / "dog" / "broken.png").write_bytes(b"\x89PNG nope")
    result = CliRunner().invoke(app, ["scan", str(image_folder)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for text in (
        "2 classes",
        "train share",
        "image sizes: smallest 40x32",
        "RGB",
        "class imbalance",
        "1 unreadable files (skipped)",
        "broken.png",
        "from the scan cache",
    ):
        assert text in result.output, text
    result = CliRunner().invoke(app, ["scan", str(image_folder), "--strict"])
    assert result.exit_code == 2 and "broken.png" in result.output


def _console():
    return Console(file=io.StringIO(), width=200, highlight=False)


def _text(console) -> str:
    return console.file.getvalue()


def test_user_strings_are_escaped_not_parsed_as_markup():
    console = _console()
    with listening(Renderer(console)):
        emit("info", "class [/] and [red]x[/red]")
        emit("warning", "file [bold]y.png")
    out = _text(console)
    assert "class [/] and [red]x[/red]" in out and "file [bold]y.png" in out


def test_a_class_named_like_markup_renders_in_the_report_table():
    # regression: a class named "[/]" crashed the final report with rich's MarkupError
    report = {
        "accuracy": 1.0,
        "macro_recall": 1.0,
        "num_samples": 2,
        "per_class": {
            "[/]": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1},
            "[red]": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1},
        },
    }
    console = _console()
    console.print(report_table(report, "val [x]"))
    assert "[/]" in _text(console) and "[red]" in _text(console) and "val [x]" in _text(console)


def test_piped_progress_is_a_line_every_tenth_and_never_a_live_bar():
    console = _console()
    with listening(Renderer(console)):
        for done in range(0, 21):
            emit("progress", key="k", title="epoch 1/2", done=done, total=20, stats="loss 0.1",
                 seconds=done * 0.5)  # fmt: skip
        emit("progress", key="k", title="epoch 1/2", done=None, total=20, stats="")
        emit("progress", key="v", title="validating", done=1, total=2, stats="", log=False)
    lines = _text(console).splitlines()
    assert lines[0] == "epoch 1/2: 10% (2/20) loss 0.1, ETA 9s"
    assert [line.split(":")[1].split("%")[0].strip() for line in lines] == [
        str(p) for p in range(10, 100, 10)
    ]  # no 0 %, no 100 % (the epoch line follows), nothing for validation


def test_the_best_epoch_marker_is_explained_once():
    record = dict(epoch=1, train_loss=0.5, train_accuracy=0.8, val_loss=0.4, val_accuracy=0.9,
                  best=True, train_images_per_s=100.0, epoch_seconds=12.0, lr=1e-3)  # fmt: skip
    console = _console()
    with listening(Renderer(console)):
        for epoch in (1, 2):
            emit("epoch", record={**record, "epoch": epoch}, epochs=2, score_name="val_accuracy",
                 eta=12.0 * (2 - epoch))  # fmt: skip
    first, second = _text(console).splitlines()
    assert "* = best validation score" in first and "run ETA 12s" in first and "lr 0.001" in first
    assert "* = best" not in second and second.endswith("* | lr 0.001 | 100.0 img/s, 12 s")


def test_reporting_quiet_silences_warnings_and_timm_logging(capfd):
    with reporting(verbose=False):
        warnings.warn("you do not see me")
        logging.getLogger("timm").warning("nor me")
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_reporting_renders_warnings_as_one_line_each():
    console = _console()
    with reporting(verbose=True, console=console):
        warnings.warn("careful [/]")
    assert _text(console).strip() == "warning: careful [/]"


def test_nested_reporting_renders_once():
    console = _console()
    with reporting(verbose=True, console=console):
        with reporting(verbose=True, console=_console()):
            emit("info", "once")
    assert _text(console).count("once") == 1
