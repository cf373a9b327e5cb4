"""Do the default runs of a scoreboard combine into a better model? Offline, no training.

For each data set, the finetune default runs that ``bench/transfer.py`` left in
``CACHE/runs/{set}-seed{S}`` (same config, one seed each) are scored on the set's val and test
splits three ways: each run alone, a logit ensemble (softmax averaged over the runs: one
forward pass per run per image), and a uniform weight soup (the runs' weights averaged into one
model: Wortsman et al., ICML 2022, "Model soups"). It prints test accuracy for each and the gain
of the ensemble and of the soup over the runs' mean.

Why it exists: ``finetune tune`` (issue 13) must return one run directory that timm loads, so
a gain only an ensemble gives is not one it can ship; this measures how large that gain is and
whether a soup (one model) keeps it.

``--tune`` asks the same of each ``finetune tune`` study that ``--methods tune`` left in
``CACHE/runs/{set}-seed{S}-tune``: its default trial (trial 0, trained on the training images)
and its refit (the last trial: trial 0's config on the training and validation images, taught by
trial 0), on the test split only (the refit trained on val). Each alone, their ensemble, and
soups with trial 0's weights at 0.25, 0.5 and 0.75; per set, the mean gain over the refit.

Example:
    python bench/transfer.py --methods finetune   # leaves the runs in CACHE/runs/
    python bench/combine.py --datasets elpv,digits,fashion --seeds 0,1,2
    python bench/combine.py --tune --seeds 0,1,2,3,4,5,6,7,8,9,10,11
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from transfer_data import DEFAULT_DATASETS, default_cache

from finetune.inference import image_logits, load_for_inference


def split_images(
    root: Path, split: str, labels: tuple[str, ...]
) -> tuple[list[Path], torch.Tensor]:
    """Images of ``root/split/<class>/`` in the runs' class order, and their targets."""
    paths, targets = [], []
    for index, label in enumerate(labels):
        files = sorted((root / split / label).iterdir())
        paths += files
        targets += [index] * len(files)
    return paths, torch.tensor(targets)


def uniform_soup(state_dicts: list[dict], weights: list[float] | None = None) -> dict:
    """The (weighted) mean of the floating-point tensors; integer buffers (BN step counts) from
    the first. ``weights`` default to equal and should sum to 1."""
    first = state_dicts[0]
    weights = weights or [1 / len(state_dicts)] * len(state_dicts)
    return {
        k: sum(w * sd[k].float() for w, sd in zip(weights, state_dicts)).to(v.dtype)
        if v.is_floating_point()
        else v
        for k, v in first.items()
    }


def accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    return (logits.argmax(1) == targets).float().mean().item()


def combine(name: str, seeds: list[int], cache: Path, split: str) -> dict:
    runs = [load_for_inference(cache / "runs" / f"{name}-seed{s}") for s in seeds]
    paths, targets = split_images(cache / name, split, runs[0].labels)
    logits = [image_logits(run, paths)[1] for run in runs]
    singles = [accuracy(lg, targets) for lg in logits]
    ensemble = accuracy(torch.stack([lg.softmax(1) for lg in logits]).mean(0), targets)
    states = [{k: v.clone() for k, v in run.model.state_dict().items()} for run in runs]
    runs[0].model.load_state_dict(uniform_soup(states))
    soup = accuracy(image_logits(runs[0], paths)[1], targets)
    return dict(singles=singles, ensemble=ensemble, soup=soup)


TEACHER_SHARES = (0.25, 0.5, 0.75)  # trial 0's weight in the soup with the refit


def combine_study(name: str, seed: int, cache: Path) -> dict:
    """Test accuracy of a study's trial 0, its refit, their ensemble and their soups."""
    trials = sorted((cache / "runs" / f"{name}-seed{seed}-tune" / "trials").iterdir())
    teacher, refit = load_for_inference(trials[0]), load_for_inference(trials[-1])
    paths, targets = split_images(cache / name, "test", refit.labels)
    logits = [image_logits(run, paths)[1] for run in (teacher, refit)]
    out = dict(trial0=accuracy(logits[0], targets), refit=accuracy(logits[1], targets))
    out["ensemble"] = accuracy(logits[0].softmax(1) + logits[1].softmax(1), targets)
    states = [{k: v.clone() for k, v in run.model.state_dict().items()} for run in (teacher, refit)]
    for share in TEACHER_SHARES:
        refit.model.load_state_dict(uniform_soup(states, [share, 1 - share]))
        out[f"soup {share:g}"] = accuracy(image_logits(refit, paths)[1], targets)
    return out


def tune_table(datasets: list[str], seeds: list[int], cache: Path) -> None:
    columns = ["trial0", "ensemble", *(f"soup {s:g}" for s in TEACHER_SHARES)]
    print("| data set | studies | refit | " + " | ".join(f"{c} (gain)" for c in columns) + " |")
    print("| --- " * (len(columns) + 3) + "|")
    for name in datasets:
        rows = [combine_study(name, seed, cache) for seed in seeds]
        mean = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
        cells = [f"{mean[c]:.3f} ({100 * (mean[c] - mean['refit']):+.2f})" for c in columns]
        print(f"| {name} | {len(rows)} | {mean['refit']:.3f} | " + " | ".join(cells) + " |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default=",".join(DEFAULT_DATASETS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--cache", type=Path, default=default_cache())
    parser.add_argument("--tune", action="store_true", help="each tune study's trial 0 + refit")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.tune:
        return tune_table(args.datasets.split(","), seeds, args.cache)
    print("| data set | split | runs alone | mean | ensemble (gain) | uniform soup (gain) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in args.datasets.split(","):
        for split in ("val", "test"):
            r = combine(name, seeds, args.cache, split)
            mean = sum(r["singles"]) / len(r["singles"])
            alone = ", ".join(f"{a:.3f}" for a in r["singles"])
            print(
                f"| {name} | {split} | {alone} | {mean:.3f} | {r['ensemble']:.3f} "
                f"({100 * (r['ensemble'] - mean):+.1f}) | {r['soup']:.3f} "
                f"({100 * (r['soup'] - mean):+.1f}) |",
                flush=True,
            )


if __name__ == "__main__":
    main()
