"""Reading images: formats and modes to RGB, 16-bit, 12-bit and float scaling, CMYK, EXIF
rotation, multi-band TIFFs; walking folders (symlink loops, pipes)."""

import os
import re

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from finetune.data.folder import scan_folder
from finetune.data.images import load_bands, load_image, walk_images
from tests.conftest import COLOURS, make_image

TWELVE_BIT = [(281, "H", 1, 4095, True)]  # TIFF MaxSampleValue 4095: 12-bit data in 16 bits


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


def test_float_tiff_in_0_1_is_taken_as_stored_not_black(tmp_path):
    """Bug 8: float32 TIFFs with values in [0, 1] were divided as if 0-255 and came out black."""
    tifffile.imwrite(tmp_path / "f.tif", np.full((8, 8), 0.5, np.float32))
    assert np.asarray(load_image(tmp_path / "f.tif"))[0, 0, 0] == 127
    tifffile.imwrite(tmp_path / "g.tif", np.full((8, 8), 200.0, np.float32))  # 0-255 floats
    assert np.asarray(load_image(tmp_path / "g.tif"))[0, 0, 0] == 200


def test_12_bit_data_is_scaled_by_4095_only_when_the_tiff_states_it(tmp_path):
    """Bug 8: 12-bit data in 16-bit containers came out dark (divided by 65535). A TIFF that
    states 12 bits (MaxSampleValue 4095) is divided by 4095; a 16-bit image that is merely dark
    (no such tag) keeps the full 16-bit range, so it is not brightened."""
    data = np.full((8, 8), 4095, np.uint16)
    tifffile.imwrite(tmp_path / "stated.tif", data, extratags=TWELVE_BIT)
    tifffile.imwrite(tmp_path / "dark.tif", data)
    assert np.asarray(load_image(tmp_path / "stated.tif"))[0, 0, 0] == 255
    assert np.asarray(load_image(tmp_path / "dark.tif"))[0, 0, 0] == int(4095 * 255 / 65535)


def test_load_bands_applies_the_stated_12_bit_range(tmp_path):
    """Bug 8: the same rule for multi-band data: stated 12-bit / 4095, float as stored."""
    tifffile.imwrite(
        tmp_path / "b12.tif", np.full((8, 8, 5), 4095, np.uint16), extratags=TWELVE_BIT
    )
    tifffile.imwrite(tmp_path / "b16.tif", np.full((8, 8, 5), 4095, np.uint16))
    tifffile.imwrite(tmp_path / "f.tif", np.full((8, 8, 5), 0.25, np.float32))
    assert float(load_bands(tmp_path / "b12.tif", 5).max()) == 1.0
    assert float(load_bands(tmp_path / "b16.tif", 5).max()) == pytest.approx(4095 / 65535)
    assert float(load_bands(tmp_path / "f.tif", 5).max()) == 0.25


def test_walk_images_skips_pipes_with_a_warning_and_never_opens_them(tmp_path):
    """Bug 9: a FIFO named x.png in a predict folder hung `predict` (it was yielded, then
    opened); it is skipped with a warning, given inside a folder or by name."""
    make_image(tmp_path / "p" / "a.png", COLOURS["cat"])
    fifo = tmp_path / "p" / "x.png"
    os.mkfifo(fifo)
    with pytest.warns(UserWarning, match=r"skipping .*x.png: not a regular file"):
        assert list(walk_images([tmp_path / "p"])) == [tmp_path / "p" / "a.png"]
    with pytest.warns(UserWarning, match=r"skipping .*x.png: not a regular file"):
        assert list(walk_images([fifo])) == []


@pytest.mark.parametrize("link, target", [("self", "."), ("sub/up", "..")])
def test_walk_images_lists_each_folder_once_through_symlink_loops(tmp_path, link, target):
    """Bug 5: `ln -s . photos/self` (or `..` below it) made walk_images yield every image again
    per level; a link back into a folder that contains it is skipped with a warning naming it."""
    make_image(tmp_path / "p" / "a.png", COLOURS["cat"])
    make_image(tmp_path / "p" / "sub" / "b.png", COLOURS["dog"])
    (tmp_path / "p" / link).symlink_to(target)
    with pytest.warns(UserWarning, match=rf"skipping {re.escape(str(tmp_path / 'p' / link))}: "):
        paths = list(walk_images([tmp_path / "p"]))
    assert paths == [tmp_path / "p" / "a.png", tmp_path / "p" / "sub" / "b.png"]
