"""Issue 12: WebDataset shards as training data - labels from .cls/.txt/.json, classes.txt,
splits (named shards, sub-folders, a seeded split by shard), DDP ranks x loader workers without
duplicates, a bad sample skipped by the scan or at load time, mid-epoch resume, the missing
extra."""

import hashlib
import io
import json
import os
import signal
import sys

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image
from safetensors.torch import load_file

import finetune
from finetune.data.datasets import dataset_info
from finetune.data.loaders import build_loader
from finetune.data.shards import is_shards, load_shards
from finetune.errors import DataError
from tests.conftest import COLOURS, tiny_run


def png(colour, seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(colour)[None, None] + rng.normal(0, 25, (32, 40, 3)), 0, 255)
    out = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8)).save(out, "PNG")
    return out.getvalue()


def write_shard(path, samples):
    """samples: dicts of webdataset members ({"__key__", "png", "cls" | "txt" | "json"})."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wds.TarWriter(str(path)) as tar:
        for sample in samples:
            tar.write(sample)
    return path


def labelled(n, start=0, label=lambda i: {"cls": i % 2}):
    names = ("cat", "dog")
    return [{"__key__": f"{start + i:06d}", "png": png(COLOURS[names[i % 2]], start + i),
             **label(i)} for i in range(n)]  # fmt: skip


@pytest.mark.parametrize(
    "label, classes_txt, expected",
    [
        (lambda i: {"cls": i % 2}, "cat\ndog\n", ("cat", "dog")),
        (lambda i: {"cls": i % 2}, None, ("0", "1")),
        (lambda i: {"txt": ("cat", "dog")[i % 2]}, None, ("cat", "dog")),
        (lambda i: {"json": {"label": ("cat", "dog")[i % 2], "path": "x"}}, None, ("cat", "dog")),
        (lambda i: {"json": {"label": i % 2}}, "tabby\nhound\n", ("tabby", "hound")),
    ],
    ids=["cls+classes.txt", "cls", "txt names", "json names", "json index+classes.txt"],
)
def test_labels_and_class_names(tmp_path, label, classes_txt, expected):
    root = tmp_path / "shards"
    write_shard(root / "train-000000.tar", labelled(6, label=label))
    write_shard(root / "val-000000.tar", labelled(4, start=6, label=label))
    if classes_txt:
        (root / "classes.txt").write_text(classes_txt)
    shards = load_shards(root, scan="full")
    assert shards.classes == expected
    assert {k: len(v) for k, v in shards.splits.items()} == {"train": 6, "val": 4}
    # item 7 is the second sample of val-000000.tar, a dog: index 1, image decoded to RGB
    image, target = shards[7]
    assert (target, image.mode, image.size) == (1, "RGB", (40, 32))
    assert shards.item_name(7) == "val-000000.tar:000007"


def test_split_subfolders_brace_patterns_and_a_seeded_split_by_shard(tmp_path):
    sub = tmp_path / "sub"
    write_shard(sub / "train" / "a.tar", labelled(4))
    write_shard(sub / "val" / "a.tar", labelled(2, start=4))
    write_shard(sub / "test" / "a.tar", labelled(2, start=6))
    (sub / "classes.txt").write_text("cat\ndog\n")
    shards = load_shards(sub)
    assert shards.classes == ("cat", "dog")
    assert {k: len(v) for k, v in shards.splits.items()} == {"train": 4, "val": 2, "test": 2}

    flat = tmp_path / "flat"
    for k in range(5):
        write_shard(flat / f"part-{k:06d}.tar", labelled(2, start=2 * k))
    pattern = str(flat / "part-{000000..000004}.tar")
    assert is_shards(pattern) and is_shards(flat) and not is_shards(tmp_path)
    first = load_shards(pattern, val_split=0.4, seed=0)
    val_shards = {int(first.shard[i]) for i in first.splits["val"]}
    assert len(val_shards) == 2  # whole shards: 40 % of 5
    assert not val_shards & {int(first.shard[i]) for i in first.splits["train"]}
    assert load_shards(pattern, val_split=0.4, seed=0).splits == first.splits
    assert load_shards(pattern, val_split=0.4, seed=1).splits != first.splits


def test_bad_samples_are_left_out_and_listed(tmp_path):
    samples = labelled(6)
    samples[1]["png"] = samples[1]["png"][:-300]  # truncated: only decoding finds it
    samples[2]["png"] = b"not an image"
    del samples[3]["cls"]
    write_shard(tmp_path / "s" / "train-0.tar", samples)
    write_shard(tmp_path / "s" / "val-0.tar", labelled(2, start=6))
    with pytest.warns(UserWarning, match="skipping unreadable image"):
        full = load_shards(tmp_path / "s", scan="full")
    reasons = dict(full.skipped)
    assert reasons["train-0.tar:000003"].startswith("no label")
    assert reasons["train-0.tar:000002"] == "not an image"
    assert reasons["train-0.tar:000001"].startswith(("truncated", "undecodable"))
    assert len(full.splits["train"]) == 3
    with pytest.warns(UserWarning):
        quick = load_shards(tmp_path / "s", scan="quick")  # headers: the truncated one stays
    assert len(quick.splits["train"]) == 4 and "train-0.tar:000001" not in dict(quick.skipped)
    with pytest.raises(DataError, match="drop --strict"):
        load_shards(tmp_path / "s", scan="quick", strict=True)


class _Digests(torch.utils.data.Dataset):
    """Each item as a number naming its bytes (read through ShardImages, in any process)."""

    def __init__(self, shards):
        self.shards = shards

    def __len__(self):
        return len(self.shards)

    def __getitem__(self, i):
        digest = hashlib.blake2b(self.shards.read(i), digest_size=6).digest()
        return int.from_bytes(digest, "big"), int(self.shards.targets[i])


def test_two_ranks_with_two_workers_each_see_every_sample_once(tmp_path):
    for k in range(3):
        write_shard(tmp_path / "s" / f"train-{k}.tar", labelled(4, start=4 * k))
    write_shard(tmp_path / "s" / "val-0.tar", labelled(2, start=12))
    shards = load_shards(tmp_path / "s", scan="off")
    seen = []
    for rank in (0, 1):
        loader = build_loader(_Digests(shards), batch_size=3, training=True, num_workers=2,
                              world=2, rank=rank, seed=0)  # fmt: skip
        loader.sampler.set_epoch(1)
        seen += [int(d) for digests, _ in loader for d in digests]
    every = {int(_Digests(shards)[i][0]) for i in range(len(shards))}
    assert len(every) == len(shards) == 14
    # 14 items over 2 ranks: 7 each, in batches of 3 with the last partial one dropped
    assert len(seen) == len(set(seen)) == 12 and set(seen) <= every


def test_an_image_that_breaks_at_load_time_is_replaced_and_reported(tmp_path, fast_overrides):
    samples = labelled(8)
    samples[5]["png"] = samples[5]["png"][:-300]  # truncated: a quick scan cannot see it
    write_shard(tmp_path / "s" / "train-0.tar", samples)
    write_shard(tmp_path / "s" / "val-0.tar", labelled(4, start=8))
    (tmp_path / "s" / "classes.txt").write_text("cat\ndog\n")
    events = []
    with finetune.events.listening(events.append):
        result = finetune.adapt("test_resnet", str(tmp_path / "s"), scan="quick", verbose=False,
                                **fast_overrides)  # fmt: skip
    assert result.metrics["epochs"][0]["epoch"] == 1  # the epoch finished
    warned = [e.message for e in events if e.kind == "warning" and "at load time" in e.message]
    assert warned and "train-0.tar:000005" in warned[0], [e.message for e in events]


def test_ctrl_c_mid_epoch_on_shards_resumes_to_the_same_weights(tmp_path, monkeypatch):
    from finetune.train.trainer import Trainer

    for k in range(3):
        write_shard(tmp_path / "s" / f"train-{k}.tar", labelled(4, start=4 * k))
    write_shard(tmp_path / "s" / "val-0.tar", labelled(4, start=12))
    data = str(tmp_path / "s")
    reference = tiny_run(data, epochs=2, output=str(tmp_path / "ref"), deterministic=True)
    real, calls = Trainer.optimizer_step, {"n": 0}

    def ctrl_c_during_step_four(self):
        calls["n"] += 1
        if calls["n"] == 4:  # epoch 2's first of 3 steps
            os.kill(os.getpid(), signal.SIGINT)
        real(self)

    monkeypatch.setattr(Trainer, "optimizer_step", ctrl_c_during_step_four)
    with pytest.raises(finetune.Interrupted, match="--resume"):
        tiny_run(data, epochs=2, output=str(tmp_path / "r"), deterministic=True)
    monkeypatch.setattr(Trainer, "optimizer_step", real)
    state = torch.load(tmp_path / "r" / "trainer_state.pt", weights_only=True)
    assert (state["epoch"], state["batches_done"]) == (1, 1)
    resumed = finetune.adapt(resume=tmp_path / "r", verbose=False)
    a = load_file(str(resumed.run_dir / "last.safetensors"))
    b = load_file(str(reference.run_dir / "last.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    config = json.loads((resumed.run_dir / "config.json").read_text())
    assert config["label_names"] == ["0", "1"]


def test_dataset_info_keeps_the_shards_splits(tmp_path):
    write_shard(tmp_path / "one.tar", labelled(10))
    info = dataset_info(load_shards(tmp_path / "one.tar"), val_split=0.2, seed=0)
    assert (len(info.train), len(info.val)) == (8, 2)  # one shard: split by sample, stratified


def test_missing_webdataset_names_the_extra(tmp_path, monkeypatch):
    write_shard(tmp_path / "train-0.tar", labelled(2))
    monkeypatch.setitem(sys.modules, "webdataset", None)  # import webdataset -> ImportError
    with pytest.raises(DataError, match=r"pip install 'finetune\[shards\]'"):
        load_shards(tmp_path)


def test_shard_scan_does_not_submit_every_sample_at_once(tmp_path, monkeypatch):
    """Regression (issue 12): the shard scan ran ThreadPoolExecutor.map over every sample (a
    future each, ~1.6 kB, all held until the end: the shards' peak memory per image) and kept
    every sample's check, where only the bad ones are needed."""
    from concurrent.futures import Executor

    def whole_list_map(*args, **kwargs):
        raise AssertionError("Executor.map submits every item at once")

    monkeypatch.setattr(Executor, "map", whole_list_map)
    samples = labelled(6)
    samples[2]["png"] = b"not an image"
    write_shard(tmp_path / "s" / "train-0.tar", samples)
    with pytest.warns(UserWarning, match="skipping unreadable image"):
        shards = load_shards(tmp_path / "s", scan="quick", val_split=0.0)
    assert dict(shards.skipped) == {"train-0.tar:000002": "not an image"}
    assert shards.splits["train"] == [0, 1, 3, 4, 5]


def test_the_shard_index_is_kept_in_arrays_and_tar_headers_are_not(tmp_path, monkeypatch):
    """Regression (issue 12): indexing a shard kept every tar header TarFile read (TarFile's
    ``members``, ~1 kB a member, two members a sample: 2.4 kB per sample at the peak of a
    100 MB shard) and the index in lists of Python ints (~140 bytes a sample)."""
    import tarfile

    from finetune.data import shards as shards_module

    seen = []
    real_open = tarfile.open

    def recording_open(*args, **kwargs):
        tar = real_open(*args, **kwargs)
        real_next = tar.next

        def next_member():
            seen.append(len(tar.members))  # headers still held when the next is read
            return real_next()

        tar.next = next_member
        return tar

    monkeypatch.setattr(tarfile, "open", recording_open)
    write_shard(tmp_path / "s" / "train-0.tar", labelled(8))
    index = shards_module._Index()
    index.add_shard(0, tmp_path / "s" / "train-0.tar")
    assert len(seen) == 17 and max(seen) <= 1  # 8 samples x 2 members, then the end
    assert all(len(getattr(index, a)) == 8 and getattr(index, a).itemsize <= 8
               for a in ("shard", "offset", "size", "token"))  # fmt: skip
    shards = load_shards(tmp_path / "s", scan="off", val_split=0.0)
    assert all(isinstance(getattr(shards, a), np.ndarray) for a in ("shard", "offset", "size"))
