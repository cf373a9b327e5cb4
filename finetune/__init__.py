"""finetune: turn a pretrained ImageNet backbone into a model for your images.

Example:
    >>> import finetune
    >>> result = finetune.adapt("tf_efficientnet_lite0", "my_images", epochs=3)  # doctest: +SKIP

The public names load lazily so that ``finetune --help`` does not import torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "adapt": "api",
    "inspect": "api",
    "FitResult": "api",
    "Interrupted": "api",
    "predict": "inference",
    "evaluate": "evaluation",
    "export_run": "export",
    "lr_find": "tools.lrfind",
    "tune": "tools.tune",
    "TuneReport": "tools.tune",
    "FinetuneConfig": "config",
    "ConfigError": "errors",
    "DataError": "errors",
    "load_backbone": "models.backbones",
    "BackboneInfo": "models.info",
    "replace_head": "models.heads",
    "apply_policy": "train.policy",
    "PolicyReport": "train.policy",
    "scan_folder": "data.folder",
    "DataInfo": "data.folder",
    "load_run": "train.checkpoint",
}
__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'finetune' has no attribute '{name}'")


def __dir__():
    return __all__
