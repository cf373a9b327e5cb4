"""The scoreboard's summary, targets and output of bench/transfer.py: mean and sample std over
seeds per method, the issue's targets checked, JSON and Markdown written atomically.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

from transfer_methods import BACKBONE

METHODS = ("finetune", "probe", "plain", "fastai", "tune")
MARGIN = 0.015  # issue 9: finetune must beat the better baseline by 1.5 points of accuracy
TUNE_MARGIN = 0.01  # issue 13: tune at 3x B must beat the default run by 1 point on average


def summarise(entry: dict) -> None:
    summary = {}
    for method in METHODS:
        runs = [r for r in entry["runs"] if r["method"] == method and "error" not in r]
        if not runs:
            continue
        accs = [r["test_accuracy"] for r in runs]
        summary[method] = dict(
            mean=statistics.fmean(accs),
            std=statistics.stdev(accs) if len(accs) > 1 else 0.0,
            per_seed={str(r["seed"]): r["test_accuracy"] for r in runs},
            wall_s=statistics.fmean(r["wall_s"] for r in runs),
            n=len(runs),
        )
    entry["summary"] = summary
    entry["targets"] = targets(summary)


def targets(s: dict) -> list[dict]:
    out = []
    ft = s.get("finetune")
    baselines = {m: s[m]["mean"] for m in ("probe", "plain") if m in s}
    if ft and baselines:
        best = max(baselines, key=baselines.get)
        out.append(
            dict(
                target="finetune mean >= best(probe, plain) mean + 1.5 points",
                ok=ft["mean"] >= baselines[best] + MARGIN,
                detail=f"{ft['mean']:.4f} vs {best} {baselines[best]:.4f} + {MARGIN}",
            )
        )
    if ft and "probe" in s:
        seeds = sorted(set(ft["per_seed"]) & set(s["probe"]["per_seed"]), key=int)
        worse = [k for k in seeds if ft["per_seed"][k] < s["probe"]["per_seed"][k]]
        out.append(
            dict(
                target="finetune >= probe in every seed",
                ok=bool(seeds) and not worse,
                detail=f"below the probe in seeds {worse}" if worse else f"seeds {seeds}",
            )
        )
    if ft and "tune" in s:
        out += tune_targets(ft, s["tune"])
    if ft and "fastai" in s:
        out.append(
            dict(
                target="finetune mean > fastai mean",
                ok=ft["mean"] > s["fastai"]["mean"],
                detail=f"{ft['mean']:.4f} vs {s['fastai']['mean']:.4f}",
            )
        )
    return out


def paired_gains(ft: dict, tune: dict) -> dict[str, float]:
    """tune - finetune test accuracy per seed, for the seeds both methods finished."""
    seeds = sorted(set(ft["per_seed"]) & set(tune["per_seed"]), key=int)
    return {k: tune["per_seed"][k] - ft["per_seed"][k] for k in seeds}


def tune_targets(ft: dict, tune: dict) -> list[dict]:
    """Issue 13 on one data set ("never worse than the default by more than the seed spread",
    the spread being the default's sample std over seeds; nothing to check with one seed), read
    two ways: tune's mean against the default's (the scoreboard's rows, and the reading under
    which the issue's "+1 on average" is consistent: per seed, the noise of two single runs
    puts seeds below the spread unless the mean gain is well above it, elpv's 1.6 times over 36
    seeds), and tune in no seed.
    For information, the gain per seed. The +1 point "on average" is checked over the data sets
    (overall_targets)."""
    gains = paired_gains(ft, tune)
    spread = ft["std"]
    worse = [k for k, gain in gains.items() if gain < -spread]
    mean = sum(gains.values()) / len(gains) if gains else 0.0
    if len(gains) < 2:  # one seed has no spread: nothing to check (regression: a PASS)
        on_mean = in_seeds = None
        mean_detail = seeds_detail = f"{len(gains)} seed: no seed spread to compare with"
    else:
        on_mean, in_seeds = mean >= -spread, not worse
        mean_detail = f"{100 * mean:+.2f} points against a spread of {100 * spread:.2f}"
        seeds_detail = (f"below by more than {100 * spread:.2f} points in seeds {worse}" if worse
                        else f"{len(gains)} seeds, spread {100 * spread:.2f} points")  # fmt: skip
    return [
        dict(
            target="tune's mean never below the default's by more than the default's seed spread",
            ok=on_mean,
            detail=mean_detail,
        ),
        dict(
            target="tune in no seed below the default by more than the default's seed spread",
            ok=in_seeds,
            detail=seeds_detail,
        ),
        dict(
            target="tune - default, in points",
            ok=None,
            detail=f"{100 * mean:+.2f} on average; per seed "
            + ", ".join(f"{100 * g:+.1f}" for g in gains.values()),
        ),
    ]


def overall_targets(datasets: dict) -> list[dict]:
    """Issue 13 over the data sets: tune's gain on the default run (paired by seed), averaged
    over the data sets that have both (each set's mean over its seeds, the sets weighted
    alike), >= 1 point; with its standard error (the sets' errors of the mean combined)."""
    gains = {}
    for name, e in datasets.items():
        s = e.get("summary", {})
        if {"tune", "finetune"} <= set(s) and (g := paired_gains(s["finetune"], s["tune"])):
            gains[name] = list(g.values())
    if not gains:
        return []
    means = {name: statistics.fmean(g) for name, g in gains.items()}
    mean = statistics.fmean(means.values())
    errors = [statistics.variance(g) / len(g) for g in gains.values() if len(g) > 1]
    se = (sum(errors) ** 0.5 / len(gains)) if len(errors) == len(gains) else None
    per_set = ", ".join(f"{name} {100 * g:+.2f}" for name, g in means.items())
    spread = f" ± {100 * se:.2f} s.e." if se is not None else ""
    return [
        dict(
            target="tune mean >= finetune default mean + 1 point, on average over the data sets",
            ok=mean >= TUNE_MARGIN - 1e-9,  # accuracies differ by float noise: 0.83 - 0.80 < 0.03
            detail=f"{100 * mean:+.2f}{spread} points ({per_set})",
        )
    ]


LABELS = {
    "finetune": "finetune default (`--budget B`)",
    "probe": "linear probe (cached features + LogisticRegression)",
    "plain": "plain loop, full fine-tune, same wall time",
    "fastai": "fastai `vision_learner(...).fine_tune(E)`",
    "tune": "`finetune tune --budget 3B`, best trial",
}


def method_notes(entry: dict, method: str) -> str:
    runs = [r for r in entry["runs"] if r["method"] == method and "error" not in r]
    errors = [r for r in entry["runs"] if r["method"] == method and "error" in r]
    notes = []
    if runs and method == "finetune":
        notes.append(
            f"epochs {[r['epochs'] for r in runs]} at {runs[0]['img_size']} px, training "
            f"{statistics.fmean(r['train_s'] for r in runs):.0f} s (budget used: "
            + ", ".join(f"{r['budget_used']:.0%}" for r in runs)
            + ")"
        )
    elif runs and method == "probe":
        notes.append(f"C {sorted({r['C'] for r in runs})}, features {runs[0]['features_s']:.0f} s")
    elif runs and method == "plain":
        notes.append(
            f"epochs {[r['epochs'] for r in runs]} in "
            f"{statistics.fmean(r['train_s'] for r in runs):.0f} s"
        )
    elif runs and method == "fastai":
        notes.append(f"1 frozen + {runs[0]['epochs']} epochs")
    elif runs and method == "tune":
        notes.append(
            f"trials {[r['trials'] for r in runs]} (best {[r['best_trial'] for r in runs]}), "
            f"study {statistics.fmean(r['study_s'] for r in runs):.0f} s of "
            f"{runs[0]['study_budget']} (budget used: "
            + ", ".join(f"{r['budget_used']:.0%}" for r in runs)
            + ")"
        )
    if errors:
        notes.append(f"{len(errors)} failed: {errors[0]['error'][:120]}")
    return "; ".join(notes)


def markdown(results: dict) -> str:
    meta = results["meta"]
    lines = [
        "# Transfer scoreboard (bench/transfer.py)",
        "",
        f"`{meta['command']}`, {meta['date']}, {meta['machine']}. Backbone {BACKBONE} "
        f"({meta.get('weights_source') or 'weights as finetune resolves them'}). Seeds "
        f"{meta['seeds']}; test accuracy is mean ± sample std over seeds; wall time per run.",
    ]
    if meta["finetune_args"]:
        lines += [
            "",
            f"**Not the default**: finetune ran with extra flags `{meta['finetune_args']}`.",
        ]
    for name, entry in results["datasets"].items():
        c = entry["counts"]
        lines += [
            "",
            f"## {name} (train/val/test {c['train']}/{c['val']}/{c['test']}, budget "
            f"{entry['budget']})",
            "",
            "| method | test accuracy | per seed | wall time | notes |",
            "| --- | --- | --- | --- | --- |",
        ]
        for method in METHODS:
            s = entry.get("summary", {}).get(method)
            notes = method_notes(entry, method)
            if s is None and not notes:
                continue
            acc = f"{s['mean']:.4f} ± {s['std']:.4f}" if s else "–"
            seeds = ", ".join(f"{v:.4f}" for v in s["per_seed"].values()) if s else "–"
            wall = f"{s['wall_s']:.0f} s" if s else "–"
            lines.append(f"| {LABELS[method]} | {acc} | {seeds} | {wall} | {notes} |")
        if entry.get("targets"):
            lines.append("")
            lines += [target_line(t) for t in entry["targets"]]
    overall = overall_targets(results["datasets"])
    if overall:
        lines += ["", "## All data sets", "", *map(target_line, overall)]
    return "\n".join(lines) + "\n"


def target_line(t: dict) -> str:
    verdict = "INFO" if t["ok"] is None else "PASS" if t["ok"] else "FAIL"
    return f"- {verdict}: {t['target']} ({t['detail']})"


def write(results: dict, out: Path, render=markdown) -> None:
    """``out`` (JSON) and its ``.md`` twin (``render(results)``), each replaced atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    for path, text in (
        (out, json.dumps(results, indent=1)),
        (out.with_suffix(".md"), render(results)),
    ):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
