"""CSV manifests: ``--data labels.csv`` instead of class folders.

Columns (a header row is required):

- ``path``: image path, relative to the CSV's folder (or absolute);
- ``label``: one class per image (single-label), or ``labels``: ``;``- or ``|``-separated
  classes, possibly none, per image (multi-label; ChestX-ray14's ``Effusion|Infiltration``
  works as it is; an empty cell or ``No Finding`` means no label);
- ``split`` (optional): ``train``, ``val`` or ``test``; without it the rows are split by the
  seeded ``val_split`` (stratified by class for single-label, by first label for multi-label).

Example:
    >>> info = scan_csv("xrays/labels.csv", val_split=0.2, seed=0)  # doctest: +SKIP
    >>> info.multilabel, info.classes[:2]  # doctest: +SKIP
    (True, ('Atelectasis', 'Cardiomegaly'))
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

from ..errors import DataError
from .folder import (
    SPLITS,
    DataInfo,
    Problems,
    cross_split_duplicates,
    screen,
    stratified_split,
    warn_split_problems,
)
from .scan import DEFAULT_MAX_PIXELS, check_files

__all__ = ["scan_csv", "NO_LABEL"]

NO_LABEL = ("", "no finding", "none")  # case-insensitive cells meaning "no label"


def scan_csv(
    csv_path: str | os.PathLike,
    *,
    val_split: float = 0.2,
    seed: int = 0,
    strict: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    report_only: bool = False,
) -> DataInfo:
    """Read a manifest, check every image (as ``scan_folder`` does) and split it.

    A row whose file is missing is a bad file ("file not found"): skipped with a warning and
    listed in ``DataInfo.skipped``, or an error with ``strict`` or when every file is missing.
    ``report_only`` collects the problems that stop a run in ``DataInfo.errors`` instead.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"manifest not found: {csv_path}")
    problem = Problems(collect=report_only)
    rows, multilabel = _read_rows(csv_path)
    classes = sorted({c for _, labels, _ in rows for c in labels})
    if len(classes) < 2 and not (multilabel and classes):
        problem(
            f"{csv_path}: {len(classes)} distinct label(s) ({', '.join(classes)}); a "
            "classifier needs at least two classes"
        )
    samples, missing = _samples(rows, csv_path.parent, classes, multilabel)
    # a run stops before decoding anything; a report lists each missing file (strict: screen)
    if missing and (len(missing) == len(rows) or (strict and not report_only)):
        line, path = missing[0]
        problem(
            f"{csv_path}:{line}: image not found: {path} ({len(missing)} missing; paths "
            "are relative to the CSV's folder)"
        )
    all_paths = [p for split in SPLITS for p, _ in samples[split]]
    t0 = time.perf_counter()
    # missing files are checked too: the scan reports them as bad files ("file not found")
    checks, hits = check_files(all_paths, root=csv_path.parent, max_pixels=max_pixels)
    bad, odd = screen(checks, strict, problem)
    samples = {k: [(p, y) for p, y in v if p not in bad] for k, v in samples.items()}
    if not samples["train"] and len(missing) < len(rows):
        problem(f"{csv_path}: no readable training images")
    if not samples["val"] and not any(split for _, _, split in rows):
        samples["train"], samples["val"] = _split(samples["train"], multilabel, val_split, seed)
    info = DataInfo(
        root=str(csv_path),
        layout="csv",
        classes=tuple(classes),
        train=tuple(samples["train"]),
        val=tuple(samples["val"]),
        test=tuple(samples["test"]),
        skipped=tuple(sorted(bad.items())),
        suspicious=tuple(sorted(odd.items())),
        duplicates=tuple(cross_split_duplicates(samples, checks)),
        checks=checks,
        scan_seconds=time.perf_counter() - t0,
        cache_hits=hits,
        multilabel=multilabel,
        errors=tuple(problem.found),
    )
    warn_split_problems(info)
    return info


def _samples(rows, base: Path, classes, multilabel: bool) -> tuple[dict[str, list], list]:
    """(samples by split, (CSV line, path) of each missing file); missing files stay in the
    samples so that the scan reports them with the other bad files."""
    index = {c: i for i, c in enumerate(classes)}
    samples: dict[str, list] = {s: [] for s in SPLITS}
    missing = []
    for line, (rel, labels, split) in enumerate(rows, start=2):
        path = str(Path(rel) if Path(rel).is_absolute() else base / rel)
        if not os.path.lexists(path):
            missing.append((line, path))
        ids = tuple(sorted(index[c] for c in labels))
        samples[split or "train"].append((path, ids if multilabel else ids[0]))
    return samples, missing


def _split(train: list, multilabel: bool, val_split: float, seed: int) -> tuple[list, list]:
    """Stratified by class (single-label) or by first label (multi-label; -1: no label)."""
    keyed = [((p, y), y[0] if multilabel and y else (-1 if multilabel else y)) for p, y in train]
    train, val = stratified_split(keyed, val_split, seed)
    return [s for s, _ in train], [s for s, _ in val]


def _read_rows(csv_path: Path) -> tuple[list[tuple[str, tuple[str, ...], str]], bool]:
    try:
        return _parse_rows(csv_path)
    except UnicodeDecodeError as e:  # regression (review): the message named no file
        raise DataError(f"{csv_path}: not UTF-8 text ({e.reason} at byte {e.start}); save the "
                        "manifest as UTF-8") from None  # fmt: skip


def _parse_rows(csv_path: Path) -> tuple[list[tuple[str, tuple[str, ...], str]], bool]:
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        fields = [h.strip() for h in reader.fieldnames or []]
        reader.fieldnames = fields
        if "path" not in fields or not ({"label", "labels"} & set(fields)):
            raise DataError(
                f"{csv_path}: needs a header with 'path' and 'label' (single-label) "
                f"or 'labels' (multi-label, ';'-separated) columns; found "
                f"{', '.join(fields) or 'no header'}"
            )
        multilabel = "labels" in fields
        rows = []
        for line, row in enumerate(reader, start=2):
            split = (row.get("split") or "").strip().lower()
            if split and split not in SPLITS:
                raise DataError(
                    f"{csv_path}:{line}: split '{split}' is not one of {', '.join(SPLITS)}"
                )
            if multilabel:
                cell = (row.get("labels") or "").strip()
                labels = tuple(
                    sorted(
                        {
                            c.strip()
                            for c in cell.replace("|", ";").split(";")
                            if c.strip().lower() not in NO_LABEL
                        }
                    )
                )
            else:
                label = (row.get("label") or "").strip()
                if not label:
                    raise DataError(
                        f"{csv_path}:{line}: empty label for "
                        f"{row.get('path')!r}; every row needs one"
                    )
                labels = (label,)
            rows.append(((row.get("path") or "").strip(), labels, split))
    if not rows:
        raise DataError(f"{csv_path}: no rows below the header")
    return rows, multilabel
