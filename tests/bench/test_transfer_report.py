"""bench/transfer_report.py: issue 13's checks of the tune row, read per data set and per seed."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from transfer_report import overall_targets, summarise, tune_targets  # noqa: E402


def _row(per_seed: dict) -> dict:
    """One method's summary (mean, sample std, per seed) as the bench makes it."""
    runs = [dict(method="finetune", seed=int(k), test_accuracy=v, wall_s=1.0)
            for k, v in per_seed.items()]  # fmt: skip
    entry = {"runs": runs}
    summarise(entry)
    return entry["summary"]["finetune"]


# default 0.84/0.86/0.88 (spread 0.02): tune's gains per seed, then (on its mean, in every seed)
@pytest.mark.parametrize(
    "gains,on_mean,in_seeds",
    [
        ((0.01, 0.01, 0.01), True, True),
        ((0.03, 0.03, -0.03), True, False),  # one seed below the spread, the mean above it
        ((-0.03, -0.03, -0.03), False, False),
        ((-0.01, -0.01, -0.01), True, True),  # behind, but within the spread
    ],
)
def test_tune_checks_read_the_spread_on_the_mean_and_in_every_seed(gains, on_mean, in_seeds):
    ft = _row({"0": 0.84, "1": 0.86, "2": 0.88})
    tune = _row({k: v + g for (k, v), g in zip(ft["per_seed"].items(), gains)})
    mean_check, seed_check, info = tune_targets(ft, tune)
    assert (mean_check["ok"], seed_check["ok"], info["ok"]) == (on_mean, in_seeds, None)
    assert "mean" in mean_check["target"] and "no seed" in seed_check["target"]


def test_one_seed_has_no_spread_to_check():
    """Regression: one seed (spread 0) read as a PASS."""
    checks = tune_targets(_row({"0": 0.9}), _row({"0": 0.8}))
    assert [c["ok"] for c in checks] == [None, None, None]


def test_the_average_gain_weighs_the_data_sets_alike():
    """Regression: a gain of exactly +1.00 points (float noise below 0.01) printed +1.00 and FAIL."""

    def entry(ft, tune):
        return {"summary": {"finetune": _row(ft), "tune": _row(tune)}}

    datasets = {
        "a": entry({"0": 0.80, "1": 0.82}, {"0": 0.83, "1": 0.85}),  # +3 points
        "b": entry({"0": 0.90, "1": 0.90, "2": 0.90}, {"0": 0.89, "1": 0.89, "2": 0.89}),  # -1
    }
    (check,) = overall_targets(datasets)
    assert check["ok"] is True and check["detail"].startswith("+1.00")
