"""Parameter-efficient fine-tuning through peft: LoRA, LoHa, LoKr and IA3 on timm/torchvision
models, the head always trainable and saved.

Default targets per family: ViT/DeiT/Swin (modules named ``*.attn.qkv``) adapt the attention
qkv/proj and MLP fc1/fc2 linears; CNNs (ResNet, EfficientNet, ConvNeXt...) adapt every pointwise
(1x1, ungrouped) convolution and linear layer except the classifier; CNNs whose blocks have no
pointwise convs (BasicBlock ResNets) adapt their ungrouped 3x3 convs instead. ``lora_targets`` (a regex
searched in module names) overrides them. peft is imported only when an adapter is asked for
(it pulls in transformers, ~4 s).

A run directory keeps the adapter (``adapter/adapter_model.safetensors`` and peft's
``adapter_config.json``) and a merged ``model.safetensors`` under the model's own key names, so
``finetune predict`` and ``timm.create_model("local-dir:...")`` need no peft.

Example:
    >>> model = apply_adapter(model, AdapterConfig(peft="lora", lora_r=8), head="head")  # doctest: +SKIP
    >>> merged = merge_adapter(model)  # plain timm module with the LoRA deltas folded in  # doctest: +SKIP
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from torch import nn

from .._io import ADAPTER_DIR, atomic_path
from ..config import AdapterConfig

__all__ = ["default_targets", "apply_adapter", "merge_adapter", "save_adapter", "load_adapter"]

VIT_TARGETS = r"(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)$"


def default_targets(model: nn.Module, head: str) -> list[str]:
    """Module names the family default adapts (see the module docstring)."""
    names = [n for n, _ in model.named_modules()]
    if any(n.endswith("attn.qkv") for n in names):
        rx = re.compile(VIT_TARGETS)
        return [n for n, m in model.named_modules() if rx.search(n) and isinstance(m, nn.Linear)]
    body = [(n, m) for n, m in model.named_modules() if not (n == head or n.startswith(head + "."))]
    convs = [(n, m) for n, m in body if isinstance(m, nn.Conv2d) and m.groups == 1]
    pointwise = [n for n, m in convs if m.kernel_size == (1, 1)]
    if sum("downsample" not in n for n in pointwise) < 2:
        # BasicBlock ResNets (resnet18/34) have no 1x1 convs in their blocks: adapt the 3x3s
        pointwise = [n for n, _ in convs]
    linears = [n for n, m in body if isinstance(m, nn.Linear)]
    return [n for n, _ in body if n in set(pointwise) | set(linears)]


def _targets(model: nn.Module, cfg: AdapterConfig, head: str) -> list[str]:
    if cfg.lora_targets is None:
        targets = default_targets(model, head)
    else:
        try:
            rx = re.compile(cfg.lora_targets)
        except re.error as e:
            raise ValueError(
                f"--lora-targets '{cfg.lora_targets}': not a valid regular expression ({e})"
            ) from None
        targets = [
            n
            for n, m in model.named_modules()
            if n
            and rx.search(n)
            and isinstance(m, (nn.Linear, nn.Conv2d))
            and not (n == head or n.startswith(head + "."))
        ]
    if not targets:
        layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        raise ValueError(
            f"--lora-targets: no Linear/Conv2d module matches "
            f"'{cfg.lora_targets}'; module names look like: "
            f"{', '.join(layers[:: max(1, len(layers) // 6)][:6])}"
        )
    return targets


def apply_adapter(model: nn.Module, cfg: AdapterConfig, *, head: str) -> nn.Module:
    """Wrap ``model`` in a peft model: base frozen, adapters and the head ``head`` trainable."""
    import peft

    targets = _targets(model, cfg, head)
    common = dict(target_modules=targets, modules_to_save=[head])
    if cfg.peft == "lora":
        config = peft.LoraConfig(
            r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, **common
        )
    elif cfg.peft == "loha":
        config = peft.LoHaConfig(
            r=cfg.lora_r, alpha=cfg.lora_alpha, module_dropout=cfg.lora_dropout, **common
        )
    elif cfg.peft == "lokr":
        config = peft.LoKrConfig(
            r=cfg.lora_r, alpha=cfg.lora_alpha, module_dropout=cfg.lora_dropout, **common
        )
    elif cfg.peft == "ia3":
        # IA3 scales activations; "feedforward" modules scale their input instead of output
        ff = [t for t in targets if re.search(r"(fc2|mlp\.fc2|conv_pwl|conv3)$", t)]
        config = peft.IA3Config(feedforward_modules=ff, **common)
    else:
        raise ValueError(f"adapter.peft: '{cfg.peft}' is not one of lora, loha, lokr, ia3")
    return peft.get_peft_model(model, config)


def merge_adapter(model: nn.Module) -> nn.Module:
    """Fold the adapters into the base weights and return the plain base model."""
    return model.merge_and_unload()


def save_adapter(model: nn.Module, run_dir: str | Path) -> Path:
    """Atomically write the adapter and head weights (safetensors) and peft's config."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    folder = Path(run_dir) / ADAPTER_DIR
    folder.mkdir(exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in get_peft_model_state_dict(model).items()}
    with atomic_path(folder / "adapter_model.safetensors") as tmp:
        save_file(state, tmp, metadata={"format": "pt"})
    config = model.peft_config["default"].to_dict()
    config = {k: sorted(v) if isinstance(v, set) else v for k, v in config.items()}
    with atomic_path(folder / "adapter_config.json") as tmp:
        Path(tmp).write_text(json.dumps(config, indent=2, default=str))
    return folder


def load_adapter(model: nn.Module, run_dir: str | Path) -> None:
    """Load the adapter and head weights written by ``save_adapter`` into a peft model."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = load_file(str(Path(run_dir) / ADAPTER_DIR / "adapter_model.safetensors"))
    set_peft_model_state_dict(model, state)


def adapter_stages(stages, model: nn.Module):
    """Stages of a peft-wrapped model: every parameter (the base weight, the adapter weights,
    the trainable head copy) joins the stage of the module it belongs to."""
    from .stages import Stage

    owner_stage = {}
    for stage in stages:
        for p in stage.params:
            owner_stage[p.rsplit(".", 1)[0] if "." in p else p] = stage.name
    grouped: dict[str, list[str]] = {s.name: [] for s in stages}
    for name, _ in model.named_parameters():
        parts = name.removeprefix("base_model.model.").split(".")
        owner = next(
            (
                ".".join(parts[:k])
                for k in range(len(parts), 0, -1)
                if ".".join(parts[:k]) in owner_stage
            ),
            None,
        )
        if owner is None:
            raise ValueError(f"cannot place adapter parameter '{name}' in a stage")
        grouped[owner_stage[owner]].append(name)
    return tuple(Stage(s.name, tuple(grouped[s.name]), s.modules) for s in stages)
