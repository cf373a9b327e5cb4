"""Input pipeline: training images/s of the real data path vs pre-loaded tensors, same model.

Arm A feeds finetune's real pipeline (ImageFileDataset with the decoded-image cache, timm's
training transform: random resized crop, flips, colour jitter; DataLoader with the default worker
count) into finetune's Trainer. Arm B feeds tensors already in memory (one fixed batch per step,
no decoding, no augmentation) into the same Trainer. Same model, batch size, precision, number
of steps, one process. Both arms run one warm-up epoch first, so A's cache is filled (epochs
after the first are what the issue's goal is about), then alternate timed epochs; the median
per arm is reported (this 2-core machine varies by +-5 % between runs). Goal (issue 4):
A/B >= 0.95.

    python bench/pipeline.py [--images 512] [--img-size 128] [--cache memory|disk|none]
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    from finetune.config import FinetuneConfig, OptimConfig
    from finetune.data.datasets import build_datasets, build_loader
    from finetune.data.folder import scan_folder
    from finetune.models.backbones import load_backbone
    from finetune.models.heads import replace_head
    from finetune.tools.demo import prepare_elpv
    from finetune.train.optim import LRSchedule, build_optimizer, build_param_groups
    from finetune.train.policy import apply_policy
    from finetune.train.runtime import Runtime, Task
    from finetune.train.trainer import Trainer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--cache", default="memory", choices=["memory", "disk", "none"])
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--workers", type=int, default=-1, help="loader workers (-1: default)")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per arm (median)")
    args = parser.parse_args()

    torch.manual_seed(0)
    info = scan_folder(prepare_elpv(), seed=0)
    info = type(info)(**{**info.__dict__, "train": info.train[: args.images]})
    cfg = FinetuneConfig().with_overrides(
        img_size=args.img_size,
        cache_images=args.cache,
        batch_size=args.batch_size,
        warmup_epochs=0.0,
    )
    model, binfo = load_backbone(args.backbone, img_size=args.img_size)
    replace_head(model, info.num_classes, binfo)
    report = apply_policy(model, cfg.policy, binfo)
    t0 = time.perf_counter()
    train_set, _, _ = build_datasets(None, info, cfg, binfo)
    cache_s = time.perf_counter() - t0
    real = build_loader(
        train_set, batch_size=args.batch_size, training=True, num_workers=args.workers
    )
    steps = len(real)
    images, targets = next(iter(real))
    if images.dtype == torch.uint8:  # B gets ready-normalised float tensors: no work at all
        images = (images.float() - torch.tensor(binfo.mean).view(1, 3, 1, 1) * 255) / (
            torch.tensor(binfo.std).view(1, 3, 1, 1) * 255
        )
    preloaded = [(images, targets)] * steps

    def trainer():
        optim = OptimConfig(lr=1e-4, warmup_epochs=0)
        opt = build_optimizer(build_param_groups(model, optim, report.stages), optim)
        sched = LRSchedule(opt, optim, steps_per_epoch=steps, epochs=4)
        return Trainer(
            model,
            optimizer=opt,
            scheduler=sched,
            policy=report,
            optim=optim,
            runtime=Runtime(channels_last=True),
            task=Task(mean=binfo.mean, std=binfo.std),
        )

    arms = {"A real pipeline": real, "B pre-loaded tensors": preloaded}
    trainers = {name: trainer() for name in arms}
    for name, loader in arms.items():
        trainers[name]._train_epoch(loader, 0)  # warm-up (and, for A, the first epoch)
    samples: dict[str, list[float]] = {name: [] for name in arms}
    for repeat in range(args.repeats):  # alternate the arms: load spikes hit both alike
        for name, loader in arms.items():
            start = time.perf_counter()
            _, _, seen = trainers[name]._train_epoch(loader, 1 + repeat)
            samples[name].append(seen / (time.perf_counter() - start))
    rates = {name: sorted(v)[len(v) // 2] for name, v in samples.items()}  # medians
    print(
        f"{args.backbone}, {len(train_set)} images at {args.img_size} px, batch "
        f"{args.batch_size}, cache {args.cache} (built in {cache_s:.1f} s), loader workers "
        f"{real.num_workers}, torch threads {torch.get_num_threads()}"
    )
    for name, rate in rates.items():
        print(
            f"{name:22s} {rate:8.1f} img/s (median of "
            f"{', '.join(f'{r:.1f}' for r in samples[name])})"
        )
    a, b = rates.values()
    print(f"ratio A/B: {a / b:.3f} (goal >= 0.95)")


if __name__ == "__main__":
    main()
