"""Trainer overhead: finetune's Trainer vs a minimal hand-written PyTorch loop, same everything.

Both arms train the same architecture (fresh random init each), on the same pre-made batches
(random tensors already normalised, so data loading is out of the picture), batch size, precision
(fp32 on CPU), channels_last for CNNs, AdamW and the same optimizer steps, in one process,
alternating timed epochs and reporting medians. The hand-written loop is the floor: forward,
cross-entropy, backward, step, zero_grad. Goal (issue 5): Trainer / hand-written >= 0.98.
Also prints the achieved GFLOP/s (forward + backward FLOPs counted by torch's FlopCounterMode)
against a measured fp32 matmul peak of this machine.

    python bench/throughput.py [--models resnet18,vit_tiny_patch16_224] [--img-size 128]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn


def matmul_peak_gflops(n: int = 1024, repeats: int = 20) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return repeats * 2 * n**3 / (time.perf_counter() - start) / 1e9


def step_flops(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        nn.functional.cross_entropy(model(images), targets).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def build(name: str, img_size: int, classes: int):
    import timm

    kwargs = {"img_size": img_size} if "vit" in name else {}
    model = timm.create_model(name, num_classes=classes, **kwargs)
    cnn = sum(isinstance(m, nn.Conv2d) for m in model.modules()) > 1
    fmt = torch.channels_last if cnn else torch.contiguous_format
    return model.to(memory_format=fmt), fmt


def main() -> None:
    from finetune.config import OptimConfig
    from finetune.models.stages import model_stages
    from finetune.train.optim import LRSchedule, build_optimizer, build_param_groups
    from finetune.train.policy import PolicyReport
    from finetune.train.runtime import Runtime
    from finetune.train.trainer import Trainer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,vit_tiny_patch16_224")
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.precision]

    def sync():  # CUDA runs asynchronously: time finished work only
        if device.type == "cuda":
            torch.cuda.synchronize()

    peak = matmul_peak_gflops() if device.type == "cpu" else 0.0
    print(
        f"fp32 matmul peak (1024^3, this machine): {peak:.0f} GFLOP/s; torch threads "
        f"{torch.get_num_threads()}"
    )
    torch.manual_seed(0)
    for name in args.models.split(","):
        x = torch.randn(args.batch_size, 3, args.img_size, args.img_size, device=device)
        y = torch.randint(0, 10, (args.batch_size,), device=device)
        batches = [(x, y)] * args.steps

        # arm A: hand-written loop
        model_a, fmt = build(name, args.img_size, 10)
        model_a.to(device)
        opt_a = torch.optim.AdamW(model_a.parameters(), lr=1e-4)
        scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")
        xa = x.contiguous(memory_format=fmt)

        def hand_epoch():
            model_a.train()
            for _ in range(args.steps):
                with torch.autocast(device.type, dtype=dtype or torch.float32,
                                    enabled=dtype is not None):  # fmt: skip
                    loss = nn.functional.cross_entropy(model_a(xa), y)
                scaler.scale(loss).backward()
                scaler.step(opt_a)
                scaler.update()
                opt_a.zero_grad(set_to_none=True)
            sync()

        # arm B: finetune's Trainer (scheduler, param groups, metrics, progress bookkeeping)
        model_b, _ = build(name, args.img_size, 10)
        cfg = OptimConfig(lr=1e-4, warmup_epochs=0, weight_decay=0.0, label_smoothing=0.0)
        stages = model_stages(model_b)
        opt_b = build_optimizer(build_param_groups(model_b, cfg, stages), cfg)
        sched = LRSchedule(opt_b, cfg, steps_per_epoch=args.steps, epochs=100)
        trainer = Trainer(
            model_b,
            optimizer=opt_b,
            scheduler=sched,
            policy=PolicyReport("full", "frozen", tuple(stages), ()),
            optim=cfg,
            runtime=Runtime(device, args.precision, channels_last=fmt == torch.channels_last),
        )

        flops = step_flops(model_a, xa, y) if device.type == "cpu" else None
        hand_epoch()
        trainer._train_epoch(batches, 0)  # warm-up both
        times = {"hand-written": [], "finetune": []}
        for r in range(args.repeats):
            start = time.perf_counter()
            hand_epoch()
            times["hand-written"].append(time.perf_counter() - start)
            start = time.perf_counter()
            trainer._train_epoch(batches, 1 + r)
            sync()
            times["finetune"].append(time.perf_counter() - start)
        images = args.steps * args.batch_size
        rates = {k: images / sorted(v)[len(v) // 2] for k, v in times.items()}
        print(
            f"{name} at {args.img_size} px, batch {args.batch_size}, {args.steps} steps x "
            f"{args.repeats} (medians):"
        )
        for k, rate in rates.items():
            if flops is None:  # the matmul peak is the CPU's: no GFLOP/s on CUDA
                print(f"  {k:13s} {rate:7.1f} img/s")
                continue
            gflops = rate / args.batch_size * flops / 1e9
            print(
                f"  {k:13s} {rate:7.1f} img/s  {gflops:6.1f} GFLOP/s "
                f"({100 * gflops / peak:.0f} % of matmul peak)"
            )
        print(
            f"  ratio finetune / hand-written: {rates['finetune'] / rates['hand-written']:.3f} "
            "(goal >= 0.98)"
        )


if __name__ == "__main__":
    main()
