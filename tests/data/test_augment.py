"""Augmentation: the dihedral group, and every augmentation option builds and runs."""

import pytest
from PIL import Image

from finetune.config import DataConfig
from finetune.data.augment import RandomDihedral, build_transform
from finetune.models.backbones import load_backbone


def test_dihedral_covers_all_eight_symmetries():
    import random

    random.seed(0)
    img = Image.new("L", (2, 2))
    img.putdata([1, 2, 3, 4])
    seen = {RandomDihedral()(img).tobytes() for _ in range(200)}
    assert len(seen) == 8


@pytest.mark.parametrize(
    "data",
    [
        DataConfig(auto_augment="trivialaugment"),
        DataConfig(auto_augment="rand-m9-mstd0.5-inc1"),
        DataConfig(rotate=15, dihedral=True, hue_jitter=0.05, random_erasing=0.5),
    ],
)
def test_augmentation_options_build_and_run(data):
    _, info = load_backbone("test_resnet", pretrained=False)
    tf = build_transform(info, DataConfig(**{**data.__dict__, "img_size": 48}), training=True)
    assert tf(Image.new("RGB", (64, 40), (120, 30, 60))).shape == (3, 48, 48)
