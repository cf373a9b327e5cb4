"""export(): ONNX and TorchScript files that match PyTorch (timm, torchvision, LoRA, multi-label,
4-band runs), the sidecar, the dynamic batch axis, mismatches and a missing onnxruntime."""

import importlib
import json
import shutil
import sys

import numpy as np
import pytest
import torch

import finetune
from finetune.export import export
from finetune.train.checkpoint import load_run

# the module, not the function (a package attribute named "export" may be either)
export_module = importlib.import_module("finetune.export")


def _onnx_session(path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize(
    "backbone, extra",
    [
        ("test_resnet", {}),
        ("test_vit", {}),
        ("tv:resnet18", {}),
        ("test_vit", dict(peft="lora", lora_r=4)),
    ],
    ids=["timm-cnn", "timm-vit", "torchvision", "lora"],
)
def test_onnx_and_torchscript_match_pytorch(image_folder, fast_overrides, backbone, extra):
    run = finetune.adapt(backbone, image_folder, verbose=False, **fast_overrides, **extra)
    model, _ = load_run(run.run_dir)
    if extra:  # the run's weights hold the merged adapter: load_run gives a plain timm model
        assert not any("lora" in name for name in model.state_dict())
        assert type(model).__name__ == "VisionTransformer"
    for fmt in ("onnx", "torchscript"):
        report = export(run.run_dir, format=fmt, images=[image_folder / "dog"])
        assert report.path == run.run_dir / "export" / export_module.FORMATS[fmt]
        assert report.path.is_file() and report.sidecar.is_file()
        assert report.max_abs_diff <= 1e-4 and report.top1_agreement == 1.0
        assert (report.n_images, report.inputs, report.format) == (6, "images", fmt)
        assert (report.opset is None) == (fmt == "torchscript")
    if backbone == "test_resnet":  # the ONNX file's batch axis is dynamic
        session = _onnx_session(run.run_dir / "export" / "model.onnx")
        assert session.get_inputs()[0].shape == ["batch", 3, 32, 32]
        for batch in (1, 5):
            x = torch.randn(batch, 3, 32, 32)
            (got,) = session.run(None, {"input": x.numpy()})
            with torch.no_grad():
                np.testing.assert_allclose(got, model(x).numpy(), atol=1e-4)


def test_sidecar_names_classes_and_preprocessing(image_folder, fast_overrides):
    run = finetune.adapt("test_resnet", image_folder, verbose=False, **fast_overrides)
    report = export(run.run_dir, format="torchscript", output=run.run_dir.parent / "out")
    assert report.path.parent == run.run_dir.parent / "out"
    assert report.inputs == "data root" and report.n_images == 8  # found under the data root
    sidecar = json.loads(report.sidecar.read_text())
    pcfg = json.loads((run.run_dir / "config.json").read_text())["pretrained_cfg"]
    assert sidecar["label_names"] == ["cat", "dog"]
    assert sidecar["input"] == {"name": "input", "shape": ["batch", 3, 32, 32]}
    assert sidecar["preprocessing"]["input_size"] == [3, 32, 32]
    for key in ("mean", "std", "interpolation", "crop_pct"):
        assert sidecar["preprocessing"][key] == pcfg[key]
    assert sidecar["format"] == "torchscript" and sidecar["opset"] is None
    assert (sidecar["multi_label"], sidecar["thresholds"]) == (False, None)
    assert sidecar["finetune_version"] == finetune.__version__
    assert sidecar["verification"]["max_abs_diff"] == report.max_abs_diff
    (image_folder / "cat" / "broken.png").write_bytes(b"\x89PNG broken")
    with pytest.warns(UserWarning, match="skipping unreadable image .*broken.png"):
        report = export(run.run_dir, format="torchscript", images=[image_folder / "cat"])
    assert (report.inputs, report.n_images, report.top1_agreement) == ("images", 6, 1.0)


def test_multi_label_run_exports_static_batch(multi_csv, fast_overrides):
    run = finetune.adapt("test_resnet", multi_csv, verbose=False, **fast_overrides)
    report = export(run.run_dir, dynamic_batch=False)  # compared one image at a time
    assert report.max_abs_diff <= 1e-4 and report.top1_agreement == 1.0
    assert report.inputs == "data root"  # images beside the CSV manifest
    sidecar = json.loads(report.sidecar.read_text())
    assert sidecar["label_names"] == ["bright", "cool", "warm"]
    assert sidecar["multi_label"] is True and len(sidecar["thresholds"]) == 3
    assert sidecar["input"]["shape"] == [1, 3, 32, 32]
    assert _onnx_session(report.path).get_inputs()[0].shape == [1, 3, 32, 32]


def test_four_band_run_exports_with_an_opset(tmp_path, fast_overrides, make_tiles):
    root = make_tiles(tmp_path / "tiles", bands=4)
    run = finetune.adapt("test_resnet", root, verbose=False, in_chans=4, **fast_overrides)
    report = export(run.run_dir, opset=18)
    assert report.max_abs_diff <= 1e-4 and report.top1_agreement == 1.0
    assert (report.opset, report.inputs, report.n_images) == (18, "data root", 8)
    import onnx

    assert {o.domain: o.version for o in onnx.load(report.path).opset_import}[""] == 18
    assert _onnx_session(report.path).get_inputs()[0].shape == ["batch", 4, 32, 32]
    sidecar = json.loads(report.sidecar.read_text())
    assert sidecar["preprocessing"]["input_size"] == [4, 32, 32]
    assert sidecar["opset"] == 18 and sidecar["label_names"] == ["forest", "water"]


def test_a_file_that_does_not_match_is_an_error(image_folder, fast_overrides, monkeypatch):
    run = finetune.adapt("test_resnet", image_folder, verbose=False, **fast_overrides)
    shutil.rmtree(image_folder)  # no data root left: a seeded random batch
    report = export(run.run_dir, format="torchscript")
    assert (report.inputs, report.n_images) == ("random", 4)
    runner = export_module._runner
    monkeypatch.setattr(  # the exported file's logits, perturbed
        export_module, "_runner", lambda *a: lambda x, run=runner(*a): run(x) + 1e-3
    )
    good = (run.run_dir / "export" / "model.torchscript.pt").read_bytes()
    with pytest.raises(ValueError, match=r"model.torchscript.pt does not match .* > atol 0.0001"):
        export(run.run_dir, format="torchscript")
    # regression (review): the failed file replaced a good earlier export before the check
    assert (run.run_dir / "export" / "model.torchscript.pt").read_bytes() == good
    with pytest.raises(ValueError, match="choose one of: onnx, torchscript"):
        export(run.run_dir, format="tflite")
    with pytest.raises(ValueError, match="opset 18 or newer"):
        export(run.run_dir, opset=13)


def test_missing_onnxruntime_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ValueError, match=r"pip install 'finetune\[export\]'"):
        export(tmp_path)
