"""Issue 13's tune row pooled over several bench/transfer.py runs: each data set's seeds from
every given result file (a seed in two files: the later file's), tune against the default run of
the same bench run, seed by seed, and the scoreboard's issue-13 checks over the pool.

A three-seed run cannot tell a one-point gain from seed noise (elpv's default moves 1.4 points
between seeds), so the gain is read over many seeds: per data set the mean gain with its
standard error, the seeds ahead and behind, and the seeds below the default by more than its
spread over the pool. A normal model of the paired gains (their mean and sample std) then says
how many seeds it expects below the spread, and what mean gain "never" would need: the gain at
which it expects fewer than one of the pool's seeds below (n * P(gain < -spread) < 1).

    python bench/tune_pool.py bench/results/tune-halt-seeds*.json
    python bench/tune_pool.py bench/results/tune-{adjusted*,neighbours*,halt*}.json --out /tmp/p.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # transfer_report, run from anywhere

from transfer_report import overall_targets, paired_gains, target_line, tune_targets  # noqa: E402

PAIR = ("finetune", "tune")


def pool(files: list[Path]) -> dict[str, dict[str, dict[str, float]]]:
    """{data set: {method: {seed: test accuracy}}} for the seeds that have both methods."""
    seeds: dict[str, dict[str, dict[str, float]]] = {}
    for file in files:
        for name, entry in _datasets(file).items():
            summary = entry.get("summary", {})
            if not set(PAIR) <= set(summary):
                continue
            both = set(summary["finetune"]["per_seed"]) & set(summary["tune"]["per_seed"])
            for method in PAIR:
                per_seed = seeds.setdefault(name, {}).setdefault(method, {})
                per_seed.update({k: summary[method]["per_seed"][k] for k in both})
    return seeds


def _datasets(file: Path) -> dict:
    """The ``datasets`` of a bench/transfer.py result file, or one line saying why not."""
    try:
        result = json.loads(file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SystemExit(
            f"tune_pool.py: {file} is not JSON ({e}); give bench/transfer.py result files"
        ) from None
    datasets = result.get("datasets") if isinstance(result, dict) else None
    if not isinstance(datasets, dict):
        raise SystemExit(f"tune_pool.py: {file} has no 'datasets'; not a bench/transfer.py result")
    return datasets


def summary(per_seed: dict[str, float]) -> dict:
    values = list(per_seed.values())
    return dict(
        mean=statistics.fmean(values),
        std=statistics.stdev(values) if len(values) > 1 else 0.0,
        per_seed=per_seed,
    )


def _never_needs(gains: list[float], spread: float) -> str:
    """'expected below | gain never needs' cells, in points: under a normal model of the paired
    gains, the seeds expected below -spread, and the mean gain that expects < 1 of n below."""
    n = len(gains)
    if n < 3:
        return "- | -"
    sd = statistics.stdev(gains)
    if sd == 0:
        return "- | -"
    expected = n * statistics.NormalDist(statistics.fmean(gains), sd).cdf(-spread)
    needs = statistics.NormalDist().inv_cdf(1 - 1 / n) * sd - spread
    return f"{expected:.1f} | {100 * needs:+.2f} (paired sd {100 * sd:.2f})"


def report(seeds: dict, files: list[Path]) -> str:
    lines = [
        "# tune against the default run, pooled (bench/tune_pool.py)",
        "",
        f"From {len(files)} result files: {', '.join(f.name for f in files)}. Points of test "
        "accuracy; the spread is the default's sample std over the pooled seeds.",
        "",
        "| data set | seeds | default | tune | gain (± s.e.) | ahead / level / behind | "
        "below the spread | expected below | gain 'never' needs |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    datasets, checks = {}, []
    for name, methods in seeds.items():
        ft, tune = summary(methods["finetune"]), summary(methods["tune"])
        datasets[name] = dict(summary=dict(finetune=ft, tune=tune))
        paired = paired_gains(ft, tune)
        gains = list(paired.values())
        se = statistics.stdev(gains) / len(gains) ** 0.5 if len(gains) > 1 else 0.0
        ahead, behind = sum(g > 0 for g in gains), sum(g < 0 for g in gains)
        below = [k for k, g in paired.items() if g < -ft["std"]]  # paired_gains sorts the seeds
        lines.append(
            f"| {name} | {len(gains)} | {ft['mean']:.4f} | {tune['mean']:.4f} | "
            f"{100 * statistics.fmean(gains):+.2f} (± {100 * se:.2f}) | "
            f"{ahead} / {len(gains) - ahead - behind} / {behind} | "
            f"{len(below)} ({100 * ft['std']:.2f}): seeds {', '.join(below) or '-'} | "
            f"{_never_needs(gains, ft['std'])} |"
        )
        checks += [f"{name}: {target_line(t)[2:]}" for t in tune_targets(ft, tune)[:2]]  # no INFO
    lines += ["", *(f"- {c}" for c in checks)]
    lines += [target_line(t) for t in overall_targets(datasets)]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path, help="bench/transfer.py result JSON files")
    parser.add_argument("--out", type=Path, help="also write the Markdown here")
    args = parser.parse_args(argv)
    missing = [str(f) for f in args.files if not f.is_file()]
    if missing:
        parser.error(f"no such result file: {', '.join(missing)}")
    seeds = pool(args.files)
    if not seeds:
        parser.error("no data set in these files has both a finetune and a tune row")
    text = report(seeds, args.files)
    print(text, end="")
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
