"""Every ``finetune ...`` command shown in README.md and docs/*.md runs, scaled down, so that the
docs cannot drift from the tool; the Python blocks compile; the files the docs name exist.

Commands are collected at import time from fenced code blocks (bash, sh, shell, console or no
language): each line that starts with ``finetune `` or ``$ finetune ``, with ``\\`` continuations
joined and ``# comments`` dropped (``shlex.split(comments=True)``). Each one is scaled down by
``scale`` (its rules are in the tables below), run in-process through typer's ``CliRunner`` in a
temporary working directory, and must exit 0 without a traceback. Flags the tool does not know
are never dropped or rewritten: a doc that names a flag or command that does not exist fails.

Inline commands in the prose (`` `finetune ...` ``) are often fragments (``finetune lr-find
--data DIR [policy flags]``), so they are not run: ``test_inline_command_names_real_options``
checks that their subcommand exists and that every ``--flag`` they name is one of its options.

A doc problem is marked in ``DOC_PROBLEMS`` (strict xfail, the tool's own words as the reason)
until the doc is fixed; a command meant to fail goes in ``EXPECTED_EXIT`` with its exit code.
Both are keyed by (file, command as written), not by line, so that edits elsewhere in a doc do not
move them; ``test_allow_lists_name_doc_commands`` fails on an entry that no longer matches.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_FENCES = {"", "bash", "sh", "shell", "console"}
PYTHON_FENCES = {"python", "py", "pycon"}
FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")


# --------------------------------------------------------------------------- reading the docs


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def fenced_blocks(path: Path):
    """(language, first line number, [(line number, text)]) of each fenced block of a file."""
    lang, fence, lines, start = None, "", [], 0
    for no, line in enumerate(path.read_text().splitlines(), 1):
        m = FENCE.match(line)
        if fence and m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
            yield lang, start, lines
            lang, fence, lines = None, "", []
        elif fence:
            lines.append((no, line))
        elif m:
            lang, fence, lines, start = m.group(2).lower(), m.group(1), [], no + 1
    if fence:  # an unclosed fence runs to the end of the file (as CommonMark reads it)
        yield lang, start, lines


def shell_commands(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, argv) of each ``finetune`` command line in the file's shell blocks."""
    found = []
    for lang, _, lines in fenced_blocks(path):
        if lang not in SHELL_FENCES:
            continue
        joined: list[tuple[int, str]] = []  # logical lines: "\" continuations joined
        pending = None
        for no, text in lines:
            if pending is not None:
                pending = (pending[0], pending[1][:-1] + " " + text.strip())
            else:
                pending = (no, text.strip())
            if not pending[1].endswith("\\"):
                joined.append(pending)
                pending = None
        if pending is not None:
            joined.append((pending[0], pending[1].rstrip("\\")))
        for no, text in joined:
            if text.startswith("$ "):
                text = text[2:].lstrip()
            if text.startswith("finetune "):
                found.append((no, shlex.split(text, comments=True)))
    return found


def without_fences(text: str) -> str:
    """The text with every fenced block blanked (line count kept), for inline spans."""
    out, fence = [], ""
    for line in text.splitlines():
        m = FENCE.match(line)
        if fence:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                fence = ""
            out.append("")
        elif m:
            fence = m.group(1)
            out.append("")
        else:
            out.append(line)
    return "\n".join(out)


def inline_spans(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of each single-backtick code span outside fenced blocks; a span may
    run over a line break (Markdown allows it), which becomes a space."""
    text = without_fences(path.read_text())
    return [
        (text.count("\n", 0, m.start()) + 1, " ".join(m.group(1).split()))
        for m in re.finditer(r"(?<!`)`([^`]+)`(?!`)", text)
    ]


@dataclass(frozen=True)
class DocCommand:
    file: str  # relative to the repository
    line: int
    argv: tuple[str, ...]  # as written, "finetune" first

    @property
    def text(self) -> str:
        return " ".join(self.argv)

    @property
    def id(self) -> str:
        short = self.text if len(self.text) <= 90 else self.text[:87] + "..."
        return f"{self.file}:{self.line} {short}"


COMMANDS = [DocCommand(rel(p), no, tuple(argv)) for p in DOCS for no, argv in shell_commands(p)]
INLINE = [
    DocCommand(rel(p), no, tuple(shlex.split(span)))
    for p in DOCS
    for no, span in inline_spans(p)
    if span.startswith("finetune ") and "'" not in span and '"' not in span
]
PYTHON_BLOCKS = [
    (rel(p), start, "\n".join(t for _, t in lines))
    for p in DOCS
    for lang, start, lines in fenced_blocks(p)
    if lang in PYTHON_FENCES
]

# --------------------------------------------------------------------------- allow-lists

# Doc lines that are meant to fail: (file, command as written) -> (exit code, why).
EXPECTED_EXIT: dict[tuple[str, str], tuple[int, str]] = {}

# Doc lines that are wrong (the tool says so): strict xfail until the doc is fixed.
# (file, command as written) -> the problem, in the tool's words.
DOC_PROBLEMS: dict[tuple[str, str], str] = {}

# Commands not run, with the reason shown in the test report.
NOT_RUN = {
    "demo": "finetune demo trains ImageNet weights on the 2,624 real elpv images for minutes; "
    "scripts/demo.sh runs it (it cannot be scaled down: it has no --data, and its --backbone "
    "needs pretrained weights, which the tiny test models lack)",
}

# --------------------------------------------------------------------------- the scaling rules

# Backbones become the tiny random-init timm test model with the same module names, so that
# --freeze-until layer3 / blocks.3 / stages.2 and --freeze-stages N still name real modules.
# The first prefix that matches wins; anything else (hf-hub:, tv:, other timm names) is a ResNet.
TINY_BACKBONES = [
    (("resnet", "resnext", "wide_resnet", "seresnet", "tv:resnet", "tv:resnext"), "test_resnet"),
    (("efficientnet", "tf_efficientnet", "mobilenet", "tv:efficientnet"), "test_efficientnet"),
    (("convnext", "tv:convnext"), "test_convnext"),
    (("vit_", "deit", "beit", "eva", "tv:vit", "hf-hub:timm/vit"), "test_vit"),
]

# Options whose value is replaced: option -> rule name (see Scaler.value). The option stays.
VALUE_RULES = {
    "--backbone": "tiny backbone",  # TINY_BACKBONES
    "--epochs": "epochs",  # 1 (about a second); with gradual unfreezing, to the first thaw
    "--img-size": "32",  # 32 px
    "--batch-size": "4",
    "--num-workers": "0",  # no loader processes in tests
    "--steps": "8",  # lr-find: 8 steps instead of 100
    "--data": "data",  # the fixture the doc's path stands for (Scaler.data)
    "--output": "output",  # the same relative path under tmp_path/out
    "--weights": "weights",  # a safetensors file of the tiny backbone's state dict
    "--resume": "run",  # a copy of the module's trained run
    "--budget": "budget",  # budgets over a minute shrink to 5 s (a run plans itself into them)
}
# Options dropped with their value: option -> why.
DROPPED = {"--nproc": "several processes are tests/train/test_distributed.py's job"}
# Options added when the command has them and the doc gave none: subcommand -> [(option, value)]
# (value None: a flag). Not added to `run --resume`, which refuses every other flag.
APPENDED = {
    "run": [
        ("--backbone", "default"),  # the config's default backbone, made tiny
        ("--no-pretrained", None),  # random init: no download
        ("--epochs", "1"),
        ("--img-size", "32"),
        ("--batch-size", "4"),
        ("--num-workers", "0"),
    ],
    "lr-find": [
        ("--backbone", "default"),
        ("--no-pretrained", None),
        ("--img-size", "32"),
        ("--batch-size", "4"),
        ("--steps", "8"),
    ],
    "augment-preview": [("--backbone", "default"), ("--img-size", "32")],
}
# Positional arguments by subcommand: "run" a copy of the trained run, "data" the fixture the
# path stands for, "images" each one an image file or folder (Scaler.data), "keep" as written.
POSITIONALS = {
    "predict": ["run", "images"],  # the last kind repeats
    "eval": ["run", "data"],
    "export": ["run"],
    "push": ["run", "keep"],  # the repo id stays; huggingface_hub's calls are faked
    "scan": ["data"],
    "pack": ["data", "keep"],  # OUT stays: a new folder the command writes
}
# Shell variables in the docs and the data they stand for (read from the docs: `D=` is the elpv
# folder `finetune demo` lays out, with train/ val/ test/).
SHELL_VARS = {"$D": "split", "${D}": "split"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def tiny_backbone(name: str) -> str:
    for prefixes, tiny in TINY_BACKBONES:
        if name.startswith(prefixes):
            return tiny
    return "test_resnet"


def click_command(argv: list[str]):
    """(the click command, how many tokens name it) for argv without the leading 'finetune'."""
    import typer

    import finetune.cli

    cmd, n = typer.main.get_command(finetune.cli.app), 0
    while hasattr(cmd, "commands") and n < len(argv) and argv[n] in cmd.commands:
        cmd, n = cmd.commands[argv[n]], n + 1
    return cmd, n


def option_table(cmd) -> dict[str, bool]:
    """Each option name of a click command (both sides of --x/--no-x) -> whether it takes a
    value."""
    table = {"--help": False}
    for p in cmd.params:
        if p.param_type_name == "option":
            for name in [*p.opts, *p.secondary_opts]:
                table[name] = not (p.is_flag or p.count)
    return table


class Scaler:
    """Turns one doc command into a scaled-down argv; makes the files it needs in tmp_path."""

    def __init__(self, request, tmp_path: Path):
        self.request, self.tmp = request, tmp_path
        self.backbone = None  # the tiny backbone of this command, once known
        self.copies = 0

    @cached_property
    def image_folder(self) -> Path:
        return self.request.getfixturevalue("image_folder")

    @cached_property
    def split_folder(self) -> Path:
        return self.request.getfixturevalue("split_folder")

    @cached_property
    def csv(self) -> Path:
        """A single-label manifest (path,label) over the image folder: the classes of the run."""
        rows = [(p.relative_to(self.tmp).as_posix(), p.parent.name)
                for p in sorted(self.image_folder.rglob("*.png"))]  # fmt: skip
        return self.request.getfixturevalue("write_csv")(
            self.tmp / "labels.csv", ["path", "label"], rows
        )

    def run_copy(self) -> str:
        """A fresh copy of the module's trained run (commands may write into it)."""
        src = self.request.getfixturevalue("trained_run")
        self.copies += 1
        dst = self.tmp / "runs" / f"run{self.copies}"
        shutil.copytree(src, dst)
        return str(dst)

    def data(self, value: str) -> str:
        """What a doc's data path stands for: $D / elpv-binary -> the split folder; a CSV -> a
        manifest; an image file name -> such a file; any other path -> the class folder."""
        if SHELL_VARS.get(value) == "split" or "elpv-binary" in value:
            return str(self.split_folder)
        suffix = Path(value).suffix.lower()
        if suffix == ".csv":
            return str(self.csv)
        if suffix in IMAGE_SUFFIXES:
            from PIL import Image

            target = self.tmp / "images" / Path(value).name
            target.parent.mkdir(exist_ok=True)
            Image.open(next(self.image_folder.rglob("*.png"))).convert("RGB").save(target)
            return str(target)
        return str(self.image_folder)

    def epochs(self, doc_epochs: int) -> str:
        """1, or with gradual unfreezing the epochs the schedule needs (validation refuses a thaw
        after the last epoch; --unfreeze-every N: N + 1 epochs, so one stage thaws), at most the
        doc's own."""
        need = 1
        if "--unfreeze-at" in self.rest[:-1]:
            at = self.rest[self.rest.index("--unfreeze-at") + 1]
            need = max(int(x) for x in at.split(",") if x.strip().isdigit())
        elif "--unfreeze-every" in self.rest[:-1]:
            need = int(self.rest[self.rest.index("--unfreeze-every") + 1]) + 1
        return str(min(need, doc_epochs))

    def weights(self) -> str:
        import timm
        from safetensors.torch import save_file

        path = self.tmp / "weights.safetensors"
        model = timm.create_model(self.backbone or "test_resnet", pretrained=False)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
        return str(path)

    def value(self, option: str, value: str) -> list[str]:
        rule = VALUE_RULES[option]
        if rule == "tiny backbone":
            return [option, tiny_backbone(value)]
        if rule == "data":
            return [option, self.data(value)]
        if rule == "output":
            return [option, str(self.tmp / "out" / value.lstrip("/~"))]
        if rule == "epochs":
            return [option, self.epochs(int(value))]
        if rule == "weights":
            return [option, self.weights()]
        if rule == "run":
            return [option, self.run_copy()]
        if rule == "budget":
            from finetune.validation import parse_duration

            return [option, value if parse_duration(value) <= 60 else "5s"]
        return [option, rule]

    def positional(self, kind: str, value: str) -> str:
        if kind == "run":
            return self.run_copy()
        if kind in ("data", "images"):
            return self.data(value)
        return value

    def __call__(self, argv: list[str]) -> list[str]:
        """argv without the leading 'finetune' -> the scaled argv."""
        from finetune.config import FinetuneConfig

        cmd, n = click_command(argv)
        name, rest = " ".join(argv[:n]), argv[n:]
        self.rest = rest
        options = option_table(cmd)
        if "--backbone" in rest[:-1]:
            self.backbone = tiny_backbone(rest[rest.index("--backbone") + 1])
        else:
            self.backbone = tiny_backbone(FinetuneConfig().backbone.name)
        out, kinds, i = list(argv[:n]), list(POSITIONALS.get(name, [])), 0
        while i < len(rest):
            token = rest[i]
            if token.startswith("-") and len(token) > 1:
                option, eq, inline = token.partition("=")
                has_value = options.get(option)
                if has_value is None:  # unknown to the tool: kept, and the value it may take
                    out.append(token)
                    if not eq and i + 1 < len(rest) and not rest[i + 1].startswith("-"):
                        out.append(rest[i + 1])
                        i += 1
                elif has_value:
                    value = inline if eq else (rest[i + 1] if i + 1 < len(rest) else "")
                    i += 0 if eq else 1
                    if option in DROPPED:
                        pass
                    elif option in VALUE_RULES:
                        out += self.value(option, value)
                    else:
                        out += [option, value]
                else:
                    out.append(token)
            else:  # a positional argument
                kind = kinds.pop(0) if len(kinds) > 1 else (kinds[0] if kinds else "keep")
                out.append(self.positional(kind, token))
            i += 1
        if "--resume" not in out:
            for option, value in APPENDED.get(name, []):
                given = {o for o in out if o.startswith("--")}
                negated = option.replace("--no-", "--")
                if option not in options or option in given or negated in given:
                    continue
                if value == "default":
                    value = self.backbone
                out += [option] if value is None else [option, value]
        return out


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A finished 1-epoch run of test_resnet (cat/dog at 32 px) that stands for RUN_DIR,
    runs/..., and the run directories of predict, eval, export, push and --resume."""
    from tests.conftest import make_folder, tiny_run

    tmp = tmp_path_factory.mktemp("docs-run")
    return tiny_run(make_folder(tmp / "data"), output=str(tmp / "run")).run_dir


@pytest.fixture
def no_hub(monkeypatch):
    """huggingface_hub's repository calls, faked: ``push`` never reaches the network."""
    import huggingface_hub

    calls = []
    monkeypatch.setattr(
        huggingface_hub,
        "create_repo",
        lambda repo_id, **kw: (
            calls.append(("create", repo_id)) or f"https://huggingface.co/{repo_id}"
        ),
    )
    monkeypatch.setattr(huggingface_hub, "upload_folder", lambda **kw: calls.append(("upload", kw)))
    return calls


# --------------------------------------------------------------------------- the tests


def marked(commands: list[DocCommand]):
    params = []
    for c in commands:
        marks = []
        problem = DOC_PROBLEMS.get((c.file, c.text))
        if problem:
            marks.append(pytest.mark.xfail(strict=True, reason=problem))
        params.append(pytest.param(c, id=c.id, marks=marks))
    return params


@pytest.mark.parametrize("doc", marked(COMMANDS))
def test_doc_command_runs(doc: DocCommand, request, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import finetune.cli

    if doc.argv[1] in NOT_RUN:
        pytest.skip(NOT_RUN[doc.argv[1]])
    monkeypatch.chdir(tmp_path)  # default outputs (runs/..., lr-find.png) land here
    calls = request.getfixturevalue("no_hub") if doc.argv[1] == "push" else None
    args = Scaler(request, tmp_path)(list(doc.argv[1:]))
    result = CliRunner().invoke(finetune.cli.app, args, env={"COLUMNS": "200"})
    code, why = EXPECTED_EXIT.get((doc.file, doc.text), (0, ""))
    where = f"{doc.file}:{doc.line}: {doc.text}\nran: finetune {shlex.join(args)}\n{why}\n"
    assert result.exit_code == code, f"{where}exit {result.exit_code}\n{result.output[-3000:]}"
    assert "Traceback" not in result.output, where + result.output[-3000:]
    if calls is not None:
        assert [c[0] for c in calls] == ["create", "upload"], calls


@pytest.mark.parametrize("doc", [pytest.param(c, id=c.id) for c in INLINE])
def test_inline_command_names_real_options(doc: DocCommand):
    cmd, n = click_command(list(doc.argv[1:]))
    assert n > 0 or not doc.argv[1:], f"{doc.id}: no command '{doc.argv[1]}'"
    if n < len(doc.argv) - 1 and hasattr(cmd, "commands"):  # a group and an unknown subcommand
        pytest.fail(f"{doc.id}: '{doc.argv[n + 1]}' is not a command of 'finetune {doc.argv[1]}'")
    options = option_table(cmd)
    unknown = [
        t.partition("=")[0]
        for t in doc.argv[n + 1 :]
        if t.startswith("--") and t.partition("=")[0] not in options
    ]
    assert not unknown, f"{doc.id}: 'finetune {' '.join(doc.argv[1 : n + 1])}' has no {unknown}"


def test_docs_show_commands():
    """The collection itself works: the README's quick start is among the commands."""
    files = {c.file for c in COMMANDS}
    assert {"README.md", "docs/quickstart.md"} <= files, files
    assert any(c.argv[1] == "run" for c in COMMANDS if c.file == "README.md")


def test_allow_lists_name_doc_commands():
    """Every allow-list entry still names a command of the docs (remove it once fixed)."""
    shown = {(c.file, c.text) for c in COMMANDS}
    stale = [k for k in [*EXPECTED_EXIT, *DOC_PROBLEMS] if k not in shown]
    assert not stale, f"no longer in the docs: {stale}"


@pytest.mark.parametrize(
    "file,line,code", [pytest.param(*b, id=f"{b[0]}:{b[1]}") for b in PYTHON_BLOCKS]
)
def test_python_block_compiles(file, line, code):
    compile(code, f"{file}:{line}", "exec")


def linked_paths():
    """(file, target) of every relative Markdown link of the docs."""
    for path in DOCS:
        for m in re.finditer(r"\[[^\]]*\]\(([^)\s]+)\)", without_fences(path.read_text())):
            target = m.group(1).split("#")[0]
            if target and not re.match(r"^[a-z]+:", target):
                yield rel(path), os.path.relpath(path.parent / target, ROOT)


# paths of this repository named in inline code (`tests/train/test_resume.py::test_x`, ...)
REPO_PATH = re.compile(r"^(bench|docs|examples|finetune|recipes|scripts|tests)/[\w./*-]*(::\w+)?$")


def named_paths():
    for path in DOCS:
        for _, span in inline_spans(path):
            for token in span.split():
                token = token.strip("(),;:'\"")
                if REPO_PATH.match(token):
                    yield rel(path), token


@pytest.mark.parametrize("file,target", sorted(set(linked_paths())), ids=str)
def test_linked_file_exists(file, target):
    assert (ROOT / target).exists(), f"{file} links to {target}, which does not exist"


@pytest.mark.parametrize("file,name", sorted(set(named_paths())), ids=str)
def test_named_repository_path_exists(file, name):
    name, _, test = name.partition("::")
    matches = list(ROOT.glob(name)) if "*" in name else [ROOT / name]
    assert matches and all(m.exists() for m in matches), f"{file} names {name}: not found"
    if test:
        assert re.search(rf"def {test}\b", matches[0].read_text()), f"{file}: no {test} in {name}"
