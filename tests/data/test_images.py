"""Reading images: formats and modes to RGB, 16-bit scaling, CMYK, EXIF rotation, multi-band
TIFFs."""

import numpy as np
import pytest
import torch
from PIL import Image

from finetune.data.folder import scan_folder
from finetune.data.images import load_bands, load_image
from tests.conftest import COLOURS, make_image


@pytest.mark.parametrize(
    "formats", [(".jpg", "RGB"), (".bmp", "L"), (".tiff", "RGBA"), (".webp", "RGB"), (".png", "P")]
)
def test_common_formats_and_modes_become_rgb(tmp_path, formats):
    ext, mode = formats
    path = make_image(tmp_path / f"x{ext}", COLOURS["cat"], mode=mode)
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (40, 32)


def test_16bit_grayscale_is_scaled_not_clipped(tmp_path):
    arr = np.full((8, 8), 40000, dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "x16.png")
    assert Image.open(tmp_path / "x16.png").mode.startswith("I")
    value = np.asarray(load_image(tmp_path / "x16.png"))[0, 0, 0]
    assert value == int(40000 * 255 / 65535)  # PIL's convert("L") would clip to 255


def test_cmyk_and_exif_rotation(tmp_path):
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (20, 10), (0, 255, 255, 0)).save(cmyk)
    img = load_image(cmyk)
    assert img.mode == "RGB" and img.getpixel((5, 5))[0] > 200  # red survives the conversion
    rotated = tmp_path / "exif.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.new("RGB", (40, 20), (10, 20, 30)).save(rotated, exif=exif)
    assert load_image(rotated).size == (20, 40)


@pytest.mark.parametrize("bands_first", [False, True])
def test_bands_load_scaled_and_in_order(tmp_path, bands_first, make_tiles):
    root = make_tiles(tmp_path / "s2", bands_first=bands_first)
    x = load_bands(root / "water" / "0.tif", 13)
    assert x.shape == (13, 24, 24) and x.dtype == torch.float32
    assert 0.3 < float(x.mean()) < 0.6  # uint16 / 65535, not clipped to 8 bit
    info = scan_folder(root)
    assert {c.mode for c in info.checks.values()} == {"13-band uint16"} and not info.skipped
