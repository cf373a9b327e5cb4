"""Class imbalance: the loss's class weights and the sampler's per-image weights, both inverse
class frequency (``data.class_weights auto``, ``data.sampler balanced``).

Example:
    >>> loss_weights, sample_weights = class_balance(data, cfg)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .folder import DataInfo

if TYPE_CHECKING:
    from ..config import FinetuneConfig

__all__ = ["class_balance"]


def class_balance(data: DataInfo, cfg: "FinetuneConfig"):
    """(loss class weights or None, training sample weights or None) for the imbalance options:
    inverse class frequency, normalised so a balanced set gets weight 1 everywhere."""
    import torch

    counts = torch.tensor(data.counts()["train"], dtype=torch.float64)
    if data.multilabel:
        # BCE pos_weight: negatives per positive of each label; a sample weighs as its rarest label
        n = len(data.train)
        loss_weights = (
            ((n - counts) / counts.clamp(min=1)).float()
            if cfg.data.class_weights == "auto"
            else None
        )
        inverse = n / counts.clamp(min=1)
        # images without any label are a group of their own, weighted like a label
        empty = sum(1 for _, y in data.train if not y)
        per_sample = [
            max((float(inverse[c]) for c in y), default=n / max(empty, 1)) for _, y in data.train
        ]
    else:
        inverse = counts.sum() / (len(counts) * counts.clamp(min=1))
        loss_weights = inverse.float() if cfg.data.class_weights == "auto" else None
        per_sample = [float(inverse[y]) for _, y in data.train]
    sample_weights = None
    if cfg.data.sampler == "balanced":
        sample_weights = torch.tensor(per_sample, dtype=torch.float64)
    return loss_weights, sample_weights
