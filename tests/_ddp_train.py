"""Helper for train/test_distributed.py: one training run on a fixed tensor dataset (no
augmentation, no BatchNorm), so that N processes with batch b and one process with batch N*b see
the same global batches. SGD, not AdamW: a ViT's key bias has an exactly-zero true gradient
(softmax is shift-invariant), and Adam turns the rounding noise of that zero into LR-sized steps
whose sign differs between the two runs; SGD keeps rounding noise at rounding size.
Usage: python _ddp_train.py OUTPUT BATCH_SIZE [halt]; ``halt``: a logger asks the run to end
after its first epoch (as tune's budget stop does)."""

import sys

import torch

import finetune


class Fixed(torch.utils.data.Dataset):
    classes = ["a", "b"]

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(40, 3, 32, 32, generator=g)
        self.y = torch.arange(40) % 2
        self.x[self.y == 1] += 0.5  # learnable

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


class HaltAfterFirst:
    halt = None

    def log_epochs(self, records):
        self.halt = "the test says so"

    def close(self):
        pass


if __name__ == "__main__":
    halt = sys.argv[3:] == ["halt"]
    finetune.adapt(
        "test_vit",
        Fixed(),
        verbose=False,
        pretrained=False,
        epochs=2,
        img_size=32,
        batch_size=int(sys.argv[2]),
        num_workers=0,
        warmup_epochs=0.0,
        label_smoothing=0.0,
        output=sys.argv[1],
        deterministic=True,
        optimizer="sgd",
        lr=0.05,
        momentum=0.9,
        callbacks=[HaltAfterFirst()] if halt else [],
    )
