"""Cached features for linear probes: run the frozen backbone once, then train the head alone.

The classifier's input is captured with a forward pre-hook, so this works for any model whose
head is one module (timm and torchvision alike), including pooling and pre-logits layers. It
is only correct while everything but the head is frozen and the training images are not
augmented (the features would change every epoch otherwise): ``train.cache_features`` requires
``policy.linear_probe`` and computes training features with the evaluation transform.

Example:
    >>> feats, targets = extract_features(model, "fc", loader, device)  # doctest: +SKIP
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["extract_features", "feature_loader"]


@torch.inference_mode()
def extract_features(
    model: nn.Module,
    classifier: str,
    loader,
    device: torch.device,
    memory_format=torch.contiguous_format,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, targets) of every batch of ``loader``: the input of module ``classifier``."""
    captured: list[torch.Tensor] = []
    hook = model.get_submodule(classifier).register_forward_pre_hook(
        lambda _m, args: captured.append(args[0].detach().float().cpu())
    )
    targets = []
    was_training = model.training
    model.eval()
    try:
        for images, labels in loader:
            model(images.to(device, memory_format=memory_format))
            targets.append(labels)
    finally:
        hook.remove()
        model.train(was_training)
    return torch.cat(captured), torch.cat(targets)


def feature_loader(
    features: torch.Tensor,
    targets: torch.Tensor,
    *,
    batch_size: int,
    training: bool,
    seed: int,
    sample_weights=None,
):
    """A DataLoader over cached features, shuffled (or class-balanced) with a seeded generator
    for training."""
    from ..data.datasets import build_loader

    return build_loader(
        torch.utils.data.TensorDataset(features, targets),
        batch_size=batch_size,
        training=training,
        num_workers=0,
        seed=seed,
        sample_weights=sample_weights,
    )
