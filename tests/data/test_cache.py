"""Issue 4: the decoded-image cache (its uint8 training batches: train/test_trainer.py)."""

import json
import os

import numpy as np
import pytest
import torch

from finetune.config import DataConfig, FinetuneConfig
from finetune.data.augment import build_transform
from finetune.data.cache import ImageCache, downsizer, eval_preparer, split_transform
from finetune.data.datasets import build_datasets
from finetune.data.folder import scan_folder
from finetune.data.images import load_image
from finetune.models.backbones import load_backbone
from tests.conftest import COLOURS, make_image


@pytest.mark.parametrize("mode", ["memory", "disk"])
def test_cached_images_equal_prepared_originals(tmp_path, mode):
    paths = [
        str(make_image(tmp_path / f"{i}.png", COLOURS["cat"], size=(90, 60), seed=i))
        for i in range(3)
    ]
    cache = ImageCache.build(paths, prepare=downsizer(40), mode=mode, side=40)
    for i, p in enumerate(paths):
        assert np.array_equal(np.asarray(cache.image(i)), downsizer(40)(p))
        assert cache.image(i).size == (60, 40)  # shorter side 40, aspect kept
    if mode == "disk":  # a second build reads the same file back instead of decoding
        again = ImageCache.build(paths, prepare=downsizer(40), mode="disk", side=40)
        assert again.data_file == cache.data_file


def test_cached_evaluation_is_bit_identical_to_the_plain_transform(image_folder):
    _, info = load_backbone("test_resnet", pretrained=False)
    cfg = FinetuneConfig().with_overrides(img_size=32, cache_images="memory")
    data = scan_folder(image_folder)
    _, val, _ = build_datasets(None, data, cfg, info)
    plain = build_transform(info, cfg.data, training=False)
    for i, (path, label) in enumerate(data.val):
        image, target = val[i]
        assert target == label and torch.equal(image, plain(load_image(path)))


def test_a_file_broken_after_caching_falls_back_with_a_warning(image_folder):
    _, info = load_backbone("test_resnet", pretrained=False)
    pil, _ = split_transform(build_transform(info, DataConfig(img_size=32), training=False))
    path = str(image_folder / "cat" / "cat0.png")
    open(path, "wb").close()
    cache = ImageCache.build([path], prepare=eval_preparer(pil), mode="memory", side=32)
    assert cache.image(0) is None  # the dataset reads the file instead and reports it


def test_disk_cache_sees_new_content_copied_with_the_same_size_and_mtime(tmp_path):
    """Bug 7: the disk cache was keyed on size and mtime only, so new content of the same size
    copied with `rsync -t` / `cp -p` (mtime kept) was served from the old pixels."""
    path = make_image(tmp_path / "x.bmp", COLOURS["cat"])  # BMP: size set by the dimensions
    old = ImageCache.build([str(path)], prepare=downsizer(40), mode="disk", side=40)
    before = os.stat(path)
    make_image(tmp_path / "new.bmp", COLOURS["dog"])
    os.utime(tmp_path / "new.bmp", ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(tmp_path / "new.bmp", path)  # what rsync -t does: a new file renamed over
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    new = ImageCache.build([str(path)], prepare=downsizer(40), mode="disk", side=40)
    assert new.data_file != old.data_file
    assert np.array_equal(np.asarray(new.image(0)), downsizer(40)(str(path)))


def test_the_first_run_decodes_each_image_once(image_folder, monkeypatch):
    """Regression (issue 12): the first run decoded every image twice before its first step,
    once in the scan and again when the image cache was built. With the cache on, a full scan
    reads and parses each file (digest, size, format) and the cache build is the one decode."""
    from PIL import ImageFile

    from finetune.data.datasets import scan_data

    decoded = []
    real = ImageFile.ImageFile.load

    def counting(self):
        if getattr(self, "tile", None):  # pixels still to decode: a real decode
            decoded.append(self)
        return real(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting)
    cfg = FinetuneConfig.resolve(pretrained=False, img_size=32, cache_images="memory",
                                 scan="full")  # fmt: skip
    data = scan_data(str(image_folder), cfg)
    assert decoded == [] and all(c.digest for c in data.checks.values())
    build_datasets(str(image_folder), data, cfg, load_backbone("test_resnet", pretrained=False)[1])
    assert len(decoded) == len(data.checks) == 12
    decoded.clear()  # without a cache the scan is the decode
    cfg = FinetuneConfig.resolve(pretrained=False, cache_images="none", scan="full")
    scan_data(str(image_folder), cfg)
    assert len(decoded) == 12


def test_disk_cache_reads_each_image_without_a_memory_map(tmp_path):
    """Regression (issue 12): the disk cache was memory-mapped, and every page training touched
    stayed in the process's RSS (the whole file, ~5 kB per image at 32 px, by the end of an
    epoch). Each image is now read with os.pread into a fresh buffer; the index is one array."""
    paths = [
        str(make_image(tmp_path / f"{i}.png", COLOURS["dog"], size=(50, 40), seed=i))
        for i in range(4)
    ]
    cache = ImageCache.build(paths, prepare=downsizer(30), mode="disk", side=30)
    for i, p in enumerate(paths):
        assert np.array_equal(np.asarray(cache.image(i)), downsizer(30)(p))
    with open("/proc/self/maps") as f:
        assert cache.data_file not in f.read()  # read, never mapped
    assert isinstance(cache.index, np.ndarray) and cache.index.shape == (4, 4)


def test_disk_cache_key_and_index_file_are_those_of_earlier_versions(tmp_path):
    """The key is hashed piece by piece and the index parsed by numpy (issue 12, memory), but
    both are byte for byte what earlier versions wrote: their caches are reused, not rebuilt."""
    import hashlib

    from finetune.data.cache import _disk_key
    from finetune.data.scan import stat_key

    paths = [str(make_image(tmp_path / "ä b.png", COLOURS["cat"], size=(30, 30))),
             str(tmp_path / "gone.png")]  # fmt: skip
    old = hashlib.sha1(json.dumps(["k"] + [(p, stat_key(p)) for p in paths]).encode())
    assert _disk_key(paths, "k") == old.hexdigest()
    cache = ImageCache.build(paths[:1] * 3, prepare=downsizer(20), mode="disk", side=20)
    index_file = cache.data_file[: -len(".u8")] + ".json"
    assert json.loads(open(index_file).read()) == cache.index.tolist()
    assert cache.index.tolist() == [[0, 20, 20, 3], [1200, 20, 20, 3], [2400, 20, 20, 3]]


def test_disk_cache_with_a_damaged_index_is_built_again(tmp_path):
    path = str(make_image(tmp_path / "x.png", COLOURS["cat"], size=(30, 30)))
    cache = ImageCache.build([path], prepare=downsizer(20), mode="disk", side=20)
    index_file = cache.data_file[: -len(".u8")] + ".json"
    open(index_file, "w").write("[[0, 20,")  # cut short
    again = ImageCache.build([path], prepare=downsizer(20), mode="disk", side=20)
    assert np.array_equal(np.asarray(again.image(0)), downsizer(20)(path))
    assert json.loads(open(index_file).read()) == [[0, 20, 20, 3]]


def test_disk_cache_is_pickled_without_its_descriptor_for_spawned_workers(tmp_path):
    import pickle

    path = str(make_image(tmp_path / "x.png", COLOURS["cat"]))
    cache = ImageCache.build([path], prepare=downsizer(20), mode="disk", side=20)
    cache.image(0)  # opens the file in this process
    copy = pickle.loads(pickle.dumps(cache))
    assert copy._fd is None and len(pickle.dumps(cache)) < 2000  # no pixels, no descriptor
    assert np.array_equal(np.asarray(copy.image(0)), np.asarray(cache.image(0)))
