import pytest
import torch

from finetune.models.backbones import load_backbone
from finetune.models.heads import replace_head


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


def test_a_planted_torchvision_cache_file_is_never_unpickled(tmp_path, monkeypatch):
    # regression: tv:NAME loaded $TORCH_HOME/hub/checkpoints/*.pth with weights_only=False (the
    # hash is checked on download only): a state dict whose _metadata had a __reduce__ ran code
    import collections
    import os

    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    marker = tmp_path / "code-ran"
    weights = torchvision.models.get_model_weights("mobilenet_v3_small").DEFAULT
    planted = tmp_path / "torch" / "hub" / "checkpoints" / os.path.basename(weights.url)
    planted.parent.mkdir(parents=True)

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    state = collections.OrderedDict(torchvision.models.mobilenet_v3_small().state_dict())
    state._metadata = Payload()
    torch.save(state, planted)
    with pytest.raises(ValueError, match="refused to load .*needs pickled code"):
        load_backbone("tv:mobilenet_v3_small")
    assert not marker.exists()


def test_offline_a_missing_torchvision_checkpoint_is_not_downloaded(tmp_path, monkeypatch, capsys):
    # regression: with HF_HUB_OFFLINE=1 (conftest) tv:NAME still went to download.pytorch.org,
    # printing "Downloading: ..." (and waiting out timeouts behind a firewall) before the error
    import torch.hub

    def no_network(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(FileNotFoundError) as e:
        load_backbone("tv:resnet18")
    text = str(e.value)
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    assert f"torch hub cache ({checkpoints}/resnet18-" in text and "HF_HUB_OFFLINE is set" in text
    assert f"place the file in {tmp_path / 'torch' / 'hub'}/checkpoints/" in text
    assert "Downloading" not in capsys.readouterr().err
