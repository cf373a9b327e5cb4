"""The automatic defaults: augmentation from the run length, warmup, explicit values kept."""

import pytest

from finetune.autoconfig import augment_level, resolve_auto, warmup_for
from finetune.config import FinetuneConfig


@pytest.mark.parametrize(
    "epochs,level", [(1, "light"), (10, "light"), (11, "medium"), (40, "medium"), (300, "ImageNet")]
)
def test_augmentation_grows_with_the_run_length(epochs, level):
    assert augment_level(epochs)[2] == level


@pytest.mark.parametrize("epochs,warmup", [(3, 0.15), (10, 0.5), (20, 1.0), (100, 1.0)])
def test_warmup_is_five_percent_at_most_one_epoch(epochs, warmup):
    assert warmup_for(epochs) == warmup


def test_resolve_auto_fills_only_what_is_auto_and_says_why():
    cfg, reasons = resolve_auto(FinetuneConfig().with_overrides(color_jitter=0.0), epochs=6,
                                n_train=1000)  # fmt: skip
    assert (cfg.data.min_crop_scale, cfg.data.color_jitter) == (0.8, 0.0)
    assert cfg.optim.warmup_epochs == 0.3
    assert any("1,000 images" in r for r in reasons)
    explicit = FinetuneConfig().with_overrides(min_crop_scale=0.2, color_jitter=0.3,
                                               warmup_epochs=1.0, lr=1e-3)  # fmt: skip
    same, none = resolve_auto(explicit, epochs=6)
    assert same == explicit and none == ()


@pytest.mark.parametrize(
    "optimizer,cnn,lr", [("adamw", True, 2e-3), ("adamw", False, 5e-4), ("sgd", True, 2e-2)]
)
def test_the_lr_follows_optimizer_and_architecture(optimizer, cnn, lr):
    cfg, reasons = resolve_auto(FinetuneConfig().with_overrides(optimizer=optimizer), cnn=cnn)
    assert cfg.optim.lr == pytest.approx(lr)
    assert any(r.startswith(f"lr {lr:g}") for r in reasons)


@pytest.mark.parametrize("epochs,length", [(1, "1 epoch over"), (8, "8 epochs over")])
def test_reasons_name_the_run_length_without_an_article(epochs, length):
    """Regression: the demo printed "a 8-epoch run over 1,838 images"."""
    _, reasons = resolve_auto(FinetuneConfig(), epochs=epochs, n_train=1838)
    augment, warmup = (next(r for r in reasons if r.startswith(k)) for k in ("augment", "warmup"))
    assert augment.endswith(f"{length} 1,838 images") and f"5 % of {length} 1,838" in warmup
    assert not any("-epoch run" in r for r in reasons)
