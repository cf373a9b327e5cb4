import pytest
import torch

from finetune.train import runtime as trainer_mod
from finetune.train.runtime import resolve_device, resolve_precision


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
    monkeypatch.setattr(trainer_mod, "cpu_has_native_bf16", lambda: bf16_cpu)
    assert resolve_precision(precision, torch.device("cpu")) == expected


def test_bf16_on_a_cpu_without_it_warns_and_fp16_is_refused(monkeypatch):
    monkeypatch.setattr(trainer_mod, "cpu_has_native_bf16", lambda: False)
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


def test_non_finite_loss_stops_with_the_step(image_folder, fast_overrides):
    import finetune

    with pytest.raises(
        FloatingPointError, match=r"non-finite training loss \(detected at step \d+\)"
    ):
        finetune.adapt(
            "test_resnet",
            image_folder,
            verbose=False,
            lr=1e30,
            optimizer="sgd",
            **{**fast_overrides, "epochs": 2},
        )
