"""finetune.tools.tune: the search space and its errors, the budget's accounting (a fake clock),
pruning, best.yaml, resuming a study from sqlite, two workers on one storage, tracked trials.
Trials are random-init test_resnet runs at 32 px on a 2-class folder in tmp_path."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from finetune._io import read_run_config
from finetune.errors import ConfigError
from finetune.tools.tune import StudyBudget, load_search_space, tune
from finetune.tools.tune.budget import Slot, wall_seconds

TINY = dict(pretrained=False, img_size=32, batch_size=4, num_workers=0, warmup_epochs=0.0)
SPACE = {"lr": {"low": 1e-4, "high": 1e-2, "log": True}, "mixup": [0.0, 0.2]}


def quiet_tune(folder, tmp_path, **kw):
    args = dict(TINY, verbose=False, output=str(tmp_path / "study"), search=SPACE, epochs=1)
    args = {k: v for k, v in {**args, **kw}.items() if v is not None}  # None: not given
    return tune("test_resnet", folder, **args)


# --------------------------------------------------------------------------- the search space


def test_the_shipped_space_loads_and_is_no_recipe():
    from finetune.config import recipes_dir

    space = load_search_space()
    assert {"lr", "freeze_stages", "layer_decay", "head_lr_scale", "min_crop_scale",
            "color_jitter", "label_smoothing", "mixup", "epochs"} == set(space.keys)  # fmt: skip
    assert space.get("lr").log and space.get("freeze_stages").high == "all"
    assert "search" not in {p.stem for p in recipes_dir().glob("*.yaml")}


@pytest.mark.parametrize(
    "space,message",
    [
        ({"lrr": {"low": 0.1, "high": 1}}, r"'lrr' cannot be searched\. Did you mean: lr, .*Valid keys: .*label_smoothing"),
        ({"output": ["a", "b"]}, r"'output' cannot be searched.*Valid keys"),
        ({"lr": {"low": 0.1, "hi": 1}}, r"lr: unknown key 'hi'; a range takes low, high, log, step"),
        ({"lr": {"low": 0.1, "high": 0.01}}, r"lr: low \(0.1\) must be below high \(0.01\)"),
        ({"label_smoothing": {"low": 0, "high": 0.2, "log": True}}, r"label_smoothing: a log range needs low > 0"),
        ({"epochs": {"low": 1.5, "high": 4}}, r"epochs: 1.5 is not a valid value \(.*expected int"),
        ({"mixup": [0.0, -1.0]}, r"mixup: -1.0 is not a valid value"),
        ({"bn": {"low": 0, "high": 1}}, r"bn: a str field takes a list of choices"),
        ({"lr": 0.1}, r"lr: write a range \{low: A, high: B\}"),
        ({"freeze_until": "stages", "freeze_stages": {"low": 0, "high": 2}}, r"not both"),
    ],
)  # fmt: skip
def test_a_bad_search_space_names_the_key(space, message):
    with pytest.raises(ConfigError, match=message):
        load_search_space(space)


def test_a_bad_search_file_names_the_file(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("lr: {low: 1.0e-4, high: 1.0e-2, log: true}\nfreez_stages: [0, 1]\n")
    with pytest.raises(ConfigError, match=rf"{path}: 'freez_stages' cannot be searched\. Did you mean: freeze_stages"):  # fmt: skip
        load_search_space(path)
    with pytest.raises(FileNotFoundError, match="search space 'nope' not found.*default"):
        load_search_space("nope")
    path.write_text("lr: {low: 1e-3, high: [\n")  # regression: PyYAML's five-line message
    with pytest.raises(ConfigError) as e:
        load_search_space(path)
    assert str(e.value) == (f"{path}: not valid YAML (line 2, column 1: expected the node "
                            "content, but found '<stream end>')")  # fmt: skip
    path.write_bytes("mixup: [0.0, 0.2]  # \u00e9\n".encode("latin-1"))  # regression: a traceback
    with pytest.raises(ConfigError, match=rf"{path}: not valid YAML \(UnicodeDecodeError: 'utf-8'"):
        load_search_space(path)


@pytest.mark.parametrize(
    "kw,message",
    [
        (dict(val_split=0.0), r"compares trials on validation images and .*data has none.*--val-split 0.15"),
        (dict(freeze_until="nosuch"), r"nosuch"),
        (dict(output="afile"), r"--output .*afile is a file; choose a folder"),
        (dict(output="data/study"), r"--output .*data/study is inside --data .*: the next scan"),
        (dict(search={"freeze_stages": {"low": 0, "high": 99}}), r"freeze_stages: 99 is beyond the backbone's 5 stages; use 0 to 5"),
        (dict(search={"freeze_until": ["layer2", "nosuch"]}), r"freeze_until: 'nosuch' is not a module of the backbone; its stages begin at conv1.0, layer1"),
    ],
)  # fmt: skip
def test_bad_input_fails_once_before_any_trial(image_folder, tmp_path, kw, message):
    """Regression (hostile-input pass): these failed inside trial 0 and in each retry, the error
    printed four times; with --val-split 0 every trial trained to its end before failing."""
    (tmp_path / "afile").write_text("not a folder")
    kw = {k: str(tmp_path / v) if k == "output" else v for k, v in kw.items()}
    with pytest.raises(ValueError, match=message):
        quiet_tune(image_folder, tmp_path, trials=3, **kw)
    assert not (tmp_path / "study" / "trials").exists()


def test_the_default_runs_bad_input_is_not_retried(image_folder, tmp_path, monkeypatch):
    """Regression (hostile-input pass): test_resnet has no pretrained weights (HF_HUB_OFFLINE=1,
    conftest), and the default trial, whose config is fixed, was tried three times."""
    from finetune.tools.tune.trial import TrialRunner

    train, runs = TrialRunner._train, []
    monkeypatch.setattr(TrialRunner, "_train", lambda self, *a: runs.append(1) or train(self, *a))
    with pytest.raises(FileNotFoundError, match="no pretrained weights found for 'test_resnet'"):
        quiet_tune(image_folder, tmp_path, trials=3, pretrained=True)
    assert len(runs) == 1


@pytest.mark.parametrize(
    "url,message",
    [
        ("foo://x", r"--storage foo://x: NoSuchModuleError: .*; use sqlite:///study.db"),
        ("notaurl", r"--storage notaurl: ArgumentError: Could not parse"),
        ("sqlite:///{tmp}/nodir/s.db", r"--storage sqlite:///.*/nodir/s.db: .*nodir is not a folder"),
        ("sqlite:///{tmp}/afile", r"--storage .*afile: DatabaseError: .*file is not a database"),
        ("sqlite:///{tmp}/foreign.db", r"--storage .*foreign.db: StorageInternalError"),
        ("sqlite://", r"--storage sqlite:// names no file; give sqlite:///study.db"),
    ],
)  # fmt: skip
def test_a_storage_that_cannot_open_is_one_line_naming_it(image_folder, tmp_path, url, message):
    """Regression (hostile-input pass): each went down the unexpected-failure path with
    SQLAlchemy's message alone."""
    import sqlite3

    (tmp_path / "afile").write_text("not a database")
    with sqlite3.connect(tmp_path / "foreign.db") as db:  # another program's: a trials table
        db.execute("create table trials (id integer, name text)")
    with pytest.raises(ConfigError, match=message):
        quiet_tune(image_folder, tmp_path, trials=2, storage=url.format(tmp=tmp_path))


def test_an_output_folder_of_another_study_is_refused(image_folder, tmp_path):
    """Regression (hostile-input pass): a new --storage (or --study) into a finished study's
    --output failed its trials one by one, then replaced that study's files."""
    quiet_tune(image_folder, tmp_path, trials=1)  # in memory
    url = f"sqlite:///{tmp_path / 'study.db'}"
    with pytest.raises(ConfigError, match=r"holds the trials of another study .*has none\); choose another --output"):  # fmt: skip
        quiet_tune(image_folder, tmp_path, trials=2, storage=url)
    assert len(list((tmp_path / "study" / "trials").iterdir())) == 1


@pytest.mark.parametrize(
    "mixup,was",
    [([0.0, 0.5], r"the choices \[0.0, 0.2\]"), ({"low": 0.0, "high": 0.4}, r"the choices \[0.0, 0.2\]")],
)  # fmt: skip
def test_a_resumed_study_keeps_its_choices(image_folder, tmp_path, mixup, was):
    """Regression (hostile-input passes): other choices, or a range for a list, failed trial
    after trial with Optuna's "CategoricalDistribution does not support dynamic value space"
    ("Cannot set different distribution kind")."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    quiet_tune(image_folder, tmp_path, trials=1, storage=storage, study="s")
    with pytest.raises(ConfigError, match=rf"--search: mixup is not searched as study s in sqlite:///.* was \({was}\); search it the same way"):  # fmt: skip
        quiet_tune(image_folder, tmp_path, trials=3, storage=storage, study="s",
                   search={**SPACE, "mixup": mixup})  # fmt: skip


@pytest.mark.parametrize("trials,notes", [(2, ["the default run"]), (4, ["the default run", "trial 0's config, retrained"])])  # fmt: skip
def test_a_study_with_every_field_fixed_runs_the_default_run_once(image_folder, tmp_path, trials,
                                                                   notes):  # fmt: skip
    """Regression (hostile-input pass): "searching nothing", then the same config trial after
    trial; now the default run, and its refit when the study has a final trial."""
    report = quiet_tune(image_folder, tmp_path, trials=trials, search={"lr": SPACE["lr"]},
                        lr=0.002)  # fmt: skip
    assert len(report.trials) == len(notes)
    assert all(t.note.startswith(n) for t, n in zip(report.trials, notes))
    if trials == 2:
        assert report.stop_reason == "every field is fixed: the default run is the only config"


def test_a_long_study_name_makes_a_short_folder(image_folder, tmp_path, monkeypatch):
    # regression (hostile-input pass): "[Errno 36] File name too long" for a 300-character name
    monkeypatch.chdir(tmp_path)
    report = quiet_tune(image_folder, tmp_path, trials=1, study="x" * 300, output=None)
    assert report.output == Path("runs") / f"tune-{'x' * 100}" and report.study_name == "x" * 300


def test_a_budget_too_short_for_a_study_says_so(image_folder, tmp_path):
    # regression (hostile-input pass): --budget 0.1s failed in the default trial with
    # "train.budget: '0.0s' is no time", a value the user never typed
    with pytest.raises(ConfigError, match=r"--budget 0.1s: a study needs at least 4s"):
        quiet_tune(image_folder, tmp_path, budget="0.1s")


def test_one_class_fails_before_any_trial(tmp_path):
    from conftest import make_folder

    folder = make_folder(tmp_path / "one", classes=("cat",))
    with pytest.raises(ValueError, match="one"):
        quiet_tune(folder, tmp_path, trials=3)
    assert not (tmp_path / "study").exists()  # no empty output folder left behind


def test_given_flags_are_fixed_and_a_freezing_flag_fixes_every_freezing_choice():
    space = load_search_space()
    assert "lr" not in space.without(["optim.lr"]).keys
    fixed = space.without(["freeze_until"]).keys
    assert "freeze_stages" not in fixed and "layer_decay" in fixed


def test_stage_values_follow_the_backbone():
    space = load_search_space({"freeze_until": "stages", "epochs": {"low": 1, "high": 3}})
    stages = ["conv1", "layer1", "layer2", "layer3", "layer4", "fc"]
    assert space.with_stages(stages).get("freeze_until").choices == tuple(stages[:-1])
    depth = load_search_space({"freeze_stages": {"low": 0, "high": "all"}}).with_stages(stages)
    assert depth.get("freeze_stages").high == 5  # every stage before the head


# --------------------------------------------------------------------------- the budget


class FakeClock:
    def __init__(self, step=0.0):
        self.t, self.step = 0.0, step

    def __call__(self):
        self.t += self.step
        return self.t


SHORT = {"epochs": {"low": 1, "high": 3}}


def roomy(**kw):
    """A study's keywords that leave its final trial seconds to spare: a fresh 0.5 s fake clock,
    a 16 s budget, searched trials of 1-3 epochs. Regression (CI of stop 31): at 12 s with the
    configured epochs, a neighbour the budget stopped after 5 epochs completed, its 2.5 fake
    seconds of epochs counted as set-up against its real 0.2 s of training, and the final
    trial's share came to 0.09 s: none when that training ran a little faster."""
    return dict(dict(budget=16, clock=FakeClock(0.5), search={**SPACE, **SHORT}, epochs=None), **kw)


def test_the_budget_caps_epochs_to_what_fits_and_stops_when_nothing_does():
    clock = FakeClock()
    budget = StudyBudget(300.0, now=clock)
    assert budget.next_slot(3, 10, retrain=False) == Slot(epochs=10)  # nothing measured yet
    clock.t = 100.0
    budget.record(wall_s=100.0, epoch_seconds=[20.0] * 4)  # 20 s outside the epochs
    assert budget.estimate(5) == pytest.approx(120.0)
    assert budget.next_slot(3, 10, retrain=False) == Slot(epochs=9)  # 20 + 20 * 9 = 200 s left
    clock.t = 230.0  # 70 s left < 20 + 3 * 20: no searched trial, the rest for the last one
    assert budget.next_slot(3, 10, retrain=False).epochs is None
    assert budget.room_for_epoch([20.0, 20.0])  # 70 s >= one 20 s epoch + 20 s evaluation
    clock.t = 270.0
    assert not budget.room_for_epoch([20.0, 20.0])  # 30 s < 40 s
    assert budget.usage() == "4m 30s of 5m 00s (90 %)"


def test_no_budget_means_no_cap():
    budget = StudyBudget(None, now=FakeClock(1.0))
    budget.record(wall_s=100.0, epoch_seconds=[50.0])
    assert budget.next_slot(3, 10) == Slot(epochs=10) and budget.room_for_epoch([1e9])
    # --trials alone: the last trial is the final one, unless the study is too short for one
    assert budget.next_slot(3, 10, last=True) == Slot(final=True)
    assert budget.next_slot(3, 10, last=True, retrain=False) == Slot(epochs=10)


@pytest.mark.parametrize(
    "spans,seconds",
    [
        ([], 0.0),
        ([(0, 10), (10, 25)], 25.0),  # one after another (sessions, or trials of one)
        ([(0, 10), (5, 20), (30, 35)], 25.0),  # two workers side by side: counted once
        ([(5, 6), (0, 10)], 10.0),  # one inside another
    ],
)
def test_wall_seconds_counts_overlapping_trials_once(spans, seconds):
    assert wall_seconds(spans) == seconds


def test_a_resumed_budget_has_what_earlier_sessions_left():
    """Regression (noticed at stop 31): every session of a study had the whole --budget, so
    resuming after Ctrl-C at 25m of 30m ran 30m more."""
    budget = StudyBudget(300.0, now=FakeClock(), spent=250.0)
    assert budget.remaining() == 50.0 and budget.usage() == "4m 10s of 5m 00s (83 %)"
    assert budget.first_slot(None).seconds == pytest.approx(49.5)  # its 75 s share: 50 s left
    # regression (hostile pass): "train.budget: '-1.5s' is not a duration" for a default trial
    # to run again (interrupted) in a study with nothing left
    assert StudyBudget(300.0, now=FakeClock(), spent=299.5).first_slot(None) is None
    assert StudyBudget(300.0, now=FakeClock(), spent=310.0).first_slot(None) is None


@pytest.mark.parametrize("ran, told", [(True, 39.0), (False, 37.0)])
def test_a_session_that_ran_no_trial_adds_nothing_to_the_usage(ran, told):
    """Regression (hostile pass): a rerun of a finished study said 38s of 40s at its end where
    it began at 37s; spent_seconds stores nothing for a session without a trial."""
    clock = FakeClock()
    budget = StudyBudget(40.0, now=clock, spent=37.0)
    clock.t += 2.0  # the session's start-up and files
    budget.stop(counted=ran)
    assert budget.elapsed() == told


def test_the_spent_seconds_are_the_wall_time_of_the_sessions_and_trials():
    import datetime

    import optuna

    from finetune.tools.tune.history import ALIVE_ATTR, STARTED_ATTR, spent_seconds

    t0 = 1_800_000_000.0  # epoch seconds
    study = optuna.create_study()
    study.set_user_attr("session 1800000000.000 11", [t0, t0 + 160])  # its trials and files
    # (state, start, seconds recorded, Optuna's end, last epoch logged): trial 1 is another
    # worker's; trial 2's seconds end it, not Optuna's time; trial 3 was added by hand
    # (Optuna's local times only); trials 5 and 7 failed in dead workers, found dead 600 s
    # later, 7 after logging epochs until 340 (regression: it counted nothing, so a resumed
    # study had its time again); trial 6 runs now, at t0 + 700
    spans = [("COMPLETE", 0, 100.0, 100, None), ("PRUNED", 50, 100.0, 100, None),
             ("FAIL", 200, 30.0, 45, None), ("COMPLETE", 250, None, 10, None),
             ("WAITING", None, None, None, None), ("FAIL", 400, None, 600, None),
             ("RUNNING", 650, None, None, None), ("FAIL", 300, None, 600, 340)]  # fmt: skip
    local = lambda x: datetime.datetime.fromtimestamp(t0 + x)  # noqa: E731
    for number, (state, start, seconds, took, alive) in enumerate(spans):
        state = getattr(optuna.trial.TrialState, state)
        attrs = {} if seconds is None else {"seconds": seconds}
        if start is not None and number != 3:
            attrs[STARTED_ATTR] = t0 + start
        if alive is not None:
            attrs[ALIVE_ATTR] = t0 + alive
        study.add_trial(optuna.trial.FrozenTrial(
            number=number, state=state, value=0.5 if state.name == "COMPLETE" else None,
            datetime_start=None if start is None else local(start),
            datetime_complete=None if took is None else local(start + took),
            params={}, distributions={}, user_attrs=attrs, system_attrs={},
            intermediate_values={}, trial_id=number))  # fmt: skip
    # 0-160 (the session, holding trials 0 and 1), 200-230, 250-260, 300-340, 650-700
    assert spent_seconds(study, now=t0 + 700) == pytest.approx(160 + 30 + 10 + 40 + 50)


def simulate(seconds, *, epoch_s, setup_s, eval_s, low=3, high=15, shortest=False):
    """A study's accounting with trials that cost exactly what they were given: a searched trial
    of E epochs costs set-up + evaluation + E epochs (all of them trained, or the ``shortest``
    the space allows), a budgeted one its set-up plus its budget. Returns the trials' slots and
    the seconds used."""
    clock = FakeClock()
    budget = StudyBudget(seconds, now=clock)
    slots = [budget.first_slot(None)]
    while slots[-1] is not None:
        slot: Slot = slots[-1]
        if slot.seconds is not None:
            train_s = slot.seconds
            epochs = [epoch_s] * max(1, int(train_s // epoch_s))
        else:
            epochs = [epoch_s] * (low if shortest else slot.epochs)
            train_s = sum(epochs) + eval_s
        clock.t += setup_s + train_s
        budget.record(wall_s=setup_s + train_s, epoch_seconds=epochs, train_s=train_s)
        if slot.final:  # the study stops after its final trial
            break
        slots.append(budget.next_slot(low, high))
    return [slot for slot in slots if slot is not None], clock.t


@pytest.mark.parametrize(
    "seconds,epoch_s,setup_s,eval_s,shortest",
    [
        (600, 30.0, 10.0, 5.0, False),  # the demo's 10m study (issue 13)
        (600, 30.0, 10.0, 5.0, True),
        (135, 3.0, 8.0, 1.0, False),  # the bench's tune at 3x digits' 45 s
        (135, 3.0, 8.0, 1.0, True),
        (3600, 45.0, 20.0, 10.0, False),
        (240, 20.0, 15.0, 5.0, True),  # barely two trials
    ],
)  # fmt: skip
def test_a_study_uses_its_budget_within_5_percent(seconds, epoch_s, setup_s, eval_s, shortest):
    """Regression: a 10m study on the demo data used 83 % of its budget (2 trials, 8m17s): when
    no trial of the searched minimum epochs fitted, the study stopped; the last trial now gets
    what is left as its run's budget."""
    slots, used = simulate(seconds, epoch_s=epoch_s, setup_s=setup_s, eval_s=eval_s,
                           shortest=shortest)  # fmt: skip
    assert 0.95 * seconds <= used <= seconds, slots
    assert slots[0].seconds == pytest.approx(seconds / 4)  # the default run's share
    assert slots[-1].final and slots[-1].seconds is not None  # the final one gets the rest
    assert slots[-1].seconds >= 0.4 * seconds  # about twice the default run, less its set-up
    assert not any(slot.final for slot in slots[:-1])


@pytest.mark.parametrize("trials,share", [(None, 1 / 4), (1, 0.99), (2, 1 / 2), (5, 1 / 4)])
def test_the_default_trial_gets_its_share_of_the_budget(trials, share):
    assert StudyBudget(300.0, now=FakeClock()).first_slot(trials).seconds == pytest.approx(
        300.0 * share
    )
    assert StudyBudget(None, now=FakeClock()).first_slot(trials).seconds is None


def test_searched_trials_leave_the_final_half_to_the_final_trial():
    clock = FakeClock()
    budget = StudyBudget(400.0, now=clock)
    clock.t = 100.0
    budget.record(wall_s=100.0, epoch_seconds=[20.0] * 4, train_s=90.0)  # 20 s overhead
    # 300 s left, 200 kept for the final trial: 20 + 20 * e <= 100
    assert budget.next_slot(3, 10) == Slot(epochs=4)
    assert budget.next_slot(3, 10, last=True).final  # the trial limit: this one is the final
    clock.t = 150.0  # 50 s before the final half < a shortest trial (80 s): the final trial
    assert budget.next_slot(3, 10) == Slot(seconds=(250.0 - 10.0 - 3.0) * 0.99, final=True)
    clock.t = 365.0  # 35 s left < one epoch and the overhead (40 s): stop
    assert budget.next_slot(3, 10) is None


def test_a_study_of_two_trials_has_no_final_trial_and_searched_trials_leave_its_share():
    clock = FakeClock()
    budget = StudyBudget(400.0, now=clock)
    clock.t = 100.0
    budget.record(wall_s=100.0, epoch_seconds=[20.0] * 4, train_s=90.0)  # 20 s overhead
    # --trials 2: the second trial is the last, a searched config given the rest
    assert budget.next_slot(3, 10, last=True, retrain=False) == Slot(seconds=(300 - 13) * 0.99)
    assert budget.reserve(retrain=False) == 0.0 and budget.reserve() == 200.0
    # a searched trial is stopped before it eats into the final trial's 200 s
    assert budget.room_for_epoch([20.0]) and budget.room_for_epoch([20.0], reserve=200.0)
    clock.t = 170.0  # 230 s left: 30 s outside the final share < an epoch and the evaluation
    assert budget.room_for_epoch([20.0]) and not budget.room_for_epoch([20.0], reserve=200.0)


def test_the_final_trial_is_not_pruned():
    import optuna

    from finetune.tools.tune.reporter import TrialReporter

    class Always(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return True

    study = optuna.create_study(direction="maximize", pruner=Always())
    record = [{"epoch": 1, "val_accuracy": 0.1, "epoch_seconds": 1.0}]
    TrialReporter(study.ask(), epochs=None, budget=StudyBudget(None), prune=False).log_epochs(
        record
    )
    with pytest.raises(optuna.TrialPruned):
        TrialReporter(study.ask(), epochs=None, budget=StudyBudget(None)).log_epochs(record)


def test_a_failed_final_trial_is_tried_again(image_folder, tmp_path, monkeypatch):
    """Regression (review): a final trial that failed ended the study with "the final trial
    retrained the best config", throwing away the rest of the budget."""
    from finetune.tools.tune.trial import TrialRunner

    train, failed = TrialRunner._train, []

    def fail_first_final(self, params, run_dir, reporter):
        if "retrained" in reporter.note and not failed:
            failed.append(run_dir)
            raise RuntimeError("out of memory")
        return train(self, params, run_dir, reporter)

    monkeypatch.setattr(TrialRunner, "_train", fail_first_final)
    report = quiet_tune(image_folder, tmp_path, **roomy())
    assert failed and report.stop_reason.startswith("the final trial retrained")
    *_, failed_final, final = report.trials
    assert failed_final.state == "fail" and "out of memory" in failed_final.note
    assert final.state == "complete" and "retrained" in final.note


def test_a_study_ends_with_the_best_config_retrained_within_its_budget(image_folder, tmp_path):
    """A fake clock that moves 0.5 s each time it is read: trials cost a few fake seconds, so a
    16 s budget holds a few of them, and the study must stop starting them in time (the
    study's own reads of the clock count too, so its total runs past the trials' sum). The
    budgeted trials (the default run's quarter, the final one's rest) train for real seconds.
    Regression: the last trial was a new sampled config given the rest of the budget, so the
    time it had could not make the best config better (issue 13's 10m study on the demo data
    ended with the default run as its best)."""
    report = quiet_tune(image_folder, tmp_path, **roomy())
    assert report.stop_reason.startswith("the final trial retrained the best config")
    # none failed; a searched trial may be stopped for room (each clock read costs 0.5 s here)
    assert len(report.trials) >= 2 and all(t.state != "fail" for t in report.trials)
    # every trial started only when one of its length fitted: their fake time fits the budget
    assert sum(t.seconds for t in report.trials) <= 16.0
    assert report.usage.endswith("%)") and report.budget_s == 16.0
    assert report.trials[0].note == "the default run" and report.trials[0].params == {"mixup": 0.0}
    *searched, final = report.trials
    done = [t for t in searched if t.state == "complete"]
    best = max(done, key=lambda t: t.value)  # the first of equals, as Optuna's best_trial
    # it learns from the trial it retrains (a teacher), unless that config mixes images
    taught = f", taught by trial {best.number}" if best.params["mixup"] == 0.0 else ""
    assert final.note == (f"trial {best.number}'s config, retrained with the rest of the budget"
                          f" on the training and validation images{taught}")  # fmt: skip
    assert final.params == {k: v for k, v in best.params.items() if k != "epochs"}
    # the refit has no validation score: it stands on its config's, and wins the tie
    assert final.value == best.value and final.best
    saved = read_run_config(final.run_dir)["finetune"]
    assert saved["config"]["data"]["train_on_val"] is True and "val" not in saved["data"]["counts"]
    assert saved["config"]["train"]["teacher"] == (best.run_dir if taught else None)
    best_yaml = (tmp_path / "study" / "study" / "best.yaml").read_text()
    assert "its config's: the run trained on the validation images too" in best_yaml


def test_trials_without_a_budget_end_with_the_final_trial(image_folder, tmp_path):
    """Regression: under --trials N alone the N-th trial was one more searched config, so a
    study without a budget never refitted or taught its result (the gains measured in
    docs/benchmarks.md came only with --budget)."""
    space = {"lr": SPACE["lr"], "epochs": {"low": 1, "high": 2}}
    report = quiet_tune(image_folder, tmp_path, trials=3, search=space, epochs=None)
    assert report.stop_reason == "the final trial retrained the best config"
    *searched, final = report.trials
    best = max(searched, key=lambda t: t.value)  # the first of equals, as Optuna's best_trial
    assert final.note == (f"trial {best.number}'s config, retrained on the training and "
                          f"validation images, taught by trial {best.number}")  # fmt: skip
    assert final.params == {k: v for k, v in best.params.items() if k != "epochs"}
    assert final.value == best.value and final.best
    saved = read_run_config(final.run_dir)["finetune"]["config"]
    retrained = read_run_config(best.run_dir)["finetune"]["config"]
    assert saved["train"]["epochs"] == retrained["train"]["epochs"]  # its trial's, not sampled
    assert saved["data"]["train_on_val"] is True and saved["train"]["teacher"] == best.run_dir


def test_trials_without_a_budget_refit_or_teacher_end_with_a_searched_trial(image_folder, tmp_path):
    """Such a final trial would repeat its parent's run (same config, epochs and seed)."""
    report = quiet_tune(image_folder, tmp_path, trials=3, refit=False, teach=False)
    assert report.stop_reason == "3 trials reached" and "retrained" not in report.trials[-1].note


def test_without_a_budget_the_final_trial_waits_for_other_workers(image_folder, tmp_path):
    """Regression (review of 4d60e51): under --trials alone a worker started the final trial
    while another worker's searched trial still ran, so a better config found there was never
    retrained; the last worker to end runs it."""
    import optuna

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    quiet_tune(image_folder, tmp_path, trials=2, storage=storage, study="s")
    optuna.load_study(study_name="s", storage=storage).ask()  # trial 2, another worker's
    report = quiet_tune(image_folder, tmp_path, trials=4, storage=storage, study="s")
    assert report.stop_reason == "the final trial is left to the worker still running trial 2"
    assert [t.state for t in report.trials] == ["complete", "complete", "running"]


@pytest.mark.parametrize("search", [None, {"lr": SPACE["lr"]}])  # searched; every field fixed
def test_without_a_budget_a_config_is_retrained_once(image_folder, tmp_path, search):
    """Regression (hostile pass over 76c44b5): a finished --trials 3 study resumed with
    --trials 4 retrained the same config again, with the same losses (every field fixed: the
    same command again did)."""
    storage, fixed = f"sqlite:///{tmp_path / 'study.db'}", {"lr": 0.002} if search else {}
    kw = dict(storage=storage, study="s", search=search or SPACE, **fixed)
    first = quiet_tune(image_folder, tmp_path, trials=3, **kw)
    retrained = [t.number for t in first.trials if "retrained" in t.note]
    second = quiet_tune(image_folder, tmp_path, trials=4, **kw)
    assert [t.number for t in second.trials if "retrained" in t.note] == retrained
    assert len(second.trials) == (len(first.trials) if search else 4)  # fixed: nothing to add


def test_no_refit_of_an_untaught_config_has_no_final_trial(image_folder, tmp_path):
    """Regression (hostile pass over 76c44b5): --no-refit with a config that mixes images (not
    taught) ran a copy of its parent as the final trial."""
    report = quiet_tune(image_folder, tmp_path, trials=3, refit=False, mixup=0.2)
    assert report.stop_reason == "3 trials reached" and "retrained" not in report.trials[-1].note


def test_no_refit_keeps_the_validation_images_out_of_the_final_trial(image_folder, tmp_path):
    report = quiet_tune(image_folder, tmp_path, **roomy(refit=False))
    final = report.trials[-1]
    assert "config, retrained with the rest of the budget" in final.note
    assert "validation images" not in final.note
    saved = read_run_config(final.run_dir)["finetune"]
    assert saved["config"]["data"]["train_on_val"] is False and "val" in saved["data"]["counts"]


def test_no_teach_trains_the_final_trial_on_the_labels_alone(image_folder, tmp_path):
    report = quiet_tune(image_folder, tmp_path, **roomy(teach=False))
    final = report.trials[-1]
    assert final.note.endswith("on the training and validation images")
    assert read_run_config(final.run_dir)["finetune"]["config"]["train"]["teacher"] is None


def test_a_final_trial_that_mixes_images_is_not_taught(image_folder, tmp_path):
    """A teacher's soft targets cannot go through timm's Mixup: the final trial of a config
    with mixup learns from the labels alone, and says so, instead of failing."""
    from finetune.events import listening

    seen = []
    with listening(seen.append):
        report = quiet_tune(image_folder, tmp_path,
                            **roomy(search={"lr": SPACE["lr"], **SHORT}, mixup=0.2))  # fmt: skip
    final = report.trials[-1]
    assert final.state == "complete" and "taught" not in final.note
    assert read_run_config(final.run_dir)["finetune"]["config"]["train"]["teacher"] is None
    assert any("learns from the labels alone: its config mixes images" in e.message for e in seen)


def test_train_on_val_cannot_be_fixed_in_a_study(image_folder, tmp_path):
    with pytest.raises(ConfigError, match="train_on_val cannot be fixed.*--refit"):
        quiet_tune(image_folder, tmp_path, trials=3, train_on_val=True)


def test_the_first_trial_is_the_default_run(image_folder, tmp_path):
    """Regression: fields whose default is None ("auto": lr, layer_decay, the augmentation
    strength) were sampled from the first trial on, so a study never ran the config it
    replaces. The first trial records only the base values that lie in the space (mixup 0.0),
    samples nothing, and its run makes the automatic choices."""
    import json

    report = quiet_tune(image_folder, tmp_path, trials=2)
    first, second = report.trials
    assert first.params == {"mixup": 0.0} and first.note == "the default run"
    assert set(second.params) == {"lr", "mixup"} and second.note.startswith("near trial 0's")
    run = json.loads((Path(first.run_dir) / "config.json").read_text())["finetune"]
    assert any(r.startswith("lr ") for r in run["auto"])  # the run chose its own LR


# --------------------------------------------------------------------------- pruning


def test_pruning_stops_a_trial_below_the_median(tmp_path):
    import optuna

    from finetune.tools.tune.reporter import TrialReporter

    study = optuna.create_study(direction="maximize",
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=2))  # fmt: skip
    for score in (0.9, 0.8):  # two finished trials that were good at epoch 1
        trial = study.ask()
        trial.report(score, 1)
        study.tell(trial, score)
    bad = study.ask()
    reporter = TrialReporter(bad, epochs=5, budget=StudyBudget(None))
    reporter.note = "near trial 0's config (lr moved)"  # regression: the reason replaced it
    with pytest.raises(optuna.TrialPruned, match="^near trial 0's config .*; pruned after epoch 1"):
        reporter.log_epochs([{"epoch": 1, "val_accuracy": 0.1, "epoch_seconds": 1.0}])
    good = study.ask()
    TrialReporter(good, epochs=5, budget=StudyBudget(None)).log_epochs(
        [{"epoch": 1, "val_accuracy": 0.95, "epoch_seconds": 1.0}]
    )  # no exception: it trains on


def test_the_median_pruner_judges_a_trial_from_its_second_epoch():
    """Regression: the median pruner judged epoch 1 (docs/tuning.md says from epoch 2), so the
    two-worker test's fourth one-epoch trial was pruned now and then (3 complete of 4)."""
    import optuna

    from finetune.tools.tune.reporter import TrialReporter
    from finetune.tools.tune.study import _pruner

    study = optuna.create_study(direction="maximize", pruner=_pruner(optuna, "median"))
    for score in (0.9, 0.8, 0.85):  # three finished trials, good at epochs 1 and 2
        trial = study.ask()
        trial.report(score, 1)
        trial.report(score, 2)
        study.tell(trial, score)
    bad = study.ask()
    reporter = TrialReporter(bad, epochs=5, budget=StudyBudget(None))
    reporter.log_epochs([{"epoch": 1, "val_accuracy": 0.1, "epoch_seconds": 1.0}])  # not judged
    with pytest.raises(optuna.TrialPruned, match="pruned after epoch 2"):
        reporter.log_epochs([{"epoch": 2, "val_accuracy": 0.1, "epoch_seconds": 1.0}])


def test_a_pruned_trial_is_told_pruned_and_keeps_its_run(image_folder, tmp_path):
    """The reporter's exception travels out of adapt (through the trainer's closing of loggers
    and the run directory's claim) and the study records the trial as pruned."""
    report = quiet_tune(image_folder, tmp_path, trials=2, pruner="median", epochs=2,
                        search={"lr": [1e-3]})  # fmt: skip
    assert [t.state for t in report.trials] == ["complete", "complete"]  # the median pruner
    import optuna  # waits for 3 trials; a trial pruned by hand below

    from finetune.tools.tune.reporter import TrialReporter

    class Always(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return True

    study = optuna.create_study(direction="maximize", pruner=Always())
    trial = study.ask()
    from tests.conftest import tiny_run

    with pytest.raises(optuna.TrialPruned):
        tiny_run(image_folder, epochs=2, output=str(tmp_path / "pruned"),
                 callbacks=[TrialReporter(trial, epochs=2, budget=StudyBudget(None))])  # fmt: skip
    assert (tmp_path / "pruned" / "model.safetensors").exists()  # the epoch it trained


def test_a_trial_the_budget_stops_completes_with_its_best_score(image_folder, tmp_path):
    """Regression: the budget's stop pruned the trial, so one ahead of the default run when the
    budget stopped it could not be chosen (elpv seed 13: 0.873 against 0.860 after 4 of 6
    epochs). Its run now ends after the epoch as if on time: a finished run, a complete trial."""
    import optuna

    from finetune.tools.tune.reporter import TrialReporter
    from tests.conftest import tiny_run

    clock = FakeClock()
    budget = StudyBudget(100.0, now=clock)
    budget.record(wall_s=10.0, epoch_seconds=[1.0])  # 9 s outside the epochs
    clock.t = 95.0  # 5 s left: no room for another epoch and the final evaluation
    reporter = TrialReporter(optuna.create_study().ask(), epochs=3, budget=budget)
    result = tiny_run(image_folder, epochs=3, output=str(tmp_path / "r"), callbacks=[reporter])
    assert [r["epoch"] for r in result.metrics["epochs"]] == [1]
    assert (result.run_dir / "model.safetensors").exists()
    assert (
        reporter.note
        == reporter.stopped()
        == "stopped after epoch 1: the budget had no room for another"
    )


def test_a_study_counts_a_trial_the_budget_stopped_as_complete(image_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(StudyBudget, "room_for_epoch", lambda self, seconds, reserve=0.0: False)
    report = quiet_tune(image_folder, tmp_path, trials=2, epochs=3, search={"lr": [1e-3]})
    assert [(t.state, t.epochs) for t in report.trials] == [("complete", 1)] * 2
    assert report.trials[1].note == "stopped after epoch 1: the budget had no room for another"
    assert report.best_run_dir is not None


# --------------------------------------------------------------------------- results


@pytest.mark.parametrize(
    "finals,best",
    [
        ({}, 0),
        ({2: 10.0}, 2),
        # two refits of trial 0's config: the longer. Regression (hostile pass): the refit of a
        # larger --budget, trained longer, was never the result
        ({2: 10.0, 3: 20.0}, 3),
        ({2: 20.0, 3: 10.0}, 2),
    ],
)
def test_the_final_trial_wins_a_tie(finals, best):
    """Regression: a 30 s study whose trials all scored 1.0 named the default run (trial 0) as
    its best, not the final run of the same config trained twice as long."""
    import optuna

    from finetune.tools.tune.results import FINAL_ATTR, trial_rows

    study = optuna.create_study(direction="maximize")
    for number, value in enumerate((1.0, 0.5, 1.0, 1.0)):
        trial = study.ask()
        if number in finals:
            trial.set_user_attr(FINAL_ATTR, 0)
            trial.set_user_attr("train_s", finals[number])
        study.tell(trial, value)
    assert [row.number for row in trial_rows(study) if row.best] == [best]


def test_best_yaml_reproduces_the_best_trial(image_folder, tmp_path):
    import json

    from safetensors.torch import load_file

    from finetune import adapt
    from finetune.config import FinetuneConfig

    report = quiet_tune(image_folder, tmp_path, trials=2, deterministic=True)
    study = tmp_path / "study" / "study"
    assert {p.name for p in report.files} >= {"trials.csv", "best.yaml", "history.png"}
    best = FinetuneConfig.from_yaml(study / "best.yaml")
    saved = json.loads((report.best_run_dir / "config.json").read_text())["finetune"]["config"]
    trial = FinetuneConfig.from_dict(saved)
    assert best == trial.with_overrides(output=None)
    again = adapt(recipe=str(study / "best.yaml"), dataset=image_folder, verbose=False,
                  output=str(tmp_path / "again"))  # fmt: skip
    assert again.metrics["val"]["accuracy"] == report.best_value
    a, b = (load_file(str(d / "model.safetensors")) for d in (report.best_run_dir, again.run_dir))
    assert all((a[k] == b[k]).all() for k in a)
    with open(study / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["number"] for r in rows] == ["0", "1"] and {"lr", "mixup"} <= set(rows[0])
    assert sum(r["best"] == "True" for r in rows) == 1


def test_a_study_in_sqlite_resumes(image_folder, tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    first = quiet_tune(image_folder, tmp_path, trials=2, storage=storage, study="s")
    assert len(first.trials) == 2
    second = quiet_tune(image_folder, tmp_path, trials=3, storage=storage, study="s")
    assert [t.number for t in second.trials] == [0, 1, 2]  # one more, numbered after them
    assert sorted(p.name for p in (tmp_path / "study" / "trials").iterdir()) == [
        "trial-0000", "trial-0001", "trial-0002"]  # fmt: skip


def test_a_finished_study_run_again_says_so_and_runs_nothing(image_folder, tmp_path):
    """Regression (noticed at stop 31): the same command again after a budgeted study finished
    searched for a whole budget more and retrained the best config once more."""
    import optuna

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    sessions = lambda: [k for k in optuna.load_study(study_name="s", storage=storage).user_attrs
                        if k.startswith("session ")]  # noqa: E731  # fmt: skip
    first = quiet_tune(image_folder, tmp_path, **roomy(storage=storage, study="s"))
    assert first.stop_reason.startswith("the final trial retrained") and len(sessions()) == 1
    again = quiet_tune(image_folder, tmp_path, **roomy(storage=storage, study="s"))
    # a session that runs no trial is not counted. Regression (hostile pass): each rerun of a
    # finished study added its 1.3 s of files to the time a larger --budget goes on with
    assert len(sessions()) == 1
    assert again.stop_reason == ("finished in an earlier session (its final trial ran under "
                                 "--budget 16s); a larger --budget goes on with the difference")  # fmt: skip
    assert [t.number for t in again.trials] == [t.number for t in first.trials]
    assert again.best_run_dir == first.best_run_dir


def test_a_study_run_again_counts_its_earlier_sessions_time(image_folder, tmp_path):
    """Regression (noticed at stop 31): a finished --trials study run again wrote
    ``elapsed_s: 0.0`` to summary.json; its time is the wall time of all its trials."""
    import json

    import optuna

    from finetune.tools.tune.history import spent_seconds

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    first = quiet_tune(image_folder, tmp_path, trials=2, storage=storage, study="s")
    spent = spent_seconds(optuna.load_study(study_name="s", storage=storage))
    # the session from its first trial to its files written: all but the session's set-up
    assert spent == pytest.approx(first.elapsed_s, abs=0.5)
    again = quiet_tune(image_folder, tmp_path, trials=2, storage=storage, study="s",
                       clock=FakeClock())  # this session takes no time  # fmt: skip
    assert again.stop_reason == "2 trials reached" and again.elapsed_s == pytest.approx(spent)
    summary = json.loads((tmp_path / "study" / "study" / "summary.json").read_text())
    assert (summary["elapsed_s"], summary["usage"]) == (round(spent, 1), again.usage)


@pytest.mark.parametrize(
    "seconds,refit_s,why",
    [
        (
            50.0,
            None,
            "a 50.0s refit of trial 0's config would train less than trial 0 did "
            "(1m 40s), so none was run",
        ),  # fmt: skip
        (150.0, None, None),
        # a finished study given a slightly larger --budget: less than its first refit
        (
            150.0,
            200.0,
            "a 2m 30s refit of trial 0's config would train less than trial 2 did "
            "(3m 20s), so none was run",
        ),  # fmt: skip
        (250.0, 200.0, None),
        (None, None, None),  # no budget: the final trial trains as configured
    ],
)
def test_a_refit_shorter_than_the_runs_of_its_config_is_not_run(seconds, refit_s, why):
    """Regressions: a study resumed near the end of its budget retrained the best config for
    what was left, and that shorter run became the result; a finished study given a larger
    --budget retrained it for less than its first refit (hostile pass)."""
    from finetune.tools.tune.history import short_refit
    from finetune.tools.tune.results import FINAL_ATTR

    trials = [("COMPLETE", 0.9, {"train_s": 100.0}), ("COMPLETE", 0.8, {})]
    if refit_s is not None:
        trials.append(("COMPLETE", 0.9, {"train_s": refit_s, FINAL_ATTR: 0}))
    assert short_refit(_study_with(trials), Slot(seconds=seconds, final=True)) == why


@pytest.mark.parametrize(
    "retrained,reason",
    [
        (0, "the final trial retrained the best config with the rest of the budget"),
        (
            1,
            "the final trial retrained trial 1's config with the rest of the budget (a final "
            "trial of the best, trial 0's, was running elsewhere)",
        ),  # fmt: skip
    ],
)
def test_the_stop_reason_names_a_retrained_config_that_is_not_the_best(retrained, reason):
    """Regression (hostile pass): a rerun just after a worker was killed in its final trial saw
    that trial as another worker's, retrained the next-best config, and said it had retrained
    the best."""
    from finetune.tools.tune.history import final_reason
    from finetune.tools.tune.results import FINAL_ATTR

    study = _study_with([("COMPLETE", 0.9, {}), ("COMPLETE", 0.8, {}),
                         ("COMPLETE", 0.9 - 0.1 * retrained, {FINAL_ATTR: retrained})])  # fmt: skip
    assert final_reason(study, retrained) == reason


def test_a_final_trial_left_waiting_is_run_by_the_next_session(image_folder, tmp_path):
    """A worker that stopped between enqueueing its final trial and asking for it leaves the
    trial waiting in the storage; the next session runs it as the final trial (budgeted, the
    retrained config) instead of enqueueing another."""
    import optuna

    from finetune.tools.tune.results import FINAL_ATTR

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    first = quiet_tune(image_folder, tmp_path, trials=1, storage=storage, study="s")
    assert first.trials[0].params == {"mixup": 0.0}
    study = optuna.load_study(study_name="s", storage=storage)
    study.enqueue_trial({"mixup": 0.0}, user_attrs={FINAL_ATTR: 0})  # then the worker stopped
    second = quiet_tune(image_folder, tmp_path, budget=8, storage=storage, study="s",
                        epochs=None)  # fmt: skip
    assert [t.number for t in second.trials] == [0, 1]  # no second final trial enqueued
    final = second.trials[1]
    assert final.state == "complete" and final.params == {"mixup": 0.0}
    assert final.note == ("trial 0's config, retrained with the rest of the budget on the "
                          "training and validation images, taught by trial 0")  # fmt: skip
    assert second.stop_reason.startswith("the final trial retrained")


def test_a_study_interrupted_in_its_default_trial_runs_it_when_resumed(image_folder, tmp_path,
                                                                        monkeypatch):  # fmt: skip
    """Regression (hostile-input pass): Ctrl-C in the default trial left it failed, and the
    resumed study began with searched trials and never ran the config it replaces."""
    from finetune.tools.tune.trial import TrialRunner

    def interrupted(self, *args):
        raise KeyboardInterrupt

    from finetune.api import Interrupted

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    with monkeypatch.context() as m:
        m.setattr(TrialRunner, "_train", interrupted)
        with pytest.raises(Interrupted):
            quiet_tune(image_folder, tmp_path, trials=2, storage=storage, study="s")
    report = quiet_tune(image_folder, tmp_path, trials=2, storage=storage, study="s")
    assert [(t.state, t.note) for t in report.trials[:2]] == [("fail", "interrupted (Ctrl-C)"), ("complete", "the default run")]  # fmt: skip


@pytest.mark.parametrize("storage", [False, True])
def test_ctrl_c_in_a_study_says_how_it_goes_on(image_folder, tmp_path, monkeypatch, storage):
    """Regression (hostile-input pass): Ctrl-C in a trial said "continue with finetune run
    --resume <the trial's run>", which finishes one run, not the study."""
    from finetune.api import Interrupted
    from finetune.tools.tune.trial import TrialRunner

    train, calls = TrialRunner._train, []

    def second_interrupted(self, *args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return train(self, *args)

    monkeypatch.setattr(TrialRunner, "_train", second_interrupted)
    url = f"sqlite:///{tmp_path / 'study.db'}" if storage else None
    with pytest.raises(Interrupted) as e:
        quiet_tune(image_folder, tmp_path, trials=4, storage=url)
    if storage:
        assert f"its trials are kept in {url}" in str(e.value)
        assert str(e.value).endswith("run the same finetune tune command to resume it")
    else:
        assert "it was in memory and cannot resume" in str(e.value)
    rows = list(csv.DictReader(open(tmp_path / "study" / "study" / "trials.csv")))
    assert [r["state"] for r in rows] == ["complete", "fail"]


def test_the_first_ctrl_c_stops_the_study_before_its_next_trial_a_second_at_once():
    """Regressions (hostile-input passes): a KeyboardInterrupt raised inside a finalizer was
    swallowed (with a traceback) and the study ran to its end, exit 0; one raised in a trial's
    wrap-up failed a trial that had trained. The first Ctrl-C is now remembered, not raised."""
    import signal

    from finetune.tools.tune.interrupt import raise_if_interrupted, stop_on_interrupt

    with stop_on_interrupt():
        raise_if_interrupted()  # nothing pressed yet
        signal.raise_signal(signal.SIGINT)  # not raised where it lands
        with pytest.raises(KeyboardInterrupt):
            raise_if_interrupted()
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)  # the second: at once
    raise_if_interrupted()  # outside a study: nothing remembered


def test_ctrl_c_in_a_trials_set_up_stops_it_at_once():
    """Regression (hostile pass): the first Ctrl-C in a trial's set-up (its teacher pass, its
    image cache) was remembered and acted on after the trial's first epoch, minutes on a large
    data set. It now stops the set-up at once; once training began it is remembered again."""
    import signal

    from finetune.tools.tune.interrupt import (
        raise_if_interrupted,
        set_up_done,
        setting_up,
        stop_on_interrupt,
    )

    with stop_on_interrupt():
        with pytest.raises(KeyboardInterrupt), setting_up():
            signal.raise_signal(signal.SIGINT)
            pytest.fail("the set-up went on")
    with stop_on_interrupt(), setting_up():
        set_up_done()  # the first epoch was logged: the wrap-up completes
        signal.raise_signal(signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):  # remembered: the study stops before its next
            raise_if_interrupted()
    with stop_on_interrupt():  # pressed before the set-up began (while the study sampled)
        signal.raise_signal(signal.SIGINT)
        with pytest.raises(KeyboardInterrupt), setting_up():
            pytest.fail("the set-up began")


def test_a_trial_interrupted_in_its_set_up_trains_nothing(image_folder, tmp_path, monkeypatch):
    """The set-up's Ctrl-C fails the trial as interrupted and stops the study, no epoch run."""
    import signal

    import finetune.api
    from finetune.api import Interrupted

    def set_up_interrupted(*args, **kwargs):
        signal.raise_signal(signal.SIGINT)
        pytest.fail("the set-up went on")

    monkeypatch.setattr(finetune.api, "adapt", set_up_interrupted)
    with pytest.raises(Interrupted):
        quiet_tune(image_folder, tmp_path, trials=2)
    rows = list(csv.DictReader(open(tmp_path / "study" / "study" / "trials.csv")))
    assert [(r["state"], r["note"]) for r in rows] == [("fail", "interrupted (Ctrl-C)")]


def test_a_resumed_session_knows_the_earlier_trials_costs(image_folder, tmp_path):
    """Regression: a resumed budgeted session had no estimate of a trial's cost, so its first
    searched trial trained the space's top epochs uncapped. The stored costs now prime it."""
    import optuna

    from finetune.tools.tune.history import prime

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    quiet_tune(image_folder, tmp_path, trials=2, storage=storage, study="s")
    trials = optuna.load_study(study_name="s", storage=storage).trials
    epochs = [t.user_attrs["epoch_seconds"] for t in trials]
    assert [len(x) for x in epochs] == [1, 1]
    budget = StudyBudget(1e6, now=FakeClock())
    assert budget.estimate(1) is None  # nothing known: next_slot would not cap the epochs
    prime(optuna.load_study(study_name="s", storage=storage), budget)
    walls = [t.user_attrs["seconds"] for t in trials]
    rest = sum(w - e[0] for w, e in zip(walls, epochs)) / 2
    assert budget.estimate(1) == pytest.approx(rest + max(e[0] for e in epochs))


def _study_with(states):
    """An in-memory study of trials (state, value, user attributes), in order."""
    import optuna

    study = optuna.create_study(direction="maximize")
    dist = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2)}
    for number, (state, value, attrs) in enumerate(states):
        study.add_trial(optuna.trial.create_trial(
            state=getattr(optuna.trial.TrialState, state), value=value,
            params={"lr": 1e-3 * (number + 1)}, distributions=dist, user_attrs=attrs))  # fmt: skip
    return study


@pytest.mark.parametrize(
    "states,retrained",
    [
        ([("COMPLETE", 0.9, {}), ("COMPLETE", 0.8, {})], 0),  # the best
        ([("COMPLETE", 0.9, {}), ("COMPLETE", 0.8, {}), ("RUNNING", None, {"final_of": 0})], 1),
        # trial 2 retrained trial 0's config; trial 3 is retraining it now: neither is free
        (
            [
                ("COMPLETE", 0.7, {}),
                ("COMPLETE", 0.8, {}),
                ("COMPLETE", 0.9, {"final_of": 0}),
                ("RUNNING", None, {"final_of": 0}),
            ],
            1,
        ),  # fmt: skip
        ([("COMPLETE", 0.9, {}), ("RUNNING", None, {"final_of": 0})], 0),  # none free: the best
        # another worker's searched trial is running: nothing to skip (review finding)
        ([("COMPLETE", 0.9, {}), ("COMPLETE", 0.8, {}), ("RUNNING", None, {})], 0),
        # a final trial scored best: its config is its parent's
        ([("COMPLETE", 0.7, {}), ("COMPLETE", 0.8, {}), ("COMPLETE", 0.9, {"final_of": 0})], 0),
        ([("PRUNED", None, {}), ("FAIL", None, {})], None),  # nothing complete: sampled
    ],
)
def test_a_second_worker_retrains_the_next_best_config(states, retrained):
    """Regression: two workers on one storage both ended by retraining the same best config.
    A config whose final trial another worker is running is skipped."""
    from finetune.tools.tune.history import to_retrain

    got = to_retrain(_study_with(states))
    assert (got.number if got is not None else None) == retrained


@pytest.mark.parametrize("final", [True, False])
def test_a_dead_workers_trial_is_failed_and_a_final_one_retried(
    image_folder, tmp_path, monkeypatch, final
):
    """Regression: a worker killed mid-trial left it RUNNING for good: it counted towards
    --trials and was never run. The storage's heartbeat lets the next worker fail it; a final
    (or default) trial is run again, a searched one replaced by a new sample."""
    import time

    import optuna

    from finetune.tools.tune import study as study_module
    from finetune.tools.tune.results import FINAL_ATTR

    monkeypatch.setattr(study_module, "HEARTBEAT_S", 1)
    monkeypatch.setattr(study_module, "GRACE_S", 1)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    quiet_tune(image_folder, tmp_path, trials=1, storage=storage, study="s")
    rdb = study_module._rdb_storage(optuna, storage)
    study = optuna.load_study(study_name="s", storage=rdb)
    params = {"mixup": 0.0} if final else {"lr": 3e-3, "mixup": 0.2}  # a final: trial 0's
    study.enqueue_trial(params, user_attrs={FINAL_ATTR: 0} if final else {})
    with pytest.warns(UserWarning, match="Heartbeat"):  # optuna: ask() outside optimize()
        dead = study.ask()
    rdb.record_heartbeat(dead._trial_id)  # then the worker was killed
    time.sleep(2.5)  # > GRACE_S without a heartbeat: stale
    report = quiet_tune(image_folder, tmp_path, trials=2, storage=storage, study="s")
    assert [t.state for t in report.trials] == ["complete", "fail", "complete"]
    assert report.trials[1].note == "its worker stopped before it ended (killed, lost or stalled)"
    retried = optuna.load_study(study_name="s", storage=storage).trials[2]
    assert (retried.system_attrs.get("failed_trial") == 1) is final
    assert (retried.params == params) is final
    if final:
        assert report.stop_reason.startswith("the final trial retrained")


def test_a_waiting_retry_is_shown_as_waiting_not_as_the_dead_trial():
    """Regression: Optuna's retry copies the dead trial's user attributes, so until a worker
    took it the retry's row in the table and trials.csv showed the dead trial's run folder and
    note."""
    import warnings

    import optuna

    from finetune.tools.tune.results import trial_rows

    study = _study_with([("COMPLETE", 0.9, {}), ("FAIL", None, {"run_dir": "/o/trial-0001"})])
    retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)  # optuna >= 4.9
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = (retry or optuna.storages.RetryFailedTrialCallback)()
        retry(study, study.trials[1])
        study.enqueue_trial({"lr": 1e-3})  # a queued trial that is no retry
        # trial 4: a retry of trial 1 that died too; its retry (5) retries 4, not 1
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState.FAIL, system_attrs=study.trials[2].system_attrs))  # fmt: skip
        retry(study, study.trials[4])
    rows = trial_rows(study)
    assert [r.state for r in rows] == ["complete", "fail", "waiting", "waiting", "fail", "waiting"]
    assert rows[2].run_dir is None and rows[3].run_dir is None
    assert rows[2].note == "waiting: the retry of trial 1, the next session or worker runs it"
    assert rows[3].note == "waiting: the next session or worker runs it"
    assert rows[5].note == "waiting: the retry of trial 4, the next session or worker runs it"


def _ended_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.parametrize(
    "worker, gone",
    [
        (None, False),  # a trial from before WORKER_ATTR: left to the heartbeats
        ("another-host NS ENDED", False),  # another machine's: left to the heartbeats
        ("HOST boot/pid:[1] ENDED", False),  # a container with the host's name, or a machine
        ("HOST NS OWN", False),  # this process
        ("HOST NS ENDED", True),
        ("HOST NS not-a-pid", False),
    ],
)
def test_a_worker_here_is_gone_when_its_process_is(worker, gone):
    import os

    from finetune.tools.tune.history import _gone, worker_id

    host, namespace, _ = worker_id().split(" ")
    if worker:
        for name, value in [("HOST", host), ("NS", namespace), ("OWN", str(os.getpid()))]:
            worker = worker.replace(name, value)
        worker = worker.replace("ENDED", str(_ended_pid()))
    assert _gone(worker) is gone


def test_a_killed_final_trial_on_this_machine_is_retried_at_once(image_folder, tmp_path):
    """Regression (hostile pass): a rerun just after a kill -9 in the final trial took it for a
    live one until its heartbeats had been missed for GRACE_S (3 minutes), retrained the
    next-best config and marked the study finished. A trial of this machine whose process is
    gone is failed at once and, as a final trial, retried with the best config; the retry
    keeps the trial's role, not its run (RUN_ATTRS)."""
    import optuna

    from finetune.tools.tune import study as study_module
    from finetune.tools.tune.history import RUN_ATTRS, WORKER_ATTR, fail_stale, worker_id
    from finetune.tools.tune.results import FINAL_ATTR

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    quiet_tune(image_folder, tmp_path, trials=1, storage=storage, study="s")
    rdb = study_module._rdb_storage(optuna, storage)
    study = optuna.load_study(study_name="s", storage=rdb)
    # a next-best config for a wrong retry to pick: below any accuracy
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, value=-1.0))
    study.enqueue_trial({"mixup": 0.0}, user_attrs={FINAL_ATTR: 0, "run_dir": "gone"})
    with pytest.warns(UserWarning, match="Heartbeat"):  # optuna: ask() outside optimize()
        killed = study.ask()
    rdb.record_heartbeat(killed._trial_id)  # fresh: the heartbeats alone would wait 3 minutes
    machine = worker_id().rpartition(" ")[0]
    killed.set_user_attr(WORKER_ATTR, f"{machine} {_ended_pid()}")
    fail_stale(study)
    retry = study.trials[3]
    assert retry.state.name == "WAITING" and retry.user_attrs == {FINAL_ATTR: 0}
    assert not set(RUN_ATTRS) & set(retry.user_attrs)
    report = quiet_tune(image_folder, tmp_path, trials=3, storage=storage, study="s")
    assert [t.state for t in report.trials] == ["complete", "complete", "fail", "complete"]
    assert report.trials[2].note == "its worker stopped before it ended (killed, lost or stalled)"
    retried = optuna.load_study(study_name="s", storage=storage).trials[3]
    assert retried.system_attrs.get("failed_trial") == 2
    assert retried.user_attrs[FINAL_ATTR] == 0  # the best config, not the next best
    assert retried.user_attrs[WORKER_ATTR] == worker_id()  # its own run, in this process


def test_the_final_trial_plans_its_own_image_size(image_folder, tmp_path):
    """Regression: the final trial kept the image size the default trial chose for a quarter of
    the study (elpv, 90 s x 3: 17 epochs at 64 px, where a 90 s run alone trains at 96 px).
    Searched trials, capped in epochs, keep it; a budgeted final trial plans its own."""
    import optuna

    from finetune.tools.tune.trial import TrialRunner

    fixed = {k: v for k, v in TINY.items() if k != "img_size"}
    runner = TrialRunner.prepare("test_resnet", image_folder, recipe=None, overrides=fixed,
                                 search=load_search_space(SPACE), study="s",
                                 output=tmp_path / "o")  # fmt: skip
    runner.inherited = {"img_size": 48}  # what the default trial chose
    study = optuna.create_study(direction="maximize")
    budget = StudyBudget(100.0, now=FakeClock())
    _, searched, _ = runner._params(study, study.ask(), budget, Slot(epochs=2))
    _, final, _ = runner._params(study, study.ask(), budget, Slot(seconds=50.0, final=True))
    assert searched["img_size"] == 48 and "img_size" not in final and final["budget"] == "50.0s"


@pytest.mark.parametrize(
    "run_dir, run, why",
    [
        ("gone", {}, "gone is not on this machine"),  # another worker's trial, shared storage
        (None, {}, "None is not on this machine"),
        ("here", {"mixup": 0.2}, "its config mixes images"),
        ("here", {}, None),
    ],
)
def test_the_final_trial_is_taught_only_by_a_run_it_can_read(
    image_folder, tmp_path, run_dir, run, why
):
    from types import SimpleNamespace

    from finetune.events import listening
    from finetune.tools.tune.trial import TrialRunner

    (tmp_path / "here").mkdir()
    (tmp_path / "here" / "config.json").write_text("{}")
    runner = TrialRunner.prepare("test_resnet", image_folder, recipe=None, overrides=TINY,
                                 search=load_search_space(SPACE), study="s",
                                 output=tmp_path / "o")  # fmt: skip
    path = str(tmp_path / run_dir) if run_dir else None
    seen = []
    with listening(seen.append):
        got = runner._teacher(SimpleNamespace(user_attrs={"run_dir": path}), run)
    if why is None:
        assert got == {"teacher": path} and not seen
    else:
        assert got == {} and seen[0].message.startswith("the final trial learns from the labels")
        assert seen[0].message.endswith(why)


def test_an_in_memory_study_refuses_a_folder_with_trials(image_folder, tmp_path):
    quiet_tune(image_folder, tmp_path, trials=1)
    with pytest.raises(FileExistsError, match="already holds trials of a study; pass --storage"):
        quiet_tune(image_folder, tmp_path, trials=1)


def test_workers_on_one_sqlite_file_take_waiting_trials_one_at_a_time(tmp_path):
    """Regression (CI of 2026-12-01): sqlite has no row locks, and Optuna's pop of a waiting
    trial reads it WAITING, then marks it RUNNING, so both workers of the two-worker test took
    trial 0; one failed on the other's run folder lock and both exited 2. A worker's ask now
    waits for the file lock beside the storage."""
    import fcntl
    import threading

    import optuna

    from finetune.tools.tune.study import _asking

    db = tmp_path / "s.db"
    study = optuna.create_study(storage=f"sqlite:///{db}")
    study.enqueue_trial({"x": 1.0})
    ask, got = _asking(study.ask, f"sqlite:///{db}"), []
    with open(f"{db}.lock", "a") as held:  # another worker is asking now
        fcntl.flock(held, fcntl.LOCK_EX)
        worker = threading.Thread(target=lambda: got.append(ask()))
        worker.start()
        worker.join(0.5)
        assert not got  # it waits for the lock
        fcntl.flock(held, fcntl.LOCK_UN)
    worker.join(10)
    assert [t.number for t in got] == [0]


def test_a_trial_is_named_after_its_worker_when_asked_and_not_asked_after_ctrl_c():
    """Regressions (hostile pass): a worker killed between its ask and its trial's first
    attribute left a trial no one could tell was dead for 3 minutes (counted in the budget up
    to now; a final trial of the best config looked alive to the rerun); a Ctrl-C between
    trials created the next trial and failed it, unrun."""
    import signal

    import optuna

    from finetune.tools.tune.history import WORKER_ATTR, worker_id
    from finetune.tools.tune.interrupt import stop_on_interrupt
    from finetune.tools.tune.study import _asking

    study = optuna.create_study()
    ask = _asking(study.ask, None)
    assert ask().user_attrs[WORKER_ATTR] == worker_id()
    with stop_on_interrupt():
        signal.raise_signal(signal.SIGINT)  # between trials: remembered
        with pytest.raises(KeyboardInterrupt):
            ask()
    assert len(study.trials) == 1


def test_a_second_ctrl_c_while_an_interrupted_study_writes_its_files_keeps_the_message(
    image_folder, tmp_path, monkeypatch
):
    """Regression (hostile pass): a second Ctrl-C while the interrupted study wrote its files
    ended it with "interrupted (Ctrl-C)" alone, without how to resume."""
    from finetune.api import Interrupted
    from finetune.tools.tune.trial import TrialRunner

    def interrupted(self, *args):
        raise KeyboardInterrupt

    def second(self, *args):
        raise KeyboardInterrupt

    monkeypatch.setattr(TrialRunner, "_train", interrupted)
    monkeypatch.setattr(TrialRunner, "write_results", second)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    with pytest.raises(Interrupted) as e:
        quiet_tune(image_folder, tmp_path, trials=2, storage=url)
    assert str(e.value).endswith("run the same finetune tune command to resume it")


def test_two_workers_search_one_sqlite_study(image_folder, tmp_path):
    """Two processes, one study. Regression: workers starting together on a new sqlite file
    raced to create its tables ("table studies already exists", a duplicate alembic_version
    row) and one exited with an error."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    argv = [sys.executable, "-m", "finetune", "tune", "--data", str(image_folder), "--backbone",
            "test_resnet", "--no-pretrained", "--img-size", "32", "--batch-size", "4",
            "--num-workers", "0", "--epochs", "1", "--trials", "4", "--storage", storage,
            "--study", "two", "--output", str(tmp_path / "study"), "--search",
            str(tmp_path / "space.yaml")]  # fmt: skip
    (tmp_path / "space.yaml").write_text("lr: {low: 1.0e-4, high: 1.0e-2, log: true}\n")
    workers = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, cwd=tmp_path) for _ in range(2)]  # fmt: skip
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    import optuna

    study = optuna.load_study(study_name="two", storage=storage)
    numbers = [t.number for t in study.trials if t.state.name == "COMPLETE"]
    assert 4 <= len(numbers) <= 5  # the last count can race by one trial per extra worker
    dirs = [Path(t.user_attrs["run_dir"]) for t in study.trials]
    assert len(set(dirs)) == len(dirs) and all((d / "model.safetensors").exists() for d in dirs)
    assert all("trial" in out for out in outputs)  # both searched, neither waited


def test_tracked_trials_are_grouped_under_the_study(image_folder, tmp_path):
    from mlflow.tracking import MlflowClient

    quiet_tune(image_folder, tmp_path, trials=2, study="grouped", log=("mlflow",))
    client = MlflowClient(tracking_uri=(tmp_path / "study" / "mlruns").as_uri())
    runs = client.search_runs([client.get_experiment_by_name("grouped").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["trial-0000", "trial-0001"]
    assert {r.data.tags["finetune.study"] for r in runs} == {"grouped"}


def test_no_budget_and_no_trials_is_an_error(image_folder, tmp_path):
    with pytest.raises(ConfigError, match="tune needs --budget"):
        quiet_tune(image_folder, tmp_path)
