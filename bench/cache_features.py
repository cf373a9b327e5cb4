"""Linear probe: an epoch on cached features vs an epoch that recomputes them.

Both arms run finetune's own Trainer on the same images (elpv solar cells, the demo data),
backbone (ImageNet tf_efficientnet_lite0, packaged weights), batch size and precision, in one
process. Arm A trains the head through the frozen backbone (the normal --linear-probe path,
features recomputed every epoch, no augmentation so the comparison is like for like). Arm B
computes the features once (timed separately) and trains the head on them
(--linear-probe --cache-features). Goal (issue 3): epoch B >= 10x faster than epoch A.

    python bench/cache_features.py [--images 512] [--img-size 128]
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    from finetune.config import DataConfig, OptimConfig, PolicyConfig
    from finetune.data.augment import build_transform
    from finetune.data.datasets import ImageFileDataset, build_loader
    from finetune.data.folder import scan_folder
    from finetune.models.backbones import load_backbone
    from finetune.models.heads import replace_head
    from finetune.models.stages import Stage
    from finetune.tools.demo import prepare_elpv
    from finetune.train.features import extract_features, feature_loader
    from finetune.train.optim import LRSchedule, build_optimizer, build_param_groups
    from finetune.train.policy import PolicyReport, apply_policy
    from finetune.train.runtime import Runtime
    from finetune.train.trainer import Trainer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    torch.manual_seed(0)
    info = scan_folder(prepare_elpv(), seed=0)
    samples = info.train[: args.images]
    model, binfo = load_backbone("tf_efficientnet_lite0")
    replace_head(model, info.num_classes, binfo)
    report = apply_policy(model, PolicyConfig(linear_probe=True), binfo)
    model = model.to(memory_format=torch.channels_last)
    transform = build_transform(binfo, DataConfig(img_size=args.img_size), training=False)
    loader = build_loader(
        ImageFileDataset(samples, transform),
        batch_size=args.batch_size,
        training=True,
        num_workers=0,
    )
    cfg = OptimConfig(lr=1e-3, warmup_epochs=0)

    def trainer_for(module, policy, stages, steps):
        opt = build_optimizer(build_param_groups(module, cfg, stages), cfg)
        sched = LRSchedule(opt, cfg, steps_per_epoch=steps, epochs=3)
        return Trainer(
            module,
            optimizer=opt,
            scheduler=sched,
            policy=policy,
            optim=cfg,
            runtime=Runtime(channels_last=module is model),
        )

    # A: recompute features every epoch (frozen backbone forward + head step)
    a = trainer_for(model, report, report.stages, len(loader))
    a._train_epoch(loader, 0)  # warm-up epoch (allocator, oneDNN kernels)
    t0 = time.perf_counter()
    a._train_epoch(loader, 1)
    epoch_a = time.perf_counter() - t0

    # B: features once, then epochs on cached features
    t0 = time.perf_counter()
    feats, targets = extract_features(
        model, binfo.classifier, loader, torch.device("cpu"), torch.channels_last
    )
    cache_s = time.perf_counter() - t0
    head = model.get_submodule(binfo.classifier)
    stage = Stage("head", tuple(n for n, _ in head.named_parameters()), (binfo.classifier,))
    cached = feature_loader(feats, targets, batch_size=args.batch_size, training=True, seed=0)
    b = trainer_for(head, PolicyReport("cached", "frozen", (stage,), ()), [stage], len(cached))
    b._train_epoch(cached, 0)
    t0 = time.perf_counter()
    b._train_epoch(cached, 1)
    epoch_b = time.perf_counter() - t0

    n = len(samples)
    print(
        f"images {n} at {args.img_size} px, batch {args.batch_size}, torch threads "
        f"{torch.get_num_threads()}"
    )
    print(f"A recompute features: {epoch_a:8.3f} s/epoch  {n / epoch_a:10.1f} img/s")
    print(
        f"B cached features:    {epoch_b:8.3f} s/epoch  {n / epoch_b:10.1f} img/s "
        f"(one-off caching {cache_s:.2f} s)"
    )
    print(f"ratio A/B: {epoch_a / epoch_b:.1f}x (goal >= 10x)")


if __name__ == "__main__":
    main()
