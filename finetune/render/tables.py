"""Tables for people: the freezing plan, classification reports, the scan report, the epoch
line. Every user-supplied string is escaped.

Example:
    >>> from finetune.render.tables import epoch_line
    >>> r = dict(epoch=1, train_loss=0.5, train_accuracy=0.8, val_loss=0.4, val_accuracy=0.9,
    ...          best=True, train_images_per_s=100.0, epoch_seconds=12.0, lr=1e-3)
    >>> epoch_line(r, 5, "val_accuracy")
    'epoch 1/5  train loss 0.5000 acc 0.8000 | val loss 0.4000 acc 0.9000 * | lr 0.001 | 100.0 img/s, 12 s'
"""

from __future__ import annotations

from typing import Optional

from rich.markup import escape
from rich.table import Table

__all__ = ["plan_table", "report_table", "multilabel_table", "scan_report", "epoch_line"]


def _num(value) -> str:
    """A score with 4 decimals, or n/a when it is undefined (None or NaN)."""
    return "n/a" if value is None or value != value else f"{value:.4f}"


def _titled(title: str) -> Table:
    """A table at least as wide as its title: rich wraps a longer title onto several lines,
    which breaks numbers and paths apart in a log."""
    from rich.text import Text

    return Table(title=title, min_width=len(Text.from_markup(title)) + 2)


def plan_table(plan) -> Table:
    """A ``finetune.train.plan.Plan`` as a table."""
    table = _titled(escape(plan.title))
    for col in ("stage", "modules", "params", "trainable", "state", "peak lr", "wd"):
        table.add_column(col, justify="left" if col in ("stage", "modules", "state") else "right")
    for row in plan.rows:
        mods = ", ".join(row.modules[:4]) + (", ..." if len(row.modules) > 4 else "")
        lr = f"{row.peak_lr:.3g}" if row.peak_lr is not None else ""
        wd = f"{row.weight_decay:g}" if row.weight_decay is not None else ""
        table.add_row(
            escape(row.stage),
            escape(mods),
            f"{row.params:,}",
            f"{row.trainable:,}",
            row.state,
            lr,
            wd,
        )
    table.caption = plan.summary + (
        "\nwd applies to weights only; biases, norm weights and position/class tokens get none"
        if plan.with_optim
        else ""
    )
    # as wide as the caption too: rich wraps a caption to the table's width
    table.min_width = max(table.min_width or 0, *(len(x) + 2 for x in table.caption.splitlines()))
    return table


def report_table(report: dict, title: str):
    """A rich table of a ``classification_report``."""
    table = _titled(
        f"{escape(title)}: accuracy {report['accuracy']:.4f} "
        f"(macro recall {report['macro_recall']:.4f}, n={report['num_samples']})"
    )
    for col in ("class", "precision", "recall", "f1", "support"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for name, row in report["per_class"].items():
        table.add_row(
            escape(name),
            f"{row['precision']:.3f}",
            f"{row['recall']:.3f}",
            f"{row['f1']:.3f}",
            str(row["support"]),
        )
    return table


def multilabel_table(report: dict, title: str):
    """A rich table of a ``multilabel_report``."""
    table = _titled(
        f"{escape(title)}: mAP {_num(report['mAP'])}, macro AUC {_num(report['macro_auc'])}, "
        f"micro F1 {_num(report['micro_f1'])} (n={report['num_samples']})"
    )
    for col in ("label", "AUC", "AP", "F1", "threshold", "support"):
        table.add_column(col, justify="left" if col == "label" else "right")
    for name, row in report["per_label"].items():
        table.add_row(
            escape(name),
            f"{row['auc']:.3f}",
            f"{row['ap']:.3f}",
            f"{row['f1']:.3f}",
            f"{row['threshold']:.3f}",
            str(row["support"]),
        )
    return table


def scan_report(data, console, *, max_rows: int = 20) -> None:
    """Print what a scan found: images per class and split, sizes and modes, how high-depth data
    is scaled, imbalance, bad and suspicious files, duplicates across splits, and last the
    problems that stop a run (``data.errors``). ``data`` is a ``DataInfo``."""
    counts = data.counts()
    train_counts = counts.get("train", [0] * data.num_classes)
    table = _titled(f"{escape(data.root)} ({data.layout}): {data.num_classes} classes")
    table.add_column("class")
    for split in counts:
        table.add_column(split, justify="right")
    table.add_column("train share", justify="right")
    train_total = max(sum(train_counts), 1)
    for i, name in enumerate(data.classes):
        table.add_row(
            escape(name),
            *(f"{counts[s][i]:,}" for s in counts),
            f"{100 * train_counts[i] / train_total:.1f} %",
        )
    table.add_row("[bold]total[/]", *(f"[bold]{sum(c):,}[/]" for c in counts.values()), "")
    console.print(table)
    checks = [c for c in data.checks.values() if not c.problem]
    if checks:
        areas = sorted(checks, key=lambda c: c.width * c.height)
        small, mid, large = areas[0], areas[len(areas) // 2], areas[-1]
        modes: dict[str, int] = {}
        for c in checks:
            key = f"{c.format} {c.mode}"
            modes[key] = modes.get(key, 0) + 1
        # how high-depth data becomes [0, 1] is worded by the data layer (FileCheck.scaling)
        scaling = sorted({c.scaling for c in checks if getattr(c, "scaling", "")})
        console.print(
            f"image sizes: smallest {small.width}x{small.height}, median "
            f"{mid.width}x{mid.height}, largest {large.width}x{large.height}; "
            + ", ".join(f"{n:,} {k}" for k, n in sorted(modes.items(), key=lambda kv: -kv[1]))
            + (escape("\nscaling: " + ", ".join(scaling)) if scaling else "")
        )
    train = [n for n in train_counts if n]
    ratio = max(train) / min(train) if train else 1.0
    hint = " - consider --class-weights auto or --sampler balanced" if ratio >= 3 else ""
    console.print(f"class imbalance (largest / smallest train class): {ratio:.1f}{hint}")
    for title, rows in (
        ("unreadable files (skipped)", data.skipped),
        ("suspicious files (used; --strict rejects them)", data.suspicious),
        ("identical files in two splits", data.duplicates),
    ):
        if not rows:
            continue
        bad = _titled(f"{len(rows)} {title}")
        bad.add_column("file")
        bad.add_column("reason" if title != "identical files in two splits" else "same bytes as")
        for a, b in rows[:max_rows]:
            bad.add_row(escape(str(a)), escape(str(b)))
        if len(rows) > max_rows:
            bad.caption = f"... and {len(rows) - max_rows} more"
        console.print(bad)
    console.print(
        f"scanned {len(data.checks):,} files in {data.scan_seconds:.1f} s "
        f"({data.cache_hits:,} from the scan cache)"
    )
    errors = getattr(data, "errors", ())
    if errors:  # last, where the eye lands: why `finetune scan` exits non-zero
        lines = [f"[bold red]{len(errors)} problem(s) that stop a run:[/]"]
        console.print("\n".join(lines + [f"[red]- {escape(m)}[/]" for m in errors]), soft_wrap=True)


def epoch_line(r: dict, epochs: int, score_name: str, eta: Optional[float] = None) -> str:
    """One line per finished epoch: train loss/accuracy, validation, LR, throughput, time, and
    the run's remaining time (``eta``, seconds)."""
    score = r[score_name]
    name = "mAP" if score_name == "val_map" else "acc"
    val = (
        "no val data"
        if score is None
        else f"val loss {r['val_loss']:.4f} {name} {score:.4f}{' *' if r['best'] else ''}"
    )
    lr = f" | lr {r['lr']:.3g}" if r.get("lr") is not None else ""
    left = f", run ETA {duration(eta)}" if eta else ""
    return (
        f"epoch {r['epoch']}/{epochs}  train loss {r['train_loss']:.4f} acc "
        f"{r['train_accuracy']:.4f} | {val}{lr} | {r['train_images_per_s']:.1f} img/s, "
        f"{r['epoch_seconds']:.0f} s{left}"
    )


def duration(seconds: float) -> str:
    """``75`` -> ``1m15s``; ``4000`` -> ``1h06m``."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
