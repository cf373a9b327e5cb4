"""finetune.tools.tune.neighbour: the first searched trials of a study move the best config so far
instead of sampling the whole space. Regression: the 62 searched trials of the bench's 36
studies were random points of the space (an LR of 1e-4 with 4 stages frozen, where the default
run had chosen 2e-3) and all scored below the default run on validation, by 0.5 to 25 points."""

import math
import random

import pytest

from finetune._io import read_run_config
from finetune.tools.tune import load_search_space, tune
from finetune.tools.tune.neighbour import STARTUP_TRIALS, neighbour, propose, resolved_values

SPACE = load_search_space(
    {
        "lr": {"low": 1e-4, "high": 1e-2, "log": True},
        "freeze_stages": {"low": 0, "high": 4},
        "min_crop_scale": {"low": 0.08, "high": 1.0},
        "label_smoothing": {"low": 0.0, "high": 0.2, "step": 0.05},
        "mixup": [0.0, 0.2],
        "epochs": {"low": 3, "high": 15},
    }
)
START = dict(
    lr=2e-3, freeze_stages=4, min_crop_scale=0.8, label_smoothing=0.1, mixup=0.0, epochs=10
)


def neighbours(n=200, values=START, **kw):
    return [neighbour(SPACE, values, rng=random.Random(i), **kw) for i in range(n)]


def test_a_neighbour_moves_some_values_and_keeps_the_rest_inside_the_space():
    moved_counts = []
    for near in neighbours():
        assert set(near) == set(START)
        moved = [k for k in near if near[k] != START[k]]
        assert moved, near  # at least one value moves
        moved_counts.append(len(moved))
        for p in SPACE.params:
            value = near[p.key]
            assert value in p.choices if p.kind == "choice" else p.low <= value <= p.high
        assert isinstance(near["freeze_stages"], int) and isinstance(near["epochs"], int)
        assert round(near["label_smoothing"] / 0.05, 6).is_integer()  # on the step's grid
    assert 2 <= sum(moved_counts) / len(moved_counts) <= 4.5  # about half of six


def test_a_neighbour_stays_near():
    """Moves are a fraction of the range: the LR about 2x up or down, not across 1e-4..1e-2."""
    ratios = [abs(math.log(n["lr"] / START["lr"])) for n in neighbours() if n["lr"] != START["lr"]]
    assert ratios and sorted(ratios)[len(ratios) // 2] < math.log(2.5)  # the median move
    steps = [abs(n["freeze_stages"] - 4) for n in neighbours() if n["freeze_stages"] != 4]
    assert max(steps) <= 3 and sorted(steps)[len(steps) // 2] == 1


@pytest.mark.parametrize(
    "values,caps,check",
    [
        ({"mixup": 0.0}, None, lambda n: n == {"mixup": 0.2}),  # a choice switches
        ({"freeze_stages": 4}, None, lambda n: n["freeze_stages"] in (2, 3)),  # at the top: down
        ({"freeze_stages": 0}, None, lambda n: n["freeze_stages"] in (1, 2)),  # at the bottom: up
        ({"epochs": 10}, {"epochs": 4}, lambda n: 3 <= n["epochs"] <= 4),  # the budget's cap
        ({"lr": 0.5}, None, lambda n: 1e-4 <= n["lr"] <= 1e-2),  # a value outside: clipped
        ({"color_jitter": 0.1}, None, lambda n: n == {}),  # not in the space: nothing to move
    ],
)
def test_edges_caps_and_choices(values, caps, check):
    for near in neighbours(50, values, caps=caps):
        assert check(near), near


def test_resolved_values_read_a_saved_config_and_leave_out_none():
    saved = {"optim": {"lr": 2e-3, "label_smoothing": 0.1}, "policy": {"freeze_stages": None}}
    assert resolved_values(SPACE, saved) == {"lr": 2e-3, "label_smoothing": 0.1}


@pytest.mark.parametrize(
    "text", ['{"finetune": {"config": {"optim": {"lr": 0.002}}}}', "{not json", "[]", ""]
)
def test_a_damaged_config_json_falls_back_to_the_trials_parameters(tmp_path, text):
    """Regression: a corrupt config.json in the best trial's run stopped a resumed study
    ("not valid JSON; the run directory is damaged") before its next trial."""
    from types import SimpleNamespace

    (tmp_path / "config.json").write_text(text)
    best = SimpleNamespace(params={"mixup": 0.0}, user_attrs={"run_dir": str(tmp_path)})
    space = load_search_space({"lr": {"low": 1e-4, "high": 1e-2, "log": True}, "mixup": [0.0, 0.2]})
    params, moved = propose(space, best, seed="0", caps={})
    assert set(params) == ({"lr", "mixup"} if "optim" in text else {"mixup"}) and moved


def test_a_study_starts_near_the_default_run_and_hands_over_to_tpe(image_folder, tmp_path):
    """Trials 1 to STARTUP_TRIALS-1 move the default run's own values (its automatic LR
    included); TPE samples the next one (and the last, under --trials, is the final one)."""
    space = {"lr": {"low": 1e-4, "high": 1e-2, "log": True}, "mixup": [0.0, 0.2]}
    report = tune("test_resnet", image_folder, search=space, trials=STARTUP_TRIALS + 2, epochs=1,
                  pretrained=False, img_size=32, batch_size=4, num_workers=0, warmup_epochs=0.0,
                  verbose=False, output=str(tmp_path / "study"), pruner="none")  # fmt: skip
    default, *near, sampled, final = report.trials
    chosen = read_run_config(default.run_dir)["finetune"]["config"]["optim"]["lr"]
    assert default.note == "the default run" and len(near) == STARTUP_TRIALS - 1
    for t in near:
        assert t.note.startswith("near trial ") and t.note.endswith(" moved)"), t.note
        assert set(t.params) == {"lr", "mixup"}
        parent = report.trials[int(t.note.split()[2].split("'")[0])]
        assert parent.state == "complete"
    first = near[0]  # trial 0 is the only finished trial when trial 1 starts
    assert first.note.startswith("near trial 0's config")
    if "lr" not in first.note:  # not moved: the default run's own automatic choice
        assert first.params["lr"] == pytest.approx(chosen)
    assert sampled.note == "" and final.note.startswith("trial ") and "retrained" in final.note
