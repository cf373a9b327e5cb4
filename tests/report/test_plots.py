"""Plots: every PNG is written atomically, opens with PIL, survives edge cases (no epochs, 30
classes, no mistakes, NaN scores, unreadable and multi-band images), and matplotlib loads
only when drawing, without pyplot."""

import math
import subprocess
import sys

import pytest
import torch
from PIL import Image

from finetune.report.plots import (
    confusion_png,
    curves_png,
    mistakes_grid_png,
    per_label_png,
    reliability_png,
    roc_pr_png,
)
from finetune.train.metrics import calibration, roc_pr_curve
from tests.conftest import COLOURS, make_image


def _opens(path, min_size=100):
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG" and min(img.size) >= min_size
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]  # atomic
    return path


def test_curves_with_epochs_gaps_and_without_any(tmp_path):
    records = [
        dict(epoch=e, train_loss=1 / e, val_loss=1.1 / e, train_accuracy=0.5 + e / 20,
             val_accuracy=0.4 + e / 20, lr=1e-3 / e, best=e < 4)
        for e in range(1, 6)
    ]  # fmt: skip
    records[2]["val_loss"] = None  # a NaN loss is stored as null
    assert _opens(curves_png(records, tmp_path / "a" / "curves.png")).name == "curves.png"
    multi = [dict(epoch=1, train_loss=0.5, val_map=0.3, lr=1e-3), dict(epoch=2, val_map=0.4)]
    _opens(curves_png(multi, tmp_path / "map.png"))
    _opens(curves_png([], tmp_path / "empty.png"))  # an interrupted run


def test_confusion_for_two_and_thirty_classes(tmp_path):
    _opens(confusion_png([[3, 1], [0, 0]], ["cat", "dog"], tmp_path / "two.png", title="val"))
    n = 30
    names = [f"class number {i} with a long descriptive name" for i in range(n)]
    matrix = [[10 if i == j else (i + j) % 3 for j in range(n)] for i in range(n)]
    path = _opens(confusion_png(matrix, names, tmp_path / "thirty.png"))
    with Image.open(path) as img:
        assert img.size[0] > 1500  # grows with the classes so that names stay readable


def test_roc_pr_reliability_and_per_label(tmp_path):
    gen = torch.Generator().manual_seed(0)
    probs = torch.rand(50, 3, generator=gen).softmax(-1)
    targets = torch.randint(0, 3, (50,), generator=gen)
    curves = {c: roc_pr_curve(probs[:, i], (targets == i).long()) for i, c in enumerate("abc")}
    curves["never"] = roc_pr_curve(probs[:, 0], torch.zeros(50, dtype=torch.long))  # no curve
    _opens(roc_pr_png(curves, tmp_path / "roc_pr.png", title="test"))
    cal = calibration(probs, targets)
    _opens(reliability_png(cal["bins"], tmp_path / "rel.png", ece=cal["ece"]))
    per_label = {"a": {"ap": 0.8, "f1": 0.7}, "b": {"ap": math.nan, "f1": 0.0}}
    _opens(per_label_png(per_label, tmp_path / "per_label.png", title="val"))


def test_mistakes_grid_shows_rgb_band_and_unreadable_images(tmp_path, make_tiles):
    cat = make_image(tmp_path / "cat.png", COLOURS["cat"])
    tiles = make_tiles(tmp_path / "tiles", n=1)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    items = [
        dict(path=cat, true="cat", predicted="dog", probability=0.97),
        dict(path=tiles / "water" / "0.tif", true="water", predicted="forest", probability=0.8),
        dict(path=tmp_path / "broken.png", true="cat", predicted="fox", probability=0.6),
    ]
    _opens(mistakes_grid_png(items, tmp_path / "out" / "mistakes.png"))
    _opens(mistakes_grid_png([], tmp_path / "none.png"))


@pytest.mark.parametrize("draw", [False, True])
def test_matplotlib_loads_only_to_draw_and_never_pyplot(tmp_path, draw):
    code = (
        "import sys, finetune.report, finetune.evaluation\n"
        "assert 'matplotlib' not in sys.modules\n"
        + (f"finetune.report.curves_png([], {str(tmp_path / 'c.png')!r})\n" if draw else "")
        + "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
