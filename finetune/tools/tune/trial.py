"""One study's trials: the fixed part of every trial's config, the loop that asks Optuna for a
trial, fits it to its share of the budget (``budget.py``), runs it with ``adapt`` and tells Optuna
how it went, and the per-epoch reporter that prunes.

The first trial of a new study is the default run: the base config (defaults, recipe, given
flags) with nothing sampled, so every "auto" field gets the run's automatic choice, under a study
budget budgeted like ``finetune run --budget``; the next ones start near the best config
(``neighbour.py``). The last trial of a budgeted study is the final one: the best config so far
(its parameters enqueued, nothing sampled, not pruned) trained with the rest of the budget, about
twice the default run's time, on the training and validation images unless ``refit`` is off
(``train_on_val``; its score is then its config's). Under ``--trials N`` alone the N-th trial is
the final one, trained for the epochs of the trial it retrains (before, it was one more searched
trial, so a study without a budget never refitted or taught its result). Regression: fields whose
default is None (lr, layer_decay, the augmentation strength) were sampled from the first trial
on, so a study never ran the config it replaces. Searched trials train at the image size the
default trial chose (unless ``img_size`` is given or searched): a budgeted CPU run picks a small
size, and trials at the pretrained size would cost many times the epochs the budget measured. The
final trial, budgeted, plans its own size for its budget, as ``finetune run --budget`` would.
Regression: it kept the default trial's size, chosen for a quarter of the study, so on elpv (90 s
x 3) it trained 17 epochs at 64 px where a 90 s run alone trains at 96 px.

Example:
    >>> runner = TrialRunner.prepare("resnet50", "photos", recipe=None, search=space,
    ...                              overrides={}, study=None, output=None)  # doctest: +SKIP
    >>> reason = runner.search(study, budget, trials=10)  # doctest: +SKIP
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..._io import read_run_config
from ...config import FinetuneConfig
from ...errors import ConfigError, first_line
from ...events import emit
from ...train.loggers import tracking_group
from .budget import Slot, StudyBudget, clock_text
from .final import repeats, untaught
from .history import (
    STARTED_ATTR,
    counted,
    fail_stale,
    final_reason,
    finished_under,
    mark_finished,
    prime,
    record_session,
    running_searched,
    short_refit,
    to_retrain,
    waiting,
)
from .interrupt import raise_if_interrupted, setting_up
from .neighbour import STARTUP_TRIALS, propose
from .preflight import check_before_trials
from .reporter import TrialReporter, optuna_module, quiet_experimental
from .results import (
    FINAL_ATTR,
    trial_rows,
    write_best_yaml,
    write_plots,
    write_summary,
    write_trials_csv,
)
from .space import SearchSpace

__all__ = [
    "TrialRunner",
    "TrialReporter",
    "optuna_module",
    "quiet_experimental",
    "DEFAULT_ATTR",
    "FINAL_ATTR",
]

MAX_FAILURES = 3  # trials failing in a row: a bug or a broken setup, not a bad config
DEFAULT_ATTR = "default_run"  # user attribute of the enqueued first trial
# a neighbour's (neighbour.py): the trial it moves, the fields it sets (the rest as configured)
NEAR_ATTR, NEAR_KEYS_ATTR, MOVED_ATTR = "neighbour_of", "neighbour_keys", "moved"


@dataclass
class TrialRunner:
    """What every trial shares: the model, data, recipe and fixed overrides, the space, where the
    trials go."""

    model: Optional[str]
    dataset: Optional[str]
    recipe: Optional[str]
    fixed: dict[str, Any]
    space: SearchSpace
    base: FinetuneConfig
    study_name: str
    output: Path
    score_name: Optional[str] = None
    failures: list[str] = field(default_factory=list)
    inherited: Optional[dict[str, Any]] = None  # the default trial's image size, once known
    refit: bool = True  # the final trial trains on the validation images too (module docstring)
    teach: bool = True  # the final trial learns from the trial it retrains (train.teacher)
    began: Optional[float] = None  # this session's first trial, epoch seconds (record_session)

    @classmethod
    def prepare(cls, model, dataset, *, recipe, search: SearchSpace, overrides: dict, study,
                output, refit: bool = True, teach: bool = True) -> "TrialRunner":  # fmt: skip
        """Check the fixed config once (errors before any trial), fix the given fields, and
        make the space concrete for the backbone."""
        fixed = {k: v for k, v in overrides.items() if k not in ("output", "output.output")}
        dataset = str(Path(dataset).expanduser().resolve()) if dataset is not None else None
        named = {"name": model} if model else {}
        base = FinetuneConfig.resolve(recipe=recipe, **named, **fixed,
                                      **({"path": dataset} if dataset else {}))  # fmt: skip
        if base.data.path is None:
            raise ValueError("tune needs --data (an image folder or CSV manifest)")
        if base.data.train_on_val:
            raise ConfigError(
                "tune compares trials on the validation images, so train_on_val "
                "cannot be fixed; the final trial refits on them (--refit)"
            )
        name = study or f"{Path(base.data.path).name}-{base.backbone.name}"
        out = Path(output) if output is not None else Path("runs") / f"tune-{_safe(name)}"
        stages, modules = check_before_trials(base, output=out)  # bad input: before any trial
        space = search.without(list(fixed) + (["name"] if model else []))
        space = space.with_stages(stages, modules)
        if "cache_images" not in fixed and "data.cache_images" not in fixed:
            fixed["cache_images"] = "disk"  # the first trial decodes; the others read the file
        return cls(model, dataset, recipe, fixed, space, base, name, out, refit=refit, teach=teach)

    def has_trials(self) -> bool:
        trials = self.output / "trials"
        return trials.is_dir() and any(trials.iterdir())

    def describe(self, storage, budget: StudyBudget) -> str:
        limit = "no time limit" if budget.seconds is None else f"budget {budget.usage()}"
        searched = ", ".join(self.space.keys) or "nothing (every field is fixed)"
        return (f"study {self.study_name} ({storage or 'in memory'}) -> {self.output}; "
                f"searching {searched}; {limit}")  # fmt: skip

    def default_params(self, budgeted: bool) -> dict[str, Any]:
        """The default trial's recorded parameters (``SearchSpace.start_point``); a budgeted one
        plans its own epochs."""
        start = self.space.start_point(self.base)
        if budgeted:
            start.pop("epochs", None)
        return start

    def search(self, study, budget: StudyBudget, trials: Optional[int]) -> str:
        """Run trials until ``trials`` or the budget says stop; returns why it stopped."""
        # a study of one or two has no final trial, nor one without a budget that would only
        # repeat its parent's run (--no-refit --no-teach: same config, epochs and seed)
        retrain = (trials is None or trials >= 3) and (
            budget.seconds is not None or self.refit or self.teach
        )
        prime(study, budget)
        done = finished_under(study)  # regression: a rerun spent its budget again, refit again
        if done is not None and budget.seconds is not None and budget.seconds <= done:
            return (f"finished in an earlier session (its final trial ran under --budget "
                    f"{clock_text(done)}); a larger --budget goes on with the difference")  # fmt: skip
        while True:
            raise_if_interrupted()
            fail_stale(study)  # a crashed worker's trial is not counted as running forever
            if trials is not None and counted(study) >= trials:
                return f"{trials} trials reached"
            # nothing searched: the default run, then its refit (regression: repeated copies)
            fixed = not self.space.keys and any(t.state.name == "COMPLETE" for t in study.trials)
            if fixed:  # without a budget, only a refit or a teacher can add to it
                slot = budget.final_slot() if retrain and not self._repeats(study, budget) else None
            else:
                slot = self._slot(study, budget, trials, retrain)
            if slot is None:
                return ("every field is fixed: the default run is the only config" if fixed
                        else "the budget has no room for another trial")  # fmt: skip
            if slot.final and budget.spent and (short := short_refit(study, slot)):
                return short
            if slot.final and budget.seconds is None and (busy := running_searched(study)):
                # the final trial retrains the best of them all: the last worker to end runs it
                return f"the final trial is left to the worker still running trial {busy[-1]}"
            self.began = self.began or time.time()  # a session counts from its first trial
            state, final = self.run_one(study, budget, slot, reserve=budget.reserve(retrain))
            record_session(study, self.began, time.time())  # kept if this process is killed
            if state == "COMPLETE" and final is not None:
                mark_finished(study, budget.seconds)
                return final_reason(study, final, budgeted=budget.seconds is not None)
            if state == "COMPLETE" and slot.final:
                rest = " had the rest" if budget.seconds is not None else ""
                return f"the last trial (a searched config: no trial had completed){rest}"

    def _slot(self, study, budget: StudyBudget, trials: Optional[int], retrain: bool):
        """The next trial's share of the budget (None: no trial fits). A final trial left
        waiting (enqueued by a worker that stopped, or by another worker) gets the final one."""
        queued = waiting(study)
        if any(attrs.get(DEFAULT_ATTR) for attrs in queued):
            return budget.first_slot(trials)
        if any(FINAL_ATTR in attrs for attrs in queued):
            return budget.final_slot()
        param = self.space.get("epochs")
        low, high = (param.low, param.high) if param else (self.base.train.epochs,) * 2
        last = trials is not None and counted(study) == trials - 1
        slot = budget.next_slot(low, high, last=last, retrain=retrain)
        if slot is not None and slot.final and (why := self._repeats(study, budget)):
            emit("info", f"no final trial: {why}; a searched one instead", tune=True)
            return Slot(epochs=high)
        return slot

    def _repeats(self, study, budget: StudyBudget) -> Optional[str]:  # with this study's flags
        return repeats(study, self.base, budget, self.refit, self.teach)

    def run_one(self, study, budget: StudyBudget, slot: Slot, reserve: float = 0.0):
        """Ask, run, tell: one trial, through ``study.optimize`` so that an RDB storage records
        its heartbeat (``storage``) and another worker can fail it if this process dies.
        Returns its state (``COMPLETE``, ``PRUNED``, ``FAIL``) and, for a final trial, the
        number of the trial whose config it retrained (else None)."""
        seen: dict[str, Any] = {}
        if slot.final:
            self._enqueue_final(study)
        elif not waiting(study):
            self._enqueue_neighbour(study, slot)
        try:
            with quiet_experimental():  # optimize fails stale trials, an experimental API
                study.optimize(lambda t: self._objective(study, t, budget, slot, reserve, seen),
                               n_trials=1, catch=())  # fmt: skip
        except (KeyboardInterrupt, Exception) as e:
            if "number" not in seen:  # the storage failed before a trial began
                raise
            note = seen["note"] = first_line(e).removesuffix(": ")
            stopped = not isinstance(e, Exception) or type(e).__name__ == "Interrupted"
            # the default run's config is fixed: its bad input (ValueError: config, data;
            # OSError: weights, files) fails every retry the same way. Regression: it was
            # retried and the one error printed four times
            if stopped or (isinstance(e, (ValueError, OSError)) and seen.get("default")):
                raise
            emit("warning", f"trial {seen['number']} failed: {note}")
            self.failures.append(note)
            if len(self.failures) >= MAX_FAILURES:
                raise
            return "FAIL", seen.get("final")
        number = seen["number"]
        state = study.trials[number].state.name
        if state == "PRUNED":
            emit("info", f"trial {number}: {seen['note']}", tune=True)
            return "PRUNED", seen.get("final")
        if state == "FAIL":  # Optuna refused the score (not a number): a failure, not a crash
            emit("warning", f"trial {number} failed: its score was not a number")
            self.failures.append("a score that is not a number")
            return "FAIL", seen.get("final")
        self.failures.clear()
        value, best = study.trials[number].value, study.best_value
        score = f"{self.score_name} {value:.4f} (best {best:.4f})"
        if seen.get("refit"):  # trained on the validation images: no score of its own
            score = f"trial {seen['final']}'s {self.score_name} {value:.4f} (refit)"
        stopped = f"; {seen['stopped']}" if seen.get("stopped") else ""  # by the budget
        emit("info", f"trial {number}: {score} in {seen['seconds']:.0f} s{stopped}", tune=True)
        return "COMPLETE", seen.get("final")

    def _objective(self, study, trial, budget: StudyBudget, slot: Slot, reserve: float,
                   seen: dict) -> float:  # fmt: skip
        """One trial's run, its score returned; what ``run_one`` reports goes into ``seen``
        (the trial's number, the retrained trial's, the note, the seconds)."""
        seen["number"] = trial.number
        start, value = budget.now(), None
        trial.set_user_attr(STARTED_ATTR, round(time.time(), 3))  # history.spent_seconds
        reporter = TrialReporter(trial, epochs=None, budget=budget)
        try:
            slot, run, final = self._params(study, trial, budget, slot)
            seen["final"] = final
            run_dir = self.output / "trials" / f"trial-{trial.number:04d}"
            trial.set_user_attr("run_dir", str(run_dir.resolve()))
            reporter.epochs = (
                None if slot.seconds else int(run.get("epochs", self.base.train.epochs))
            )
            reporter.prune = final is None  # a longer schedule is behind shorter ones at epoch k
            reporter.reserve = 0.0 if slot.final else reserve
            default = seen["default"] = bool(trial.user_attrs.get(DEFAULT_ATTR))
            reporter.note = "the default run" if default else ""
            text = _params_text(run, default)
            if NEAR_ATTR in trial.user_attrs:
                moved = ", ".join(trial.user_attrs[MOVED_ATTR])
                reporter.note = f"near trial {trial.user_attrs[NEAR_ATTR]}'s config ({moved} moved)"
                text = f"{reporter.note}: {text}"
            if final is not None:
                refit = bool(run.get("train_on_val"))  # no score of its own: its config's
                reporter.refit_score = study.trials[final].value if refit else None
                seen["refit"] = refit
                on = " on the training and validation images" if refit else ""
                taught = f", taught by trial {final}" if run.get("teacher") else ""
                rest = " with the rest of the budget" if slot.seconds else ""
                reporter.note = f"trial {final}'s config, retrained{rest}{on}{taught}"
                text = f"{reporter.note} ({text})"
            emit("info", f"trial {trial.number}: {text}", tune=True)
            value = self._train(run, run_dir, reporter)
            return value
        except BaseException as e:  # pruned (the reporter's note says why), failed, stopped
            if not isinstance(e, optuna_module().TrialPruned):
                interrupted = not isinstance(e, Exception) or type(e).__name__ == "Interrupted"
                reporter.note = "interrupted (Ctrl-C)" if interrupted else first_line(e)
            raise
        finally:
            seen["note"], seen["seconds"] = reporter.note, budget.now() - start
            seen["stopped"] = reporter.stopped()
            self._record(trial, budget, seen["seconds"], reporter, finished=value is not None)

    def _enqueue_final(self, study) -> None:
        """Enqueue the final trial: the config ``to_retrain`` picks, its epochs planned by the
        run (``_params`` gives an unbudgeted one its parent's). Nothing when a final trial
        already waits, or no trial has completed (the final slot then samples)."""
        if any(FINAL_ATTR in attrs for attrs in waiting(study)):
            return
        best = to_retrain(study)
        if best is not None:
            params = {k: v for k, v in best.params.items() if k != "epochs"}
            study.enqueue_trial(params, user_attrs={FINAL_ATTR: best.number})

    def _enqueue_neighbour(self, study, slot: Slot) -> None:
        """Enqueue a neighbour of the best config so far (``neighbour.py``) while the study has
        fewer than ``STARTUP_TRIALS`` trials (and one has completed); the budget caps epochs."""
        best = to_retrain(study)
        if best is None or counted(study) >= STARTUP_TRIALS:
            return
        caps = {"epochs": slot.epochs} if slot.epochs is not None else {}
        seed = f"{self.base.train.seed}-{len(study.trials)}"  # reproducible
        params, moved = propose(self.space, best, seed=seed, caps=caps)
        attrs = {NEAR_ATTR: best.number, NEAR_KEYS_ATTR: sorted(params), MOVED_ATTR: moved}
        if params:
            study.enqueue_trial(params, user_attrs=attrs)

    def _params(self, study, trial, budget: StudyBudget, slot: Slot):
        """(slot, the run's parameters, the retrained trial's number or None) of an asked
        trial; a final trial that another worker enqueued gets the final slot whatever slot it
        came out of."""
        default = bool(trial.user_attrs.get(DEFAULT_ATTR))
        final = trial.user_attrs.get(FINAL_ATTR)
        if final is not None and not slot.final:
            slot = budget.final_slot() or slot
        keys = set(self.default_params(slot.seconds is not None)) if default else None
        if final is not None:  # the enqueued ones; its epochs are planned or its parent's
            keys = set(study.trials[final].params) - {"epochs"}
        elif NEAR_ATTR in trial.user_attrs:  # the values it moved or kept; the rest as configured
            keys = set(trial.user_attrs[NEAR_KEYS_ATTR]) - ({"epochs"} if slot.seconds else set())
        elif slot.seconds is not None and not default:  # the run plans its epochs
            keys = set(self.space.keys) - {"epochs"}
        caps = {"epochs": slot.epochs} if slot.epochs is not None else {}
        params = self.space.suggest(trial, caps, keys)
        # a budgeted trial (the default, the final) plans its own image size for its budget
        own_size = default or slot.seconds is not None
        run = dict(params, **({} if own_size else self._inherited(study)))
        if final is not None and slot.epochs is not None:  # no room for a final slot: capped
            run["epochs"] = slot.epochs
        elif final is not None and budget.seconds is None:  # the epochs its parent trained
            parent = study.trials[final]
            epochs = parent.params.get("epochs", parent.user_attrs.get("epochs_trained"))
            run.update({"epochs": int(epochs)} if epochs else {})
        if slot.seconds is not None:
            run["budget"] = f"{slot.seconds:.1f}s"
            trial.set_user_attr("budget_s", round(slot.seconds, 1))
        if final is not None and self.refit:
            run["train_on_val"] = True
        if final is not None and self.teach:
            run.update(self._teacher(study.trials[final], run))
        return slot, run, final

    def _teacher(self, parent, run: dict) -> dict[str, Any]:
        """``{"teacher": run_dir}`` of the trial it retrains, or nothing (``final.untaught``)."""
        why = untaught(self.base, parent, run)
        if why is not None:
            emit("info", f"the final trial learns from the labels alone: {why}", tune=True)
            return {}
        return {"teacher": str(parent.user_attrs["run_dir"])}

    def _train(self, params: dict, run_dir: Path, reporter: TrialReporter) -> float:
        from ...api import adapt

        with setting_up(), tracking_group(self.study_name, self.output):
            result = adapt(self.model, self.dataset, recipe=self.recipe, verbose=False,
                           callbacks=[reporter], output=str(run_dir),
                           **{**self.fixed, **params})  # fmt: skip
        self.score_name = reporter.score_name or "val_accuracy"
        reporter.train_s = result.metrics.get("train_seconds")
        scores = [r.get(self.score_name) for r in result.metrics["epochs"]]
        if reporter.refit_score is not None:
            return float(reporter.refit_score)
        return max(float(s) for s in scores if s is not None)

    def _inherited(self, study) -> dict[str, Any]:
        """``img_size`` of the finished default trial, unless the size is given or searched."""
        if self.inherited is not None:
            return self.inherited
        if {"img_size", "data.img_size"} & set(self.fixed) or self.space.get("img_size"):
            self.inherited = {}
            return self.inherited
        for t in study.trials:
            if t.user_attrs.get(DEFAULT_ATTR) and t.state.name == "COMPLETE":
                saved = read_run_config(t.user_attrs["run_dir"])["finetune"]["config"]
                size = saved["data"]["img_size"]
                self.inherited = {"img_size": size} if size else {}
        return self.inherited or {}  # not known yet: as configured

    def _record(self, trial, budget: StudyBudget, wall: float, reporter, *, finished: bool):
        """The trial's costs into the budget and its user attributes (Optuna tells the state):
        ``epoch_seconds`` and ``train_s`` let a later session's budget estimate from them."""
        train_s = reporter.train_s if finished else None
        budget.record(wall_s=wall, epoch_seconds=reporter.epoch_seconds, train_s=train_s)
        self.score_name = self.score_name or reporter.score_name
        trial.set_user_attr("seconds", round(wall, 1))
        trial.set_user_attr("epochs_trained", len(reporter.epoch_seconds))
        trial.set_user_attr("epoch_seconds", [round(x, 4) for x in reporter.epoch_seconds])
        if train_s is not None:
            trial.set_user_attr("train_s", round(train_s, 1))
        if reporter.note:
            trial.set_user_attr("note", reporter.note)

    def write_results(self, study, budget: StudyBudget, reason: str) -> list[Path]:
        """``study/``: trials.csv, best.yaml, summary.json, the plots."""
        folder = self.output / "study"
        folder.mkdir(parents=True, exist_ok=True)
        rows = trial_rows(study)
        files = [write_trials_csv(rows, folder / "trials.csv")]
        best = next((r for r in rows if r.best), None)
        score = self.score_name or "val_accuracy"
        if best is not None and best.run_dir and Path(best.run_dir).is_dir():
            files.append(write_best_yaml(Path(best.run_dir), folder / "best.yaml",
                                         study_name=self.study_name, score=score,
                                         value=best.value))  # fmt: skip
        plots = write_plots(study, folder)
        # the summary, the report and the last line tell the same time
        budget.stop(counted=self.began is not None)
        if self.began is not None:
            record_session(study, self.began, time.time())
        summary = dict(
            study=self.study_name, score=score, stop_reason=reason,
            best_trial=best.number if best else None, best_value=best.value if best else None,
            best_run_dir=best.run_dir if best else None, best_params=best.params if best else {},
            budget_s=budget.seconds, elapsed_s=round(budget.elapsed(), 1), usage=budget.usage(),
            trials={s: sum(r.state == s for r in rows) for s in {r.state for r in rows}},
        )  # fmt: skip
        files.append(write_summary(summary, folder / "summary.json"))
        return files + plots


def _params_text(params: dict, default: bool = False) -> str:
    shown = {k: v for k, v in params.items() if k != "teacher"}  # the note names the trial
    text = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in shown.items())  # fmt: skip
    return f"the default run ({text or 'the config as it is'})" if default else text


def _safe(name: str) -> str:
    # <= 100 characters of a folder name's 255 (regression: "File name too long" for --study)
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)[:100]
