import pytest
import torch

from finetune.train import runtime
from finetune.train.runtime import resolve_device, resolve_precision

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


@pytest.mark.parametrize(
    "precision, bf16_cpu, expected",
    [
        ("auto", False, "fp32"),
        ("auto", True, "fp32"),
        ("fp32", False, "fp32"),
        ("bf16", True, "bf16"),
    ],
)
def test_cpu_precision(monkeypatch, precision, bf16_cpu, expected):
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: bf16_cpu)
    assert resolve_precision(precision, torch.device("cpu")) == expected


def test_bf16_on_a_cpu_without_it_warns_and_fp16_is_refused(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    with pytest.warns(UserWarning, match="10-16x slower"):
        assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", torch.device("cpu"))


def test_cuda_request_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="no CUDA device"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


@cuda
def test_auto_picks_bf16_or_fp16_on_cuda():
    from finetune.train.runtime import resolve_precision

    assert resolve_precision("auto", torch.device("cuda")) in ("bf16", "fp16")


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "cpu:1", "gpu"])
def test_an_unknown_device_names_the_choices(device):
    # regression: predict --device tpu ended in a RuntimeError traceback from torch
    with pytest.raises(ValueError, match="use auto, cpu, cuda or cuda:N"):
        resolve_device(device)


def test_predict_on_cuda_without_a_gpu_is_one_clear_error(image_folder, fast_overrides):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    import finetune

    run_dir = finetune.adapt("test_resnet", image_folder, verbose=False, **fast_overrides).run_dir
    with pytest.raises(ValueError, match="no CUDA device is available"):
        finetune.predict(run_dir, [image_folder], device="cuda")
