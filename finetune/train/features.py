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

from typing import Optional, Sequence

import torch
from torch import nn

__all__ = ["extract_features", "feature_loader"]


@torch.no_grad()  # not inference mode: BatchNorm buffers updated here keep training afterwards
def extract_features(
    model: nn.Module,
    classifier: str,
    loader,
    device: torch.device,
    memory_format=torch.contiguous_format,
    *,
    normalize: Optional[tuple[Sequence[float], Sequence[float]]] = None,
    max_images: Optional[int] = None,
    batch_stats: Sequence[nn.Module] = (),
) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, targets) of the batches of ``loader``: the input of module ``classifier``,
    in eval mode. ``normalize=(mean, std)`` normalises uint8 batches (training loaders leave it
    to the device); ``max_images`` stops after the batch that reaches it.

    ``batch_stats``: BatchNorm layers that normalise with each batch's own statistics during
    the pass, as in training, and keep their average over the pass as running statistics
    (AdaBN: Li et al. 2016): the features are then the ones the first training steps see, and
    evaluation normalises this data with its own statistics, not ImageNet's."""
    captured: list[torch.Tensor] = []
    hook = model.get_submodule(classifier).register_forward_pre_hook(
        lambda _m, args: captured.append(args[0].detach().float().cpu())
    )
    if normalize is not None:
        mean, std = (torch.tensor(v, device=device).view(1, -1, 1, 1) * 255 for v in normalize)
    targets, seen = [], 0
    was_training = model.training
    model.eval()
    momenta = [bn.momentum for bn in batch_stats]
    for bn in batch_stats:
        bn.reset_running_stats()
        bn.momentum = None  # a cumulative average over the pass, not an exponential one
        bn.train()
    try:
        for images, labels in loader:
            images = images.to(device)
            if normalize is not None and images.dtype == torch.uint8:
                images = (images.float() - mean) / std
            model(images.contiguous(memory_format=memory_format))
            targets.append(labels)
            seen += len(labels)
            if max_images is not None and seen >= max_images:
                break
    finally:
        hook.remove()
        for bn, momentum in zip(batch_stats, momenta):
            bn.momentum = momentum
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
