"""A run's automatic choices: the budget's first estimate and the CPU image size, LP-FT or not,
every choice with its reason (no timed assertions: the step time is faked)."""

from types import SimpleNamespace

import pytest

from finetune.config import FinetuneConfig
from finetune.data.datasets import scan_data
from finetune.train import autoplan
from finetune.train.build import build_model
from finetune.train.distributed import DistInfo


def _checks(side):
    return {f"{i}.png": SimpleNamespace(width=side, height=side * 2) for i in range(5)}


@pytest.mark.parametrize("side,cap", [(16, 64), (40, 96), (300, 224), (None, 224)])
def test_size_cap_is_twice_the_images_short_side(side, cap):
    checks = _checks(side) if side else {}
    data = SimpleNamespace(train=tuple((p, 0) for p in checks), checks=checks)
    assert autoplan._size_cap(224, data) == cap


@pytest.fixture
def fake_step(monkeypatch):
    """A step costs 1 ms per 1,000 pixels of the batch's images: cost grows with the area."""
    monkeypatch.setattr(
        autoplan,
        "estimate_step_seconds",
        lambda model, *, batch_size, input_size, **kw: batch_size * input_size[1] ** 2 * 1e-6,
    )


# 200 px images, test_resnet's pretrained size 160 px, 10 training images in batches of 4:
# an hour fits 160 px; 1 s fits 3 epochs only at 128 px or less (fake_step's cost)
@pytest.mark.parametrize("budget,size", [("1h", 160), ("1s", 128)])
def test_a_budgeted_cpu_run_picks_the_largest_size_that_fits(tmp_path, fake_step, budget, size):
    from conftest import make_image

    for c in ("a", "b"):
        for i in range(6):
            make_image(tmp_path / "big" / c / f"{i}.png", (40, 90, 200), size=(200, 200), seed=i)
    cfg = FinetuneConfig().with_overrides(name="test_resnet", pretrained=False, budget=budget,
                                          batch_size=4, device="cpu")  # fmt: skip
    data = scan_data(tmp_path / "big", cfg)
    built = build_model("test_resnet", cfg, data.num_classes)
    planned, plan = autoplan.plan_run(cfg, built, data, DistInfo())
    assert planned.data.img_size == (None if size == 160 else size)  # 160: the pretrained one
    assert plan.budget_seconds and plan.step_seconds
    assert any("first estimate" in r for r in plan.reasons)
    assert planned.data.min_crop_scale is not None and planned.optim.warmup_epochs is not None


def test_an_explicit_size_and_an_unbudgeted_run_keep_their_size(image_folder, fake_step):
    cfg = FinetuneConfig().with_overrides(name="test_resnet", pretrained=False, budget="1h",
                                          img_size=48, device="cpu")  # fmt: skip
    data = scan_data(image_folder, cfg)
    built = build_model("test_resnet", cfg, data.num_classes)
    assert autoplan.plan_run(cfg, built, data, DistInfo())[0].data.img_size == 48
    plain = cfg.with_overrides(budget=None, img_size=None)
    planned, plan = autoplan.plan_run(plain, built, data, DistInfo())
    assert planned.data.img_size is None and plan.budget_seconds is None


def test_resumed_runs_choose_nothing_new(image_folder, fake_step):
    # a resumed run's config is the resolved one of its config.json (no "auto" freezing left)
    cfg = FinetuneConfig().with_overrides(name="test_resnet", pretrained=False, freeze_stages=0)
    data = scan_data(image_folder, cfg)
    built = build_model("test_resnet", cfg, data.num_classes)
    planned, plan = autoplan.plan_run(cfg, built, data, DistInfo(), resume=True)
    assert planned == cfg and plan.reasons == () and not plan.probe_head


# batch 32 (default), 1 s per step: ~10.4 ms of forward per image; 10 % of the budget
@pytest.mark.parametrize(
    "budget,n_train,images,capped",
    [
        (3600.0, 50_000, autoplan.MAX_IMAGES, False),  # an hour: the usual 10,000 cap
        (300.0, 50_000, 2880, True),  # 30 s of features at ~96 img/s
        (300.0, 1_000, 2880, False),  # every training image fits: nothing to say
        (10.0, 5_000, autoplan.MIN_PROBE_IMAGES, True),  # never below the floor
    ],
)
def test_the_lp_ft_feature_pass_gets_a_tenth_of_the_budget(budget, n_train, images, capped):
    """Regression: a 90 s elpv run at a new image size spent 67 s of its budget fitting the
    head on every training image, leaving 0.2 epochs of fine-tuning."""
    got, why = autoplan.probe_budget(FinetuneConfig(), budget, 1.0, n_train)
    assert got == images
    assert bool(why) == capped and (not capped or f"{images:,} of {n_train:,}" in why)


# step seconds by size; fits: at most 0.35 s per step; cap 224 px (sizes 224, 192, ..., 64)
@pytest.mark.parametrize(
    "cost,size,probes",
    [
        (lambda s: (s / 224) ** 2 * 1.8, 96, [64, 96, 128]),  # area model exact: its guess stands
        (lambda s: (s / 224) ** 3 * 1.8, 128, [64, 160, 128]),  # dearer than by area: steps down
        (lambda s: 0.05 + (s / 224) ** 2 * 1.8, 64, [64, 96]),  # guess stands, 96 px does not fit
        (lambda s: 5.0, 64, [64]),  # nothing fits: the smallest
        (lambda s: 0.1, 224, [64, 96, 128, 160, 192, 224]),  # everything fits: the cap
    ],
)
def test_fit_size_measures_rather_than_trusts_the_area_model(cost, size, probes):
    """Regressions: scaling 224 px's step by area predicted 0.34 s at 96 px where 0.22 s was
    measured (tf_efficientnet_lite0, 2 cores), so elpv under 90 s fell back to 64 px; and the
    pretrained size was measured first even where it could never be chosen (about 6 s of
    digits' 45 s budget). Sizes are measured from the smallest, each at most once."""
    measured = []

    def measure(s):
        measured.append(s)
        return cost(s)

    got, seconds = autoplan._fit_size(224, measure, lambda t: t <= 0.35)
    assert got == size and seconds == cost(size)
    assert measured == probes


# (overrides, epochs, thaw epochs) -> the warning's start, or None
LENGTH_WARNINGS = [
    (dict(schedule="step"), 10, (), "--schedule step: the LR decays every 30 epochs"),
    (dict(schedule="step", step_epochs=3), 10, (), None),
    (dict(mixup=0.2, mixup_off_epochs=5), 5, (), "--mixup-off-epochs 5 covers the whole"),
    (dict(mixup=0.2, mixup_off_epochs=1), 5, (), None),
    (dict(mixup_off_epochs=5), 5, (), None),  # no mixup: nothing to switch off
    (dict(budget="90s", freeze_stages=3, unfreeze_every=2), 4, (3, 5, 7), "gradual unfreezing"),
    (dict(budget="1h", freeze_stages=3, unfreeze_every=2), 40, (3, 5, 7), None),
    (dict(), 10, (), None),
]


@pytest.mark.parametrize("overrides,epochs,thaw,start", LENGTH_WARNINGS)
def test_length_warnings_name_what_the_run_length_switches_off(overrides, epochs, thaw, start):
    """Regression: --schedule step (step_epochs 30) never decayed in a 10-epoch run, and
    --mixup-off-epochs >= the run's epochs mixed nothing, both without a word."""
    warnings = autoplan.length_warnings(FinetuneConfig().with_overrides(**overrides), epochs, thaw)
    if start is None:
        assert warnings == []
    else:
        assert len(warnings) == 1 and warnings[0].startswith(start)
