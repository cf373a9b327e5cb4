"""--budget planning: the step arithmetic, re-planning from measured steps, the first estimate
(which must not touch the model), and budgeted runs end to end (no timed assertions)."""

import json
import math
import os
import signal
from types import SimpleNamespace

import pytest
import torch

import finetune
from finetune.train import budget as budget_mod
from finetune.train.budget import BudgetPlanner, estimate_step_seconds, plan_steps

# (budget, elapsed, step, in_epoch, steps/epoch, s/step, s/epoch end, final reserve) -> steps
PLANS = [
    ((100, 10, 20, 0, 50, 0.5, 5, 5), 160),  # 2 whole epochs (30 s each), then 40 of a third
    ((100, 0, 0, 0, 10, 1.0, 0, 0), 100),  # exactly 10 epochs
    ((95, 0, 0, 0, 10, 1.0, 0, 0), 95),  # the last epoch partial, ending at the budget
    ((100, 0, 7, 3, 10, 1.0, 0, 0), 107),  # mid-epoch: the running epoch's 7 steps first
    ((10, 50, 40, 4, 10, 1.0, 1, 0), 40),  # budget spent: stop at once
    ((12, 0, 0, 0, 100, 1.0, 2, 0), 10),  # less than one epoch fits: a partial first epoch
    # regression: planned epoch by epoch, so --budget 99999999h hung before training
    ((1e12, 0, 0, 0, 10, 1.0, 0, 0), 10**12),
    ((1e12, 0, 3, 3, 10, 1.0, 0, 0), 10**12 + 3),  # mid-epoch: its 7 steps, then whole epochs
]


@pytest.mark.parametrize("args,expected", PLANS)
def test_plan_steps(args, expected):
    names = ("budget", "elapsed", "step", "in_epoch", "steps_per_epoch", "step_seconds",
             "epoch_overhead", "final_reserve")  # fmt: skip
    assert plan_steps(**dict(zip(names, args))) == expected


class _Schedule:
    def __init__(self):
        self.plans = []

    def replan(self, total, *, step):
        self.plans.append((total, step))


def _trainer(step=0):
    dist = SimpleNamespace(enabled=False, is_main=True)
    return SimpleNamespace(step=step, clock_start=0.0, scheduler=_Schedule(),
                           runtime=SimpleNamespace(dist=dist), total_steps=None, epochs=10)  # fmt: skip


def test_planner_replans_from_the_timed_steps_and_from_each_epoch(monkeypatch):
    clock = {"t": 0.0}
    monkeypatch.setattr(budget_mod.time, "perf_counter", lambda: clock["t"])
    planner = BudgetPlanner(100.0, steps_per_epoch=10, eval_batches=2, final_batches=4,
                            step_seconds=2.0)  # fmt: skip
    trainer = _trainer()
    first = planner.plan(trainer, in_epoch=0)
    assert trainer.total_steps == first and trainer.scheduler.plans == [(first, 0)]
    for step in range(1, 13):  # steps take 0.5 s, not the estimated 2 s
        clock["t"] += 0.5
        trainer.step = step
        planner.after_step(trainer, in_epoch=step)
    assert planner.step_seconds == pytest.approx(0.5)
    assert trainer.total_steps > first  # faster than estimated: a longer run
    assert trainer.epochs == math.ceil(trainer.total_steps / 10)
    # an epoch that took 20 s for 10 steps plus 4 s of validation: a shorter plan again
    before = trainer.total_steps
    planner.after_epoch(trainer, steps=10, train_seconds=20.0, epoch_seconds=24.0)
    assert planner.step_seconds == 2.0 and planner.epoch_overhead == 4.0
    assert trainer.total_steps < before


def test_the_first_estimate_leaves_the_model_untouched():
    import timm

    model = timm.create_model("test_resnet", pretrained=False, num_classes=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seconds = estimate_step_seconds(model, batch_size=2, input_size=(3, 32, 32),
                                    device=torch.device("cpu"))  # fmt: skip
    assert seconds > 0
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN statistics
    assert all(p.grad is None for p in model.parameters())


@pytest.fixture
def fixed_plan(monkeypatch):
    """Budgeted runs planned to a fixed 9 steps whatever the clock says (no timed tests)."""

    def plan(self, trainer, *, in_epoch):
        trainer.total_steps, trainer.epochs = 9, math.ceil(9 / self.steps_per_epoch)
        trainer.scheduler.replan(9, step=trainer.step)
        return 9

    monkeypatch.setattr(BudgetPlanner, "plan", plan)


def test_a_budgeted_run_ends_its_schedule_at_the_planned_step(image_folder, tmp_path, fixed_plan):
    from conftest import tiny_run

    r = tiny_run(image_folder, budget="1h", warmup_epochs=None, output=str(tmp_path / "b"))
    records = r.metrics["epochs"]
    # 2 steps per epoch: 4 whole epochs and one step of a fifth, partial one
    assert [x["step"] for x in records] == [2, 4, 6, 8, 9]
    floor = r.config.optim.lr * r.config.optim.min_lr_ratio
    assert records[-1]["lr"] == pytest.approx(floor, rel=1e-3)  # the cosine's end
    assert r.config.train.budget == "1h"
    saved = json.loads((r.run_dir / "config.json").read_text())["finetune"]
    assert any("first estimate" in reason for reason in saved["auto"])


# step 3: epoch 2, within train.epochs (1); step 7: epoch 4, after 3 epochs, more than
# train.epochs. Regression: that one failed with "already trained 3 epochs; --epochs 1 would not
# extend it": a budgeted run plans its own length
@pytest.mark.parametrize("stop_step", [3, 7])
def test_resuming_a_budgeted_run_keeps_its_planned_length(
    image_folder, tmp_path, fixed_plan, stop_step
):
    from conftest import tiny_run

    from finetune.train.trainer import Trainer

    real = Trainer.optimizer_step
    calls = {"n": 0}

    def stop_mid_run(self):
        calls["n"] += 1
        if calls["n"] == stop_step:  # a real SIGINT, mid-run
            os.kill(os.getpid(), signal.SIGINT)
        real(self)

    Trainer.optimizer_step = stop_mid_run
    try:
        with pytest.raises(finetune.Interrupted):
            tiny_run(image_folder, budget="1h", warmup_epochs=None, output=str(tmp_path / "r"))
    finally:
        Trainer.optimizer_step = real
    state = torch.load(tmp_path / "r" / "trainer_state.pt", weights_only=True)
    assert state["total_steps"] == 9  # the plan is saved with the state
    resumed = finetune.adapt(resume=tmp_path / "r", verbose=False)
    records = resumed.metrics["epochs"]
    assert [x["step"] for x in records][-1] == 9
    floor = resumed.config.optim.lr * resumed.config.optim.min_lr_ratio
    assert records[-1]["lr"] == pytest.approx(floor, rel=1e-3)


@pytest.fixture
def plan_by_budget(monkeypatch):
    """Budgeted runs planned to one step per 100 s of budget whatever the clock says."""

    def plan(self, trainer, *, in_epoch):
        total = max(trainer.step, int(self.seconds // 100))
        trainer.total_steps, trainer.epochs = total, math.ceil(total / self.steps_per_epoch)
        trainer.scheduler.replan(total, step=trainer.step)
        return total

    monkeypatch.setattr(BudgetPlanner, "plan", plan)


def test_a_longer_budget_extends_a_finished_budgeted_run(image_folder, tmp_path, plan_by_budget):
    """Regression: ``--resume RUN --epochs 20`` of a budgeted run was accepted and trained
    nothing (its saved plan set the length); it is refused, and ``--budget`` extends it."""
    from conftest import tiny_run

    first = tiny_run(image_folder, budget="900s", warmup_epochs=None, output=str(tmp_path / "r"))
    assert first.metrics["epochs"][-1]["step"] == 9
    with pytest.raises(finetune.ConfigError, match="give a longer --budget"):
        finetune.adapt(resume=tmp_path / "r", epochs=20, verbose=False)
    longer = finetune.adapt(resume=tmp_path / "r", budget="1300s", verbose=False)
    records = longer.metrics["epochs"]
    assert [x["step"] for x in records] == [2, 4, 6, 8, 9, 11, 13]
    floor = longer.config.optim.lr * longer.config.optim.min_lr_ratio
    assert records[-1]["lr"] == pytest.approx(floor, rel=1e-3)  # the new schedule's end
    assert longer.config.train.budget == "1300s"
    # the budget clock counts the first session: its training seconds, kept by the state
    assert longer.metrics["resumed_after_seconds"] == pytest.approx(first.metrics["train_seconds"])


def test_a_budget_does_not_extend_an_epoch_run(image_folder, tmp_path):
    from conftest import tiny_run

    tiny_run(image_folder, output=str(tmp_path / "r"))
    with pytest.raises(finetune.ConfigError, match="give more --epochs"):
        finetune.adapt(resume=tmp_path / "r", budget="1h", verbose=False)


def test_a_replan_that_ends_the_run_saves_its_last_epoch(
    image_folder, tmp_path, fixed_plan, monkeypatch
):
    """Regression: with --save-every 2, a re-plan after epoch 3 that ended the run there left
    the resumable state of epoch 2."""
    from conftest import tiny_run

    def out_of_time(self, trainer, **_):
        if trainer.step >= 6:  # epoch 3 of the planned 5: the budget is spent
            trainer.total_steps, trainer.epochs = trainer.step, 3
        return trainer.total_steps

    monkeypatch.setattr(BudgetPlanner, "after_epoch", out_of_time)
    r = tiny_run(image_folder, budget="1h", save_every=2, output=str(tmp_path / "r"))
    assert [x["epoch"] for x in r.metrics["epochs"]] == [1, 2, 3]
    state = torch.load(tmp_path / "r" / "trainer_state.pt", weights_only=True)
    assert (state["epoch"], state["step"]) == (3, 6)


@pytest.mark.parametrize(
    "passes,expected",
    [
        # regression: 1 untimed + 2 timed passes read 0.58 s (min of 0.89, 0.58) where training ran
        # at ~0.33 s per step, so a budgeted run chose a smaller image size than fitted
        ([1.68, 0.89, 0.58, 0.32, 0.36, 0.33], 0.32),
        ([0.5, 0.2, 0.21, 9.0, 9.0, 9.0], 0.2),  # settled at the third pass: no more passes
        ([3.0, 1.0, 2.0, 1.0, 2.0, 1.5], 1.5),  # never settles: the last two of max_passes
        ([9.0, 5.0, 3.0, 2.0, 2.0, 2.0], 3.0),  # a slow model: 3 passes once they took 10 s
    ],
)
def test_the_first_estimate_times_passes_until_they_settle(passes, expected):
    import timm

    ticks, now = [], 0.0
    for seconds in passes:  # the clock's readings before and after each pass
        ticks += [now, now + seconds]
        now += seconds
    clock = iter(ticks).__next__
    model = timm.create_model("test_resnet", pretrained=False, num_classes=2)
    seconds = estimate_step_seconds(model, batch_size=2, input_size=(3, 32, 32),
                                    device=torch.device("cpu"), clock=clock)  # fmt: skip
    assert seconds == pytest.approx(expected)
