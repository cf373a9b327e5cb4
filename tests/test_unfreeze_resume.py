"""Issue 3: gradual unfreezing through a real run, and a resume across an unfreeze boundary."""

import pytest
import torch
from safetensors.torch import load_file

import finetune
from finetune.train.trainer import Trainer


def _run(image_folder, out, **extra):
    return finetune.adapt(
        "test_resnet",
        image_folder,
        verbose=False,
        pretrained=False,
        epochs=3,
        img_size=32,
        batch_size=4,
        num_workers=0,
        warmup_epochs=0.0,
        freeze_stages=4,
        unfreeze_at=(2, 3),
        output=str(out),
        **extra,
    )


def test_unfreezing_adds_param_groups_at_the_scheduled_epochs(image_folder, tmp_path):
    result = _run(image_folder, tmp_path / "run")
    state = torch.load(result.run_dir / "trainer_state.pt", weights_only=True)
    stages = [g["stage"] for g in state["optimizer"]["param_groups"]]
    # layer4 and the head from the start (weights, then 1-D params without decay), layer3
    # joins at epoch 2, layer2 at epoch 3
    assert stages == ["layer4", "layer4", "head", "head", "layer3", "layer3", "layer2", "layer2"]
    assert result.policy.thaw_epochs == (2, 3)


@pytest.mark.parametrize("crash_epoch", [2, 3])  # before the first / the second thaw
def test_resume_across_an_unfreeze_boundary_matches_an_uninterrupted_run(
    image_folder, tmp_path, monkeypatch, crash_epoch
):
    reference = _run(image_folder, tmp_path / "ref")

    real_thaw = Trainer.thaw

    def crash(self, epoch):
        if epoch == crash_epoch:
            raise KeyboardInterrupt(f"simulated crash before the unfreeze at epoch {epoch}")
        return real_thaw(self, epoch)

    monkeypatch.setattr(Trainer, "thaw", crash)
    with pytest.raises(finetune.Interrupted, match="--resume"):
        _run(image_folder, tmp_path / "crashed")
    monkeypatch.setattr(Trainer, "thaw", real_thaw)

    resumed = finetune.adapt(resume=tmp_path / "crashed", verbose=False)
    assert resumed.metrics["best_epoch"] == reference.metrics["best_epoch"]
    trainable = lambda r: {n for n, p in r.model.named_parameters() if p.requires_grad}  # noqa
    assert trainable(resumed) == trainable(reference)
    last_ref = load_file(str(reference.run_dir / "last.safetensors"))
    last_res = load_file(str(resumed.run_dir / "last.safetensors"))
    for key, value in last_ref.items():
        assert torch.equal(value, last_res[key]), key  # bit-identical on CPU
    lines = (resumed.run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3


def test_resume_errors(image_folder, tmp_path):
    with pytest.raises(ValueError, match="exactly as it was configured; drop --lr"):
        finetune.adapt(resume=tmp_path, lr=0.1)
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        finetune.adapt(resume=tmp_path, verbose=False)
