import pytest
import torch
from safetensors.torch import save_file

from finetune.models.backbones import load_backbone
from finetune.models.heads import replace_head
from finetune.models.weights import load_weight_file, map_state_dict


@pytest.mark.parametrize(
    "name, classifier",
    [
        ("test_resnet", "fc"),
        ("test_efficientnet", "classifier"),
        ("test_vit", "head"),
        ("test_convnext", "head.fc"),
    ],
)
def test_timm_info_and_head(name, classifier):
    model, info = load_backbone(name, pretrained=False)
    assert info.classifier == classifier and info.library == "timm"
    assert info.weights_source.startswith("random init")
    replace_head(model, 3, info)
    assert model(torch.zeros(2, *info.input_size)).shape == (2, 3)


def test_torchvision_backbone_and_head():
    model, info = load_backbone("tv:resnet18", pretrained=False)
    assert (info.classifier, info.num_features, info.input_size) == ("fc", 512, (3, 224, 224))
    assert info.mean == (0.485, 0.456, 0.406)
    replace_head(model, 4, info)
    assert model.fc.out_features == 4


@pytest.mark.parametrize(
    "name, message",
    [
        ("resnet5O", "Did you mean: resnet50"),
        ("tv:resnet_18", "Did you mean: tv:resnet18"),
    ],
)
def test_unknown_backbone_suggests_close_names(name, message):
    with pytest.raises(ValueError, match=message):
        load_backbone(name, pretrained=False)


def test_no_pretrained_weights_says_what_was_tried():
    # test_resnet has no packaged weights and HF_HUB_OFFLINE=1 (conftest): nothing to load
    with pytest.raises(FileNotFoundError) as e:
        load_backbone("test_resnet")
    text = str(e.value)
    assert "Tried: Hugging Face hub cache only: HF_HUB_OFFLINE is set" in text
    assert "--weights FILE" in text and "--no-pretrained" in text


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
