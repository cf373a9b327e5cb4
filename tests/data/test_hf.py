"""finetune.data.hf: Hugging Face data sets (save_to_disk folders, parquet) as training data."""

import json

import pytest
import timm
import torch
from PIL import Image

import finetune
from finetune.data.hf import load_hf
from finetune.errors import DataError
from tests.conftest import COLOURS

datasets = pytest.importorskip("datasets")


def _split(n, seed):
    g = torch.Generator().manual_seed(seed)
    images, labels = [], []
    for i in range(n):
        label = i % 2
        base = torch.tensor(COLOURS[("cat", "dog")[label]], dtype=torch.float32)
        noise = torch.randn(24, 24, 3, generator=g) * 20
        images.append(Image.fromarray((base + noise).clamp(0, 255).byte().numpy()))
        labels.append(label)
    features = datasets.Features({"img": datasets.Image(),
                                  "kind": datasets.ClassLabel(names=["cat", "dog"])})  # fmt: skip
    return datasets.Dataset.from_dict({"img": images, "kind": labels}, features=features)


@pytest.fixture
def hf_folder(tmp_path):
    """A DatasetDict saved with save_to_disk: train 12, validation 4, test 4."""
    path = tmp_path / "hf-set"
    datasets.DatasetDict(
        {"train": _split(12, 0), "validation": _split(4, 1), "test": _split(4, 2)}
    ).save_to_disk(str(path))
    return path


def test_a_saved_dataset_dict_trains_with_its_own_splits(hf_folder, fast_overrides):
    result = finetune.adapt("test_resnet", f"hf:{hf_folder}", verbose=False, **fast_overrides)
    assert result.classes == ("cat", "dog")
    assert result.metrics["val"]["num_samples"] == 4 and result.metrics["test"]["num_samples"] == 4
    config = json.loads((result.run_dir / "config.json").read_text())
    assert config["finetune"]["config"]["data"]["path"] == f"hf:{hf_folder}"
    model = timm.create_model(f"local-dir:{result.run_dir}", pretrained=True)  # no finetune code
    assert model.get_classifier().out_features == 2
    resumed = finetune.adapt(resume=result.run_dir, epochs=2, verbose=False)
    assert [e["epoch"] for e in resumed.metrics["epochs"]] == [1, 2]


def test_columns_are_found_by_feature_type_and_a_split_can_be_named(hf_folder):
    data = load_hf(f"hf:{hf_folder}")
    assert (data.image_column, data.label_column) == ("img", "kind")
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 12, "val": 4, "test": 4}
    assert isinstance(data[0][0], Image.Image) and data.targets[:4] == [0, 1, 0, 1]
    only = load_hf(f"hf:{hf_folder}:test")
    assert {k: len(v) for k, v in only.splits.items()} == {"train": 4}


def test_parquet_files_load_too(tmp_path, fast_overrides):
    _split(16, 3).to_parquet(str(tmp_path / "train.parquet"))
    result = finetune.adapt("test_resnet", f"hf:{tmp_path / 'train.parquet'}", verbose=False,
                            **fast_overrides)  # fmt: skip
    assert result.classes == ("cat", "dog") and result.metrics["val"]["num_samples"] == 4


@pytest.mark.parametrize(
    "spec, kwargs, message",
    [
        ("{path}:training", {}, "no split 'training'; the splits are train, validation, test"),
        ("{path}", {"image_column": "image"}, "no column 'image'; the columns are img, kind"),
        ("{missing}", {}, "not a folder here and not loadable"),
    ],
)
def test_bad_specs_name_the_choices(hf_folder, tmp_path, spec, kwargs, message):
    with pytest.raises(DataError, match=message):
        load_hf("hf:" + spec.format(path=hf_folder, missing=tmp_path / "nope"), **kwargs)


def test_without_the_datasets_package_the_extra_is_named(monkeypatch, hf_folder):
    import sys

    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(DataError, match=r"pip install 'finetune\[hf\]'"):
        load_hf(f"hf:{hf_folder}")
