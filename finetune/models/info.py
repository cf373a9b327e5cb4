"""What a loaded backbone is: its ``BackboneInfo`` and where its classifier sits.

Shared by every module of ``finetune.models`` (and by data preprocessing), so that none of them
needs another to describe a model.

Example:
    >>> from torch import nn
    >>> classifier_name(nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8, 2)))
    '2'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from torch import nn

__all__ = ["BackboneInfo", "classifier_name", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneInfo:
    """What the rest of the pipeline needs to know about a loaded backbone."""

    name: str  # as the user gave it
    architecture: str  # timm architecture name, or "tv:NAME"
    library: str  # "timm" or "torchvision"
    classifier: str  # module path of the classifier (re-created per task)
    num_features: int  # classifier input width
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str
    crop_pct: float
    weights_source: str  # where the weights came from, for the report
    weight_mapping: Optional[str] = None  # how a weight file's keys were mapped, if they were

    @classmethod
    def from_pretrained_cfg(
        cls, cfg: dict, *, name: str = "", architecture: str = ""
    ) -> "BackboneInfo":
        """The preprocessing part of a saved run (``config.json``'s ``pretrained_cfg``)."""
        return cls(
            name,
            architecture,
            "timm",
            "",
            0,
            tuple(cfg["input_size"]),
            tuple(cfg["mean"]),
            tuple(cfg["std"]),
            cfg.get("interpolation", "bilinear"),
            cfg.get("crop_pct", 0.875),
            "",
        )

    @property
    def data_config(self) -> dict:
        """Preprocessing in timm's ``resolve_data_config`` layout."""
        return dict(
            input_size=self.input_size,
            interpolation=self.interpolation,
            mean=self.mean,
            std=self.std,
            crop_pct=self.crop_pct,
            crop_mode="center",
        )


def classifier_name(model: nn.Module) -> str:
    """Module path of the classifier: timm's ``get_classifier()``, else the last ``nn.Linear``.

    Example:
        >>> classifier_name(torchvision.models.vgg16())  # doctest: +SKIP
        'classifier.6'
    """
    if hasattr(model, "get_classifier"):
        target = model.get_classifier()
        for name, module in model.named_modules():
            if module is target:
                return name
        cfg_name = getattr(model, "pretrained_cfg", {}).get("classifier")
        if isinstance(cfg_name, str):
            return cfg_name
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no nn.Linear classifier to replace")
    return names[-1]
