"""The run report: ``README.md`` (a Hugging Face / timm model card) and the plots of a run.

``model_card(run_dir)`` builds the card from ``config.json`` alone: YAML front matter
(``library_name: timm``, tags, ``model-index`` with the val/test scores), then the data, the
classes, the backbone and what was frozen, the training settings, the results, the
preprocessing, and how to load the model with finetune, with plain timm and through ONNX.
``write_run_report(run_dir)`` writes the card and ``plots/`` (training curves, confusion matrices
or per-label bars); it is safe to call again, and on an interrupted run without metrics it writes
the curves and a card without results.

Example:
    >>> print(model_card("runs/my-run").splitlines()[1])  # doctest: +SKIP
    library_name: timm
    >>> write_run_report("runs/my-run")  # doctest: +SKIP
    [PosixPath('runs/my-run/plots/curves.png'), ..., PosixPath('runs/my-run/README.md')]
"""

from __future__ import annotations

import json
import os
import warnings
from functools import partial
from pathlib import Path
from typing import Any

from .._io import CONFIG_NAME, METRICS_NAME, atomic_path, read_run_config
from . import plots

__all__ = ["model_card", "write_run_report", "README_NAME", "PLOTS_DIR"]

README_NAME = "README.md"
PLOTS_DIR = "plots"
SPLIT_NAMES = {"val": "validation", "test": "test"}


def write_run_report(run_dir: str | os.PathLike) -> list[Path]:
    """Write ``plots/curves.png``, ``plots/confusion_<split>.png`` for val and test (multi-label
    runs: ``plots/per_label_<split>.png``, AP and F1 per label, instead) and ``README.md``.
    Returns the paths written. A plot that cannot be drawn is a warning naming it, never an error:
    the run it reports on is finished.

    Example:
        >>> [p.name for p in write_run_report("runs/my-run")]  # doctest: +SKIP
        ['curves.png', 'confusion_val.png', 'README.md']
    """
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    labels = config.get("label_names") or []
    metrics = config.get("finetune", {}).get("metrics") or {}
    folder = run_dir / PLOTS_DIR
    jobs = [partial(plots.curves_png, read_history(run_dir), folder / "curves.png")]
    for split in ("val", "test"):
        report, name = metrics.get(split) or {}, SPLIT_NAMES[split]
        if report.get("confusion_matrix") and labels:
            title = f"Confusion matrix, {name} (best epoch {metrics.get('best_epoch', '?')})"
            target = folder / f"confusion_{split}.png"
            jobs.append(
                partial(
                    plots.confusion_png, report["confusion_matrix"], labels, target, title=title
                )
            )
        elif report.get("per_label"):
            target = folder / f"per_label_{split}.png"
            title = f"AP and F1 per label, {name}"
            jobs.append(partial(plots.per_label_png, report["per_label"], target, title=title))
    written = [path for path in map(_attempt, jobs) if path]
    readme = run_dir / README_NAME
    with atomic_path(readme) as tmp:
        Path(tmp).write_text(model_card(run_dir), encoding="utf-8")
    return written + [readme]


def _attempt(job: partial) -> Path | None:
    try:
        return job()
    except Exception as e:  # a plot must never fail the finished run it illustrates
        name = Path(job.args[-1]).name
        warnings.warn(f"could not draw {name}: {type(e).__name__}: {e}", stacklevel=3)
        return None


def read_history(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The epoch records of ``metrics.jsonl`` ([] when there is none; a damaged line, e.g. the
    last one of a killed run, is left out)."""
    path = Path(run_dir) / METRICS_NAME
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def model_card(run_dir: str | os.PathLike) -> str:
    """The README.md model card of a run directory, from its ``config.json``.

    Example:
        >>> "library_name: timm" in model_card("runs/my-run")  # doctest: +SKIP
        True
    """
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    ft = config.get("finetune", {})
    sections = [
        _front_matter(run_dir, config),
        _summary(run_dir, config),
        _data_section(config),
        _model_section(config),
        _training_section(config),
        _results_section(run_dir, config),
        _preprocessing_section(config),
        _usage_section(run_dir, config),
    ]
    if not ft:
        sections.insert(2, f"This {CONFIG_NAME} has no `finetune` section: details are unknown.")
    return "\n\n".join(s for s in sections if s).rstrip() + "\n"


def _front_matter(run_dir: Path, config: dict) -> str:
    import yaml

    ft = config.get("finetune", {})
    meta: dict[str, Any] = {"library_name": "timm"}
    license_ = config.get("pretrained_cfg", {}).get("license")
    if license_:
        meta["license"] = license_
    meta["tags"] = ["image-classification", "timm", "finetune"]
    meta["pipeline_tag"] = "image-classification"
    results = []
    metrics = ft.get("metrics") or {}
    dataset = Path(str(ft.get("data", {}).get("root") or "images")).name
    for split in ("val", "test"):
        report = metrics.get(split)
        if not report:
            continue
        name = SPLIT_NAMES[split]
        if "mAP" in report:
            scores = [("mAP", report["mAP"], f"{name} mAP")]
            scores.append(("f1", report.get("macro_f1"), f"{name} macro F1"))
        else:
            scores = [("accuracy", report.get("accuracy"), f"{name} accuracy")]
            scores.append(("f1", report.get("macro_f1"), f"{name} macro F1"))
        results.append(
            {
                "task": {"type": "image-classification", "name": "Image Classification"},
                "dataset": {"name": dataset, "type": "imagefolder", "split": name},
                "metrics": [
                    {"type": t, "value": round(float(v), 4), "name": n}
                    for t, v, n in scores
                    if isinstance(v, (int, float))
                ],
            }
        )
    if results:
        meta["model-index"] = [{"name": run_dir.name, "results": results}]
    body = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000)
    return f"---\n{body}---"


def _summary(run_dir: Path, config: dict) -> str:
    ft = config.get("finetune", {})
    labels = config.get("label_names") or []
    kind = "multi-label image classifier" if ft.get("multi_label") else "image classifier"
    kind = f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"
    backbone = ft.get("backbone") or config.get("architecture")
    return (
        f"# {run_dir.name}\n\n"
        f"{kind.capitalize()} for {len(labels) or config.get('num_classes')} classes, fine-tuned from "
        f"`{backbone}` with finetune. The weights are "
        f"`model.safetensors` (timm key names) and `{CONFIG_NAME}` is in timm's layout, so timm "
        "loads the model without finetune."
    )


def _data_section(config: dict) -> str:
    data = config.get("finetune", {}).get("data") or {}
    labels = config.get("label_names") or []
    counts = data.get("counts") or {}
    lines = ["## Data", ""]
    if data.get("root"):
        lines.append(f"- root: `{data['root']}` (layout: {data.get('layout', '?')})")
    refit = config.get("finetune", {}).get("config", {}).get("data", {}).get("train_on_val")
    for split, per_class in counts.items():
        also = " (the validation images too: train_on_val)" if refit and split == "train" else ""
        lines.append(f"- {split}: {sum(per_class)} images{also}")
    if data.get("skipped"):
        lines.append(f"- skipped (unreadable): {len(data['skipped'])} files")
    lines.append(f"- classes: {len(labels)}")
    lines += ["", "### Classes", ""]
    splits = list(counts)
    lines.append("| " + " | ".join(["class", *splits]) + " |")
    lines.append("| --- |" + " --- |" * len(splits))
    for i, name in enumerate(labels):
        cells = [str(counts[s][i]) if i < len(counts[s]) else "" for s in splits]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    return "\n".join(lines)


def _model_section(config: dict) -> str:
    ft = config.get("finetune", {})
    cfg = ft.get("config") or {}
    lines = ["## Model", ""]
    lines.append(f"- architecture: `{config.get('architecture')}`")
    if ft.get("backbone"):
        lines.append(f"- backbone: `{ft['backbone']}`")
    if ft.get("weights_source"):
        lines.append(f"- pretrained weights: {ft['weights_source']}")
    if ft.get("weight_mapping"):
        lines.append(f"- weight mapping: {ft['weight_mapping']}")
    if config.get("num_features"):
        lines.append(f"- features: {config['num_features']}")
    policy = {k: v for k, v in (cfg.get("policy") or {}).items() if v not in (None, False, 0, [])}
    adapter = cfg.get("adapter") or {}
    lines += ["", "### Freezing plan", ""]
    if not cfg.get("policy"):
        lines.append("- not recorded")
    elif not set(policy) - {"bn", "unfreeze_every", "unfreeze_at"}:  # no selector: "full"
        lines.append("- nothing frozen: every parameter trained")
    lines += [f"- {k}: {_plain(v)}" for k, v in policy.items()]
    if adapter.get("peft") not in (None, "none"):
        lines.append(
            f"- adapter: {adapter['peft']} (r {adapter.get('lora_r')}, alpha "
            f"{adapter.get('lora_alpha')}), merged into the weights"
        )
    return "\n".join(lines)


def _training_section(config: dict) -> str:
    ft = config.get("finetune", {})
    cfg = ft.get("config") or {}
    optim, train, data = cfg.get("optim") or {}, cfg.get("train") or {}, cfg.get("data") or {}
    if not (optim or train):
        return ""
    size = config.get("pretrained_cfg", {}).get("input_size")
    rows = [
        ("epochs", train.get("epochs")),
        ("learning rate", optim.get("lr")),
        ("optimizer", optim.get("optimizer")),
        ("schedule", optim.get("schedule")),
        ("weight decay", optim.get("weight_decay")),
        ("label smoothing", optim.get("label_smoothing")),
        ("teacher (distillation)", _teacher(train)),
        ("batch size", data.get("batch_size")),
        ("image size", data.get("img_size") or (size[-1] if size else None)),
        ("precision", ft.get("precision") or train.get("precision")),
        ("device", ft.get("device") or train.get("device")),
        ("seed", train.get("seed")),
        ("recipe", ft.get("recipe")),
    ]
    lines = ["## Training", "", "| setting | value |", "| --- | --- |"]
    lines += [f"| {k} | {_plain(v)} |" for k, v in rows if v is not None]
    metrics = ft.get("metrics") or {}
    if "best_epoch" in metrics:
        lines += ["", f"Best epoch: {metrics['best_epoch']} (its weights are the model)."]
    early = metrics.get("stopped_early")
    ended = metrics.get("halted") or (f"early stopping after epoch {early}" if early else "")
    if ended:  # fewer epochs than the config says: a recipe from it trains them all
        lines += ["", f"Ended early: {ended}."]
    return "\n".join(lines)


def _teacher(train: dict):
    """``runs/big``, weight 0.5: the run it learned from (``train.teacher``), or None."""
    if not train.get("teacher"):
        return None
    return f"`{train['teacher']}`, weight {train.get('distill')} against the labels"


def _results_section(run_dir: Path, config: dict) -> str:
    metrics = config.get("finetune", {}).get("metrics") or {}
    lines = ["## Results", ""]
    reports = {s: metrics[s] for s in ("val", "test") if metrics.get(s)}
    if not reports:
        lines.append("No results yet: the run has not finished (no final evaluation).")
    elif any("mAP" in r for r in reports.values()):
        lines += [
            "| split | images | mAP | macro AUC | macro F1 | micro F1 |",
            "| --- |" + " --- |" * 5,
        ]
        for split, r in reports.items():
            cells = [r.get(k) for k in ("mAP", "macro_auc", "macro_f1", "micro_f1")]
            lines.append(f"| {SPLIT_NAMES[split]} | {r.get('num_samples', '')} | " + _cells(cells))
    else:
        lines += [
            "| split | images | accuracy | macro recall | macro F1 |",
            "| --- |" + " --- |" * 4,
        ]
        for split, r in reports.items():
            cells = [r.get(k) for k in ("accuracy", "macro_recall", "macro_f1")]
            lines.append(f"| {SPLIT_NAMES[split]} | {r.get('num_samples', '')} | " + _cells(cells))
    folder = run_dir / PLOTS_DIR
    # the curves first, then the confusion matrices (or per-label bars), val before test
    figures = sorted(folder.glob("*.png"), key=lambda p: (p.stem != "curves", "_test" in p.stem))
    if figures:
        lines.append("")
        lines += [f"![{p.stem}]({PLOTS_DIR}/{p.name})" for p in figures]
    return "\n".join(lines)


def _preprocessing_section(config: dict) -> str:
    pcfg = config.get("pretrained_cfg") or {}
    keys = ("input_size", "mean", "std", "interpolation", "crop_pct", "crop_mode")
    lines = ["## Preprocessing", ""]
    lines += [f"- {k}: {_plain(pcfg[k])}" for k in keys if k in pcfg]
    return "\n".join(lines)


def _usage_section(run_dir: Path, config: dict) -> str:
    multilabel = bool(config.get("finetune", {}).get("multi_label"))
    act = "sigmoid()" if multilabel else "softmax(-1)"
    return f"""## How to use

With finetune:

```python
import finetune

records = finetune.predict("{run_dir}", ["images/"], top_k=3)
```

```bash
finetune predict {run_dir} images/
```

With plain timm (no finetune needed):

```python
import timm
import torch
from PIL import Image

model = timm.create_model("local-dir:{run_dir}", pretrained=True).eval()
# once uploaded to the Hugging Face Hub: timm.create_model("hf-hub:ORG/NAME", pretrained=True)
transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))
x = transform(Image.open("image.jpg").convert("RGB")).unsqueeze(0)
with torch.inference_mode():
    probs = model(x).{act}[0]
labels = model.pretrained_cfg["label_names"]
```

With ONNX:

```bash
finetune export {run_dir} --format onnx
```

```python
import onnxruntime as ort

session = ort.InferenceSession("{run_dir}/export/model.onnx")  # model.json: its classes
logits = session.run(None, {{session.get_inputs()[0].name: x.numpy()}})[0]  # x as above
```"""


def _cells(values: list) -> str:
    return " | ".join(f"{v:.4f}" if isinstance(v, (int, float)) else "" for v in values) + " |"


def _plain(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)
