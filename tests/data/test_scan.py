"""Issue 4: the pre-scan - every bad-file kind (multi-band TIFFs included), suspicious files,
the scan cache; pipes never opened; how high-depth data is scaled, in the report."""

import os
import shutil
import threading

import numpy as np
import pytest
import tifffile
from PIL import Image
from rich.console import Console

from finetune.data.folder import scan_folder
from finetune.data.scan import check_file
from finetune.errors import DataError
from finetune.render import scan_report
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


def _finishes(fn, fifo, seconds=10.0):
    """fn() run in a thread; if it is still blocked after ``seconds`` (opening the pipe for
    reading waits for a writer), the pipe is opened for writing to let it go, and the test fails."""
    result = {}

    def target():
        try:
            result["value"] = fn()
        except BaseException as e:  # re-raised in the test's thread
            result["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        with open(fifo, "wb"):  # the blocked reader gets end-of-file
            pass
        thread.join(seconds)
        pytest.fail(f"blocked on the pipe {fifo} for {seconds:.0f} s")
    if "error" in result:
        raise result["error"]
    return result["value"]


def test_a_pipe_named_png_is_skipped_as_not_a_regular_file_never_opened(image_folder):
    """Bug 9: a FIFO named x.png in a data folder hung `scan` and `run` forever (reading it
    waits for a writer); only regular files are opened, anything else is a bad file."""
    fifo = image_folder / "cat" / "x.png"
    os.mkfifo(fifo)
    assert _finishes(lambda: check_file(str(fifo)), fifo).problem == "not a regular file"
    with pytest.warns(UserWarning, match=r"skipping unreadable image .*x.png: not a regular file"):
        info = _finishes(lambda: scan_folder(image_folder), fifo)
    assert info.skipped == ((str(fifo), "not a regular file"),)
    assert len(info.train + info.val) == 12


def test_scan_report_says_how_each_high_depth_format_is_scaled(tmp_path):
    """Bug 8: the report names the scaling of each mode present (16-bit, stated 12-bit, float)."""
    for c in "abc":
        (tmp_path / "d" / c).mkdir(parents=True)
    for i in range(2):
        Image.fromarray(np.full((8, 8), 40000 + i, np.uint16)).save(tmp_path / f"d/a/{i}.png")
        tifffile.imwrite(tmp_path / f"d/b/{i}.tif", np.full((8, 8), 0.5 + i / 10, np.float32))
        tifffile.imwrite(
            tmp_path / f"d/c/{i}.tif",
            np.full((8, 8), 4000 + i, np.uint16),
            extratags=[(281, "H", 1, 4095, True)],  # MaxSampleValue: 12-bit data
        )
    info = scan_folder(tmp_path / "d")
    assert {c.scaling for c in info.checks.values()} == {
        "16-bit -> /65535",
        "12-bit (stated) in 16-bit -> /4095",
        "float -> as stored within [0, 1], else /255, /65535 or /max by its range",
    }
    console = Console(record=True, width=400)
    scan_report(info, console)
    assert (
        "scaling: 12-bit (stated) in 16-bit -> /4095, 16-bit -> /65535, float -> as stored"
        in console.export_text()
    )


def test_scans_do_not_submit_every_file_at_once(image_folder, monkeypatch):
    """Regression (issue 12): the scan ran ThreadPoolExecutor.map over all files, which holds a
    future per file (~1.6 kB) until the end: +2 kB per image of peak memory at the scan."""
    from concurrent.futures import Executor

    def whole_list_map(*args, **kwargs):
        raise AssertionError("Executor.map submits every item at once")

    monkeypatch.setattr(Executor, "map", whole_list_map)
    from finetune.data.scan import check_files

    paths = [str(p) for p in sorted(image_folder.rglob("*.png"))]
    results, _ = check_files(paths, level="full")
    assert list(results) == paths and not any(c.problem for c in results.values())


def test_the_scan_cache_is_a_line_per_file(image_folder):
    """Regression (issue 12): the scan cache was written as one JSON text built from a dict of
    every file (~1.5 kB per image at the scan's peak, the folder's largest per-image cost) and
    read back whole. It is now a header line and one line per file, written and read in turn."""
    import json

    from finetune.data.scan import CACHE_VERSION, _cache_file

    first = scan_folder(image_folder)
    lines = _cache_file(image_folder, 89_478_485).read_text().splitlines()
    assert json.loads(lines[0])["version"] == CACHE_VERSION and len(lines) == 1 + 12
    name, key, check = json.loads(lines[1])
    assert os.path.exists(image_folder / name) and len(key) == 4 and check["digest"]
    assert scan_folder(image_folder).cache_hits == 12
    path = _cache_file(image_folder, 89_478_485)
    path.write_text(path.read_text()[:-40])  # a damaged cache is only a miss
    again = scan_folder(image_folder)
    assert again.cache_hits == 0 and again.train == first.train
