"""Issue 4: the pre-scan - every bad-file kind (multi-band TIFFs included), suspicious files,
the scan cache."""

import os
import shutil

import numpy as np
import pytest
import tifffile

from finetune.data.folder import scan_folder
from finetune.data.scan import check_file
from finetune.errors import DataError
from tests.conftest import COLOURS, make_image


def _corrupt_png(path):
    data = bytearray(path.read_bytes())
    start = data.index(b"IDAT") + 8  # inside the compressed image data
    data[start : start + 20] = bytes(20)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_text("hello, not an image"), "not an image"),
        (lambda p: p.write_bytes(make_image(p, COLOURS["cat"]).read_bytes()[:-200]), "truncated"),
        (lambda p: (make_image(p, COLOURS["cat"]), _corrupt_png(p)), None),
    ],
)
def test_bad_file_kinds(tmp_path, make, expected):
    path = tmp_path / "x.png"
    make(path)
    problem = check_file(str(path)).problem
    assert problem is not None
    if expected:
        assert problem.startswith(expected), problem
    else:
        assert problem.startswith(("undecodable", "truncated")), problem


def test_pixel_limit_catches_decompression_bombs(tmp_path):
    path = make_image(tmp_path / "big.png", COLOURS["cat"], size=(100, 80))
    assert check_file(str(path), max_pixels=10_000).problem is None
    problem = check_file(str(path), max_pixels=5_000).problem
    assert problem.startswith("over the pixel limit (100x80 > 5,000 px")


def test_wrong_extension_is_suspicious_and_strict_rejects_it(image_folder):
    shutil.copy(image_folder / "cat" / "cat0.png", image_folder / "cat" / "really_png.jpg")
    info = scan_folder(image_folder)
    assert info.suspicious == (
        (str(image_folder / "cat" / "really_png.jpg"), "wrong extension: PNG data in a .jpg file"),
    )
    assert any(p.endswith("really_png.jpg") for p, _ in info.train + info.val)  # still used
    with pytest.raises(DataError, match="suspicious file"):
        scan_folder(image_folder, strict=True)


def test_scan_is_cached_by_size_and_mtime(image_folder):
    first = scan_folder(image_folder)
    assert first.cache_hits == 0
    again = scan_folder(image_folder)
    assert again.cache_hits == 12 and again.train == first.train
    target = image_folder / "dog" / "dog1.png"
    target.write_bytes(b"")  # changed on disk: size and mtime differ, so it is checked again
    os.utime(target, ns=(1, 1))
    with pytest.warns(UserWarning, match="dog1.png: empty file"):
        third = scan_folder(image_folder)
    assert third.cache_hits == 11 and len(third.skipped) == 1


def test_four_band_rgbn_is_multiband_but_rgba_is_not(tmp_path):
    from finetune.data.scan import check_file

    rgbn, rgba = tmp_path / "rgbn.tif", tmp_path / "rgba.tif"
    data = np.full((16, 16, 4), 100, np.uint8)
    tifffile.imwrite(rgbn, data, photometric="rgb", extrasamples=["unspecified"])
    tifffile.imwrite(rgba, data, photometric="rgb", extrasamples=["unassalpha"])
    assert check_file(str(rgbn)).mode == "4-band uint8"
    assert check_file(str(rgba)).mode == "RGBA"


def test_tiff_bomb_is_rejected_from_the_header(tmp_path):
    from finetune.data.scan import check_file

    path = tmp_path / "big.tif"
    tifffile.imwrite(
        path, np.zeros((5, 200, 200), np.uint8), photometric="minisblack", planarconfig="separate"
    )
    assert check_file(str(path), max_pixels=1000).problem.startswith("over the pixel limit")
