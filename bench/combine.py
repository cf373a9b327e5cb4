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

Example:
    python bench/transfer.py --methods finetune   # leaves the runs in CACHE/runs/
    python bench/combine.py --datasets elpv,digits,fashion --seeds 0,1,2
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


def uniform_soup(state_dicts: list[dict]) -> dict:
    """The mean of the floating-point tensors; integer buffers (BN step counts) from the first."""
    first = state_dicts[0]
    return {
        k: sum(sd[k].float() for sd in state_dicts).div(len(state_dicts)).to(v.dtype)
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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default=",".join(DEFAULT_DATASETS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--cache", type=Path, default=default_cache())
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
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
