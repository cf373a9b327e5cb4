"""``export``: a run directory's model as ONNX or TorchScript, checked against PyTorch.

The file maps a preprocessed float32 batch ``(batch, C, H, W)`` to logits; ``model.onnx.json`` (or ``model.torchscript.pt.json``) beside
it gives the preprocessing, the classes (and a multi-label run's thresholds) and the check.

Example:
    >>> report = export("runs/my-run", format="onnx")  # doctest: +SKIP
    >>> report.path, report.max_abs_diff  # doctest: +SKIP
    (PosixPath('runs/my-run/export/model.onnx'), 4.5e-07)
"""

from __future__ import annotations

import importlib
import io
import json
import math
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Callable, Sequence

import torch

from . import __version__
from ._io import USER_TENSORS, atomic_path
from .data.augment import build_eval_transform
from .data.images import load_bands, load_image, walk_images
from .errors import did_you_mean, first_line
from .inference import _data_config
from .models.info import BackboneInfo
from .train.checkpoint import load_run
from .train.runtime import resolve_device

__all__ = ["export", "export_run", "ExportReport", "FORMATS"]

FORMATS = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}  # format -> file name
SIDECAR_SUFFIX = ".json"  # model.onnx.json beside model.onnx: one sidecar per format
INPUT_NAME, OUTPUT_NAME = "input", "logits"
# the ONNX exporter writes opset 18+; asked for less it silently writes 18, so that is refused
MIN_OPSET = 18
_ROOT_IMAGES = 8  # images taken from the run's data root when none are given
_CHUNK = 8  # batch size when comparing


@dataclass(frozen=True)
class ExportReport:
    """What ``export`` wrote and how well it matched the PyTorch model."""

    path: Path  # the exported model file
    sidecar: Path  # model.onnx.json (model.torchscript.pt.json) beside it
    format: str  # "onnx" or "torchscript"
    opset: int | None  # ONNX opset written (None for TorchScript)
    max_abs_diff: float  # largest |logit difference|, exported file vs PyTorch, fp32
    top1_agreement: float  # fraction of inputs with the same top-1 class
    n_images: int  # inputs compared
    inputs: str  # what they were: "images" (given), "data root" (the run's), or "random"


def export(
    run_dir: str | os.PathLike,
    *,
    format: str = "onnx",
    opset: int | None = None,
    output: str | os.PathLike | None = None,
    dynamic_batch: bool = True,
    images: Sequence[str | os.PathLike] | None = None,
    atol: float = 1e-4,
    device: str = "cpu",
) -> ExportReport:
    """Write ``<output or run_dir/export>/model.onnx`` (or ``model.torchscript.pt``) and
    the sidecar JSON, then compare its logits with PyTorch's on ``images`` (files, folders), else
    on images under the run's data root, else on a seeded random batch: a max abs difference over
    ``atol`` is a ``ValueError`` (the files stay). ``opset``: ONNX only, default the exporter's.

    Example:
        >>> export("runs/my-run", format="torchscript").top1_agreement  # doctest: +SKIP
        1.0
    """
    _check_request(format, opset)
    device = str(resolve_device(device))
    model, config = load_run(run_dir, device=device)
    model = model.float().eval()
    x, inputs = _verification_inputs(config, images, run_dir)
    out_dir = Path(output) if output is not None else Path(run_dir) / "export"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / FORMATS[format]
    # traced at batch 2 (3 to compare 2 images), compared at others: the dynamic axis is used
    batch = 1 if not dynamic_batch else (3 if len(x) == 2 else 2)
    example = torch.randn(batch, *x.shape[1:]).to(device)
    chunk = _CHUNK if dynamic_batch else 1  # a static file takes the batch it was traced with
    with atomic_path(path) as tmp:  # verified before it replaces an earlier export
        if format == "onnx":
            opset = _export_onnx(model, example, tmp, opset, dynamic_batch)
        else:
            _export_torchscript(model, example, tmp)
        diff, agree = _compare(model, _runner(Path(tmp), format, device), x, chunk, device)
        if not diff <= atol:  # NaN is a mismatch too
            raise ValueError(
                f"{path} does not match the PyTorch model: max abs logit difference {diff:.3g} > "
                f"atol {atol:g} on {len(x)} {inputs} inputs; not written (an earlier export there "
                "is kept)"
            )
    sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
    report = ExportReport(path, sidecar, format, opset, diff, agree, len(x), inputs)
    _write_sidecar(report, config, list(x.shape[1:]), dynamic_batch, atol)
    return report


def _check_request(format: str, opset: int | None) -> None:
    """A known format, an opset only for ONNX and one it can write, the ONNX packages there."""
    if format not in FORMATS:
        choices = ", ".join(FORMATS)
        hint = did_you_mean(str(format), FORMATS)
        raise ValueError(f"unknown export format {format!r}; choose one of: {choices}.{hint}")
    if format != "onnx" and opset is not None:
        raise ValueError(f"--opset {opset}: an opset applies to ONNX only, not {format}")
    if format == "onnx" and opset is not None and opset < MIN_OPSET:
        raise ValueError(f"--opset {opset}: the ONNX exporter writes opset {MIN_OPSET} or newer")
    try:
        for name in ("onnx", "onnxscript", "onnxruntime") if format == "onnx" else ():
            importlib.import_module(name)
    except ImportError as e:
        raise ValueError(
            f"ONNX export needs onnx, onnxscript and onnxruntime ({first_line(e)}): "
            "pip install 'finetune[export]'"
        ) from None


def _export_onnx(model, example, tmp: str, opset: int | None, dynamic_batch: bool) -> int:
    """torch.export-based (``dynamo=True``): torch's default and maintained one; the
    TorchScript-based ``dynamo=False`` warns it will be removed and trips TracerWarnings on timm
    ViTs (both matched PyTorch within 2e-6 on timm CNNs/ViTs and torchvision models here).
    ``external_data=False``: a data file would be named after the temporary file."""
    batch = {0: torch.export.Dim("batch")} if dynamic_batch else None
    with torch.no_grad():
        program = torch.onnx.export(
            model,
            (example,),
            tmp,
            dynamo=True,
            verbose=False,  # the library does not print
            opset_version=opset,  # None: the exporter's recommended opset
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=(batch,),
            external_data=False,
        )
    return int(program.model.opset_imports[""])


def _export_torchscript(model, example, tmp: str) -> None:
    """``torch.jit.trace``, not ``script``: timm forwards use Python that TorchScript cannot
    compile (``**kwargs``, ``checkpoint_seq``, dynamic helpers), while tracing records the ops
    eval mode runs, for timm and torchvision models alike."""
    with torch.no_grad(), _quiet_jit():
        traced = torch.jit.trace(model, example, check_trace=False)
        buffer = io.BytesIO()  # jit.save straight to a full disk aborts the process (C++)
        torch.jit.save(traced, buffer)
    Path(tmp).write_bytes(buffer.getvalue())


@contextmanager
def _quiet_jit():
    """Silence torch.jit's deprecation notices and TracerWarnings (shapes read as Python
    numbers): comparing at other batch sizes checks what the latter warn about."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*torch.jit", category=FutureWarning)
        yield


def _runner(path: Path, format: str, device: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function batch -> logits that runs the exported file (onnxruntime on the CPU)."""
    if format == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: torch.from_numpy(session.run(None, {INPUT_NAME: x.cpu().numpy()})[0])
    with _quiet_jit():
        module = torch.jit.load(str(path), map_location=device)
    return lambda x: module(x.to(device))


def _compare(model, run, x: torch.Tensor, chunk: int, device: str) -> tuple[float, float]:
    """Max abs logit difference and top-1 agreement of ``run`` against ``model`` on ``x``."""
    diff, agree = 0.0, 0
    with torch.inference_mode(), _strict_fp32():
        for part in x.split(chunk):
            ref = model(part.to(device)).float().cpu()
            got = run(part).float().cpu()
            if got.shape != ref.shape:
                return math.inf, 0.0
            d = float((ref - got).abs().max())
            diff = max(diff, d if math.isfinite(d) else math.inf)  # NaN: a mismatch
            agree += int((ref.argmax(-1) == got.argmax(-1)).sum())
    return diff, agree / len(x)


@contextmanager
def _strict_fp32():
    """TF32 off while comparing on a GPU: its 10-bit mantissa alone exceeds atol (1e-4)."""
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, allow_tf32=False):
            yield
    finally:
        torch.set_float32_matmul_precision(precision)


def _verification_inputs(config: dict, images, run_dir) -> tuple[torch.Tensor, str]:
    """The batch to compare on and what it is: given images, else the first images under the
    run's data root (a CSV manifest's folder), else 4 seeded random inputs."""
    # any input checks the file; a run on a Dataset's own tensors gets the backbone's transform
    if images is not None:
        paths, source = list(walk_images(images)), "images"
    else:
        root = config.get("finetune", {}).get("data", {}).get("root")
        folder = Path(root) if root else None
        folder = folder.parent if folder and folder.is_file() else folder  # a CSV: its folder
        found = islice(walk_images([folder]), _ROOT_IMAGES) if folder and folder.is_dir() else ()
        paths, source = list(found), "data root"
    tensors = _read_images(paths, config, run_dir)
    if images is not None and not tensors:
        raise ValueError(f"no readable images in {', '.join(map(str, images))}")
    if not tensors:
        size = [int(s) for s in config["pretrained_cfg"]["input_size"]]
        return torch.randn(4, *size, generator=torch.Generator().manual_seed(0)), "random"
    return torch.stack(tensors), source


def _read_images(paths: list, config: dict, run_dir) -> list[torch.Tensor]:
    """``paths`` through the run's evaluation transform, read as ``predict`` reads them; an
    unreadable image is skipped with a warning naming it."""
    if not paths:
        return []
    pcfg = config["pretrained_cfg"]
    channels = int(pcfg["input_size"][0])
    info = BackboneInfo.from_pretrained_cfg(pcfg)
    transform = build_eval_transform(info, _data_config(run_dir, pcfg))
    read = load_image if channels == 3 else partial(load_bands, channels=channels)
    tensors = []
    for path in paths:
        try:
            tensors.append(transform(read(path)))
        except Exception as e:  # PIL raises many types; name the file and go on
            warnings.warn(f"skipping unreadable image {path}: {first_line(e)}", stacklevel=4)
    return tensors


def _write_sidecar(report: ExportReport, config: dict, chw: list, dynamic: bool, atol) -> None:
    """The sidecar JSON: the file's input and output, preprocessing, classes, and how it compared."""
    ft, pcfg = config.get("finetune", {}), config["pretrained_cfg"]
    keys = ("input_size", "mean", "std", "interpolation", "crop_pct", "crop_mode")
    user_tensors = ft.get("preprocessing") == USER_TENSORS
    multi_label = bool(ft.get("multi_label"))
    labels = config.get("label_names") or [str(i) for i in range(config["num_classes"])]
    checked = {k: getattr(report, k) for k in ("max_abs_diff", "top1_agreement", "n_images")}
    if not math.isfinite(report.max_abs_diff):  # strict JSON has no Infinity
        checked["max_abs_diff"] = None
    sidecar = {
        "format": report.format,
        "file": report.path.name,
        "opset": report.opset,
        "input": {"name": INPUT_NAME, "shape": ["batch" if dynamic else 1, *chw]},
        "output": {"name": OUTPUT_NAME, "shape": ["batch" if dynamic else 1, len(labels)]},
        "preprocessing": USER_TENSORS if user_tensors else {k: pcfg.get(k) for k in keys},
        "architecture": config.get("architecture"),
        "label_names": labels,
        "multi_label": multi_label,
        "thresholds": ft.get("thresholds") if multi_label else None,
        "finetune_version": __version__,
        "verification": {**checked, "inputs": report.inputs, "atol": atol},
    }
    with atomic_path(report.sidecar) as tmp:
        Path(tmp).write_text(json.dumps(sidecar, indent=2) + "\n")


export_run = (
    export  # the name under which ``finetune`` offers it (``finetune.export`` is this module)
)
