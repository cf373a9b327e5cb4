"""Issue 12: `finetune pack` - a folder to WebDataset shards (bad files left out and listed,
classes.txt, manifest.json) that `finetune run --data OUT` trains on, with the same images."""

import hashlib
import json
import tarfile

import pytest
from typer.testing import CliRunner

import finetune.cli
from finetune.data.folder import scan_folder
from finetune.data.pack import pack_data, parse_size
from finetune.data.shards import load_shards
from finetune.errors import DataError
from tests.conftest import make_folder


def _digests_in_shards(out):
    found = {}
    for shard in sorted(out.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for m in tar:
                if m.name.endswith(".png"):
                    digest = hashlib.sha1(tar.extractfile(m).read()).hexdigest()
                    found[digest] = shard.name.split("-")[0]
    return found


def test_pack_then_run_trains_on_the_same_images(tmp_path):
    folder = make_folder(tmp_path / "data", n=8)
    (folder / "cat" / "broken.png").write_bytes(b"\x89PNG not really")
    out = tmp_path / "shards"
    runner = CliRunner()
    result = runner.invoke(finetune.cli.app, ["pack", str(folder), str(out),
                                              "--shard-size", "30kB"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "left out" in result.output and "broken.png" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert (out / "classes.txt").read_text() == "cat\ndog\n"
    assert len(manifest["shards"]) > 2 and manifest["skipped"][0][0].endswith("broken.png")
    assert sum(s["samples"] for s in manifest["shards"]) == 16
    # the same images as the folder, in the splits the folder's own scan makes
    scanned = scan_folder(folder, val_split=0.2, seed=0)
    expected = {hashlib.sha1(open(p, "rb").read()).hexdigest(): split
                for split in ("train", "val") for p, _ in getattr(scanned, split)}  # fmt: skip
    assert _digests_in_shards(out) == expected
    assert manifest["counts"] == {"train": len(scanned.train), "val": len(scanned.val)}

    run = tmp_path / "run"
    result = runner.invoke(finetune.cli.app, [
        "run", "--data", str(out), "--backbone", "test_resnet", "--no-pretrained", "--epochs",
        "1", "--img-size", "32", "--batch-size", "4", "--num-workers", "0", "--output", str(run),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert config["label_names"] == ["cat", "dog"]
    counts = config["finetune"]["data"]["counts"]
    assert [sum(counts["train"]), sum(counts["val"])] == [len(scanned.train), len(scanned.val)]


def test_pack_refuses_a_folder_with_shards_and_multi_label_data(tmp_path, multi_csv):
    folder = make_folder(tmp_path / "data", n=3)
    pack_data(folder, tmp_path / "out")
    assert load_shards(tmp_path / "out").classes == ("cat", "dog")
    with pytest.raises(FileExistsError, match="already holds shards"):
        pack_data(folder, tmp_path / "out")
    with pytest.raises(DataError, match="single-label"):
        pack_data(multi_csv, tmp_path / "multi")


def test_shard_sizes():
    assert parse_size("500MB") == 500_000_000 and parse_size("1.5GiB") == 3 * 2**29
    assert parse_size("20000") == 20_000
    with pytest.raises(ValueError, match="500MB"):
        parse_size("lots")
