"""Issue 3: PEFT adapters (peft) on a ViT and CNNs; merged and unmerged logits agree."""

import json

import pytest
import timm
import torch

import finetune
from finetune.config import AdapterConfig
from finetune.models.adapters import apply_adapter, default_targets, merge_adapter


@pytest.mark.parametrize(
    "name, expected",
    [
        (
            "test_vit",
            {"blocks.0.attn.qkv", "blocks.0.attn.proj", "blocks.0.mlp.fc1", "blocks.0.mlp.fc2"},
        ),
        ("resnet50", {"layer1.0.conv1", "layer1.0.conv3", "layer4.2.conv3"}),
        ("resnet18", {"layer1.0.conv1", "layer1.0.conv2"}),  # BasicBlock: no 1x1 convs to adapt
        ("test_efficientnet", {"blocks.3.0.conv_pw", "blocks.1.0.conv_pwl"}),
        ("test_convnext", {"stages.0.blocks.0.mlp.fc1"}),
    ],
)
def test_default_targets_per_family(name, expected):
    model = timm.create_model(name, num_classes=3)
    head = {"resnet50": "fc", "resnet18": "fc", "test_efficientnet": "classifier"}.get(name, "head")
    targets = set(default_targets(model, head))
    assert expected <= targets and head not in targets
    assert not any(t.endswith("conv_dw") for t in targets)  # never depthwise convs
    if name == "resnet50":
        assert not any(t.endswith("conv2") for t in targets)  # 3x3 convs stay frozen


@pytest.mark.parametrize(
    "name, method",
    [
        ("test_vit", "lora"),
        ("test_resnet", "lora"),
        ("test_convnext", "loha"),
        ("test_vit", "ia3"),
        ("test_efficientnet", "lokr"),
    ],
)
def test_merged_and_unmerged_logits_agree(name, method):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=3).eval()
    head = (
        "head"
        if "vit" in name
        else {"test_resnet": "fc", "test_convnext": "head.fc", "test_efficientnet": "classifier"}[
            name
        ]
    )
    wrapped = apply_adapter(model, AdapterConfig(peft=method, lora_r=4), head=head)
    with torch.no_grad():  # adapters start as a no-op; give them real values
        for n, p in wrapped.named_parameters():
            if p.requires_grad and "modules_to_save" not in n:
                p.add_(torch.randn_like(p) * 0.05)
    trainable = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert any("modules_to_save" in n for n in trainable)  # the head trains and is saved
    assert all(
        ("lora" in n or "hada" in n or "lokr" in n or "ia3" in n or "modules_to_save" in n)
        for n in trainable
    )
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        unmerged = wrapped(x)
        merged = merge_adapter(wrapped)(x)
    assert not any("lora" in n for n, _ in model.named_parameters())
    assert torch.allclose(unmerged, merged, atol=1e-4)


@pytest.mark.parametrize("name", ["test_vit", "test_resnet"])
def test_lora_run_saves_adapter_and_a_merged_model(image_folder, tmp_path, name):
    result = finetune.adapt(
        name,
        image_folder,
        verbose=False,
        pretrained=False,
        epochs=1,
        img_size=32,
        batch_size=4,
        num_workers=0,
        warmup_epochs=0.0,
        peft="lora",
        lora_r=4,
        output=str(tmp_path / "run"),
    )
    run = result.run_dir
    assert (run / "adapter" / "adapter_model.safetensors").stat().st_size < (
        run / "model.safetensors"
    ).stat().st_size
    config = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4
    assert result.metrics["adapter_merge_max_abs_diff"] < 1e-4
    # plain timm, no peft: the merged weights under timm's own key names
    model = timm.create_model(f"local-dir:{run}", pretrained=True).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        assert torch.allclose(model(x), result.model.eval()(x), atol=1e-5)
    records = finetune.predict(run, [image_folder / "cat"])
    assert len(records) == 6
