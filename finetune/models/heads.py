"""Replace a backbone's classifier with a fresh one for the user's classes."""

from __future__ import annotations

from torch import nn

from .info import BackboneInfo

__all__ = ["replace_head"]


def replace_head(model: nn.Module, num_classes: int, info: BackboneInfo) -> nn.Module:
    """Re-create the classifier with ``num_classes`` outputs (random init), in place.

    timm models use their own ``reset_classifier`` so pooling and key names stay timm's (the run
    directory must load with ``timm.create_model("local-dir:...")``); torchvision models get a new
    ``nn.Linear`` at the classifier's path.

    Example:
        >>> model, info = load_backbone("test_resnet", pretrained=False)
        >>> replace_head(model, 3, info).get_classifier().out_features
        3
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if info.library == "timm":
        model.reset_classifier(num_classes)
        return model
    old = model.get_submodule(info.classifier)
    parent, _, leaf = info.classifier.rpartition(".")
    setattr(
        model.get_submodule(parent) if parent else model,
        leaf,
        nn.Linear(old.in_features, num_classes),
    )
    return model
