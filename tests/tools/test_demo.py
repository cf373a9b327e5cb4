import pytest
from typer.testing import CliRunner

from finetune.cli import app
from finetune.tools import demo


class Stop(Exception):
    pass


@pytest.fixture
def adapt_calls(monkeypatch):
    """adapt() recorded and stopped: the demo's training is minutes of real ImageNet weights."""
    import finetune.api

    calls = []

    def record(model, dataset, **kwargs):
        calls.append(dict(model=model, dataset=dataset, **kwargs))
        raise Stop

    monkeypatch.setattr(finetune.api, "adapt", record)
    return calls


@pytest.mark.parametrize(
    "args, backbone, seed",
    [
        ([], "tf_efficientnet_lite2", 0),  # the demo's default backbone
        (["--backbone", "tf_efficientnet_lite0", "--seed", "3"], "tf_efficientnet_lite0", 3),
    ],
)
def test_demo_trains_the_chosen_backbone_and_seed(adapt_calls, tmp_path, args, backbone, seed):
    data = tmp_path / "elpv"
    result = CliRunner().invoke(
        app, ["demo", "--data-dir", str(data), "--output", str(tmp_path / "run"), "--debug", *args]
    )
    assert isinstance(result.exception, Stop), result.output
    (call,) = adapt_calls
    assert (call["model"], call["seed"], call["dataset"]) == (backbone, seed, data)
    assert call["budget"] == "3m" and call["img_size"] == 128 and call["vflip"] == 0.5
    assert f"ImageNet {backbone} -> elpv" in result.output


def test_demo_data_is_the_fixed_split_of_every_elpv_image(tmp_path):
    root = demo.prepare_elpv(tmp_path / "elpv")
    counts = {
        (split, label): len(list((root / split / label).iterdir()))
        for split in ("train", "val", "test")
        for label in ("defective", "functional")
    }
    assert sum(counts.values()) == len(demo.elpv_labels()) == 2624
    assert counts[("test", "defective")] == 123 and counts[("test", "functional")] == 270
    assert demo.prepare_elpv(tmp_path / "elpv") == root  # laid out once, then reused
