"""Does `finetune tune`'s search find configs as good as the default run's? (issue 13)

The budgeted studies of `bench/transfer.py --methods tune` hold one or two searched trials with
fewer epochs than the default run, so they cannot say whether the search proposes good configs.
Here every trial trains the same epochs: per data set and seed, one study without a budget,

    python -m finetune tune --data DIR --trials 6 --epochs E --img-size PX --seed S --output OUT

(the default run, four searched trials and the final one, which retrains the best config and is
left out here: it is not searched; the median pruner as shipped), and each trial is
read from its run's config.json: validation accuracy (its best epoch's, the study's score),
test accuracy, state. Per data set it reports the searched trials' mean validation score, how
many came within 1 point of the default run on validation and how many beat it, and the test
accuracy of the best of those trials on validation against the default run's.

Run it from two checkouts (git worktrees) to compare two searches on the same seeds; each
measures its own checkout's finetune:

    python bench/tune_search.py --out /tmp/search.json   # digits and Fashion-MNIST, seeds 0-2
    python bench/tune_search.py --datasets digits --seeds 0 --epochs 1 --out /tmp/s.json  # smoke

Writes JSON and Markdown (rewritten after every study); studies and logs stay in
CACHE/runs/search-{set}-seed{S} (`--reuse` reads the finished ones again instead of rerunning).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # measure this checkout's finetune, installed or not
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no network here; set before huggingface_hub loads

from transfer_data import default_cache, prepare  # noqa: E402
from transfer_methods import finetune_cli  # noqa: E402
from transfer_report import write  # noqa: E402

IMG_SIZE = {"digits": 64, "fashion": 64, "elpv": 128}  # px: what the budgeted default runs chose
NEAR = 0.01  # "within 1 point" of the default run's validation accuracy


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_study(name: str, seed: int, opts) -> dict:
    out = opts.cache / "runs" / f"search-{name}-seed{seed}"
    # one more: under --trials the last trial is the final one (the best config retrained)
    cmd = ["tune", "--data", str(prepare(name)), "--trials", str(opts.trials + 1)]
    cmd += ["--epochs", str(opts.epochs), "--img-size", str(IMG_SIZE[name])]
    cmd += ["--seed", str(seed), "--output", str(out)]
    done = (out / "study" / "summary.json").is_file()
    wall = None if opts.reuse and done else finetune_cli(cmd, out)
    trials = []
    for run_dir in sorted((out / "trials").iterdir()):
        saved = json.loads((run_dir / "config.json").read_text())["finetune"]
        records = [json.loads(line) for line in open(run_dir / "metrics.jsonl") if line.strip()]
        val = [r["val_accuracy"] for r in records if r.get("val_accuracy") is not None]
        trials.append(
            dict(
                trial=run_dir.name,
                val_accuracy=max(val) if val else None,
                # a pruned trial stopped before its final evaluation: no test score
                test_accuracy=saved.get("metrics", {}).get("test", {}).get("accuracy"),
                epochs=len(val),
            )
        )
    rows = {r["number"]: r for r in _csv(out / "study" / "trials.csv")}
    for t in trials:  # by number: a trial that failed before its run began has no folder
        row = rows[int(t["trial"].removeprefix("trial-"))]
        t["note"], t["state"] = row["note"], row["state"]
    trials = [t for t in trials if "config, retrained" not in t["note"]]  # the final trial
    # the study's best without its final trial: Optuna's (complete trials; the first of equals)
    complete = [i for i, t in enumerate(trials) if t["state"] == "complete"]
    best = max(complete, key=lambda i: trials[i]["val_accuracy"])
    return dict(dataset=name, seed=seed, trials=trials, best_trial=best,
                wall_s=wall, command=shlex.join(["finetune", *cmd]))  # fmt: skip


def _csv(path: Path) -> list[dict]:
    import csv

    with open(path, newline="") as f:
        return [dict(r, number=int(r["number"])) for r in csv.DictReader(f)]


def summarise(studies: list[dict]) -> dict:
    out = {}
    for name in dict.fromkeys(s["dataset"] for s in studies):
        rows = [s for s in studies if s["dataset"] == name and "error" not in s]
        searched, gains = [], []
        for s in rows:
            default = s["trials"][0]
            for t in s["trials"][1:]:
                if t["val_accuracy"] is not None:
                    searched.append(t["val_accuracy"] - default["val_accuracy"])
            best = s["trials"][s["best_trial"]]
            gains.append(best["test_accuracy"] - default["test_accuracy"])
        if rows:
            out[name] = dict(
                studies=len(rows),
                searched=len(searched),
                mean_val_gap=statistics.mean(searched) if searched else None,
                within_1_point=sum(g >= -NEAR for g in searched),
                beat_default=sum(g > 0 for g in searched),
                best_is_searched=sum(s["best_trial"] != 0 for s in rows),
                result_test_gain=statistics.mean(gains),
            )
    return out


def markdown(results: dict) -> str:
    meta = results["meta"]
    lines = [
        "# Searched trials against the default run (bench/tune_search.py)",
        "",
        f"`{meta['command']}`, {meta['date']}, {meta['machine']}, finetune at {meta['commit']}. "
        f"Each study: `finetune tune --trials {meta['trials'] + 1} --epochs {meta['epochs']}` "
        "(no budget: every trial trains the same epochs; the last, the final trial, retrains the "
        "best config and is left out). Val and test accuracy per trial; a "
        "pruned trial's val is its best epoch before it stopped.",
        "",
        "| data set | seed | default val / test | searched trials' val (trial: val) | result "
        "(best on val) test |",
        "| --- | --- | --- | --- | --- |",
    ]
    for s in results["studies"]:
        if "error" in s:
            lines.append(f"| {s['dataset']} | {s['seed']} | failed: {s['error']} |||")
            continue
        default, *searched = s["trials"]
        cells = ", ".join(f"{i + 1}: {_f(t['val_accuracy'])}" for i, t in enumerate(searched))
        best = s["trials"][s["best_trial"]]
        lines.append(
            f"| {s['dataset']} | {s['seed']} | {_f(default['val_accuracy'])} / "
            f"{_f(default['test_accuracy'])} | {cells} | trial {s['best_trial']}: "
            f"{_f(best['test_accuracy'])} |"
        )
    lines += [
        "",
        "| data set | studies | searched trials | mean val gap to the default | within 1 point "
        "| above it | result is a searched trial | result's test gain |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, s in results["summary"].items():
        gap = f"{100 * s['mean_val_gap']:+.1f}" if s["mean_val_gap"] is not None else "-"
        lines.append(
            f"| {name} | {s['studies']} | {s['searched']} | {gap} | {s['within_1_point']} | "
            f"{s['beat_default']} | {s['best_is_searched']} | {100 * s['result_test_gain']:+.2f} |"
        )
    return "\n".join(lines) + "\n"


def _f(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="digits,fashion")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--cache", type=Path, default=default_cache())
    parser.add_argument("--reuse", action="store_true",
                        help="read a study that an earlier run finished instead of running it")  # fmt: skip
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "tune_search.json")
    opts = parser.parse_args(argv)
    import subprocess

    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    results = dict(
        meta=dict(
            command=shlex.join(["python", "bench/tune_search.py", *(argv or sys.argv[1:])]),
            date=time.strftime("%Y-%m-%d %H:%M"),
            machine=f"{platform.machine()}, {os.cpu_count()} cores",
            commit=commit,
            trials=opts.trials,
            epochs=opts.epochs,
        ),
        studies=[],
        summary={},
    )
    for name in opts.datasets.split(","):
        for seed in (int(s) for s in opts.seeds.split(",")):
            try:
                row = run_study(name, seed, opts)
            except Exception as e:  # one failed study must not lose the others' numbers
                row = dict(dataset=name, seed=seed, error=f"{type(e).__name__}: {e}")
            results["studies"].append(row)
            results["summary"] = summarise(results["studies"])
            write(results, opts.out, render=markdown)
            log(json.dumps(row.get("error") or [t["val_accuracy"] for t in row["trials"]]))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
