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


def test_progress_is_not_drawn_when_output_is_not_a_terminal():
    console = _console()
    with listening(Renderer(console)):
        emit("progress", key="k", title="t", done=1, total=2, stats="")
        emit("progress", key="k", title="t", done=None, total=2, stats="")
    assert _text(console) == ""


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
