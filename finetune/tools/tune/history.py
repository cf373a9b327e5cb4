"""What a study's trials say, read from its storage (this session's, earlier sessions', other
workers'): the trials waiting to run, the config a final trial retrains, the costs and the wall
time they took, whether an earlier session finished the study.

Example:
    >>> study = optuna.load_study(study_name="s", storage="sqlite:///study.db")  # doctest: +SKIP
    >>> spent_seconds(study), finished_under(study)  # doctest: +SKIP
    (1741.2, 1800.0)
"""

from __future__ import annotations

import copy
import os
import socket
import time
from pathlib import Path
from typing import Optional

from .budget import Slot, StudyBudget, clock_text, wall_seconds
from .reporter import ALIVE_ATTR, optuna_module, quiet_experimental
from .results import FINAL_ATTR

__all__ = ["waiting", "to_retrain", "prime", "fail_stale", "worker_id", "RUN_ATTRS", "counted",
           "spent_seconds", "record_session", "finished_under", "mark_finished", "final_reason",
           "running_searched", "short_refit"]  # fmt: skip

# study attribute: the --budget (seconds) under which a session's final trial completed
FINISHED_ATTR = "finished_budget_s"
SESSION_PREFIX = "session "  # study attributes: a session's [start, end], epoch seconds
STARTED_ATTR = "started_at"  # trial attribute: its start, epoch seconds
WORKER_ATTR = "worker"  # trial attribute: worker_id() of the process running it
# a trial's attributes of its own run, not of its role: a retry of it starts without them
RUN_ATTRS = (STARTED_ATTR, WORKER_ATTR, ALIVE_ATTR, "run_dir", "note", "budget_s", "seconds",
             "epochs_trained", "epoch_seconds", "train_s")  # fmt: skip


def waiting(study) -> list[dict]:
    """The user attributes of the study's enqueued trials that no worker has asked for yet."""
    return [t.user_attrs for t in study.trials if t.state.name == "WAITING"]


def to_retrain(study):
    """The trial whose config the final trial retrains: the best complete one that no other
    worker's final trial is retraining now (several workers on one storage each end with a
    final trial: the second retrains the next-best config, not the same one twice), the best
    when all are; None when no trial completed (the final trial then samples)."""
    done = [t for t in study.trials if t.state.name == "COMPLETE" and t.values]
    if not done:
        return None
    config = lambda t: t.user_attrs.get(FINAL_ATTR, t.number)  # a final trial: its parent's
    running = [t for t in study.trials if t.state.name == "RUNNING"]
    busy = {t.user_attrs[FINAL_ATTR] for t in running if FINAL_ATTR in t.user_attrs}
    free = [t for t in done if config(t) not in busy]
    sign = -1 if study.direction.name == "MAXIMIZE" else 1
    best = min(free or done, key=lambda t: (sign * t.value, t.number))
    return study.trials[config(best)]  # a final trial's config is its parent's


def prime(study, budget: StudyBudget) -> None:
    """Give the budget the costs of the storage's finished trials (an earlier session's, other
    workers'), so a resumed session's first searched trial is capped like later ones.
    Regression: it had no estimate, so its epochs were not capped to what fit."""
    for t in study.trials:
        attrs = t.user_attrs
        if t.state.name in ("COMPLETE", "PRUNED") and attrs.get("epoch_seconds"):
            budget.record(wall_s=attrs["seconds"], epoch_seconds=attrs["epoch_seconds"],
                          train_s=attrs.get("train_s"))  # fmt: skip


def fail_stale(study) -> None:
    """Fail the trials of workers that stopped sending heartbeats (an RDB storage made by
    ``study.py``; nothing otherwise) and, at once, those of this machine's workers whose process
    is gone; the retry of a default or final one waits in the storage for the next ask."""
    with quiet_experimental():
        optuna = optuna_module()
        optuna.storages.fail_stale_trials(study)
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if _gone(t.user_attrs.get(WORKER_ATTR)):
                _fail(optuna, study, t._trial_id)


def worker_id() -> str:
    """This process as ``WORKER_ATTR`` names it: host, boot and pid namespace (Linux: machines
    can share a host name, and containers on one host its name, never a boot id and a pid
    namespace both) and pid."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid").replace(" ", "")  # "pid:[4026531836]"
    except OSError:  # not Linux: the host name alone
        boot, namespace = "-", "-"
    return f"{socket.gethostname()} {boot}/{namespace} {os.getpid()}"


def _gone(worker: Optional[str]) -> bool:
    """Whether ``worker`` (``worker_id()`` of a trial) ran on this machine since its boot, in
    this pid namespace, and its process has ended. Regression (hostile pass): a rerun just after a kill -9 took the killed
    final trial for a live one until its heartbeats had been missed for GRACE_S (3 minutes),
    so it retrained the next-best config and marked the study finished. Another machine's or
    container's worker is left to the heartbeats; so is a reused pid or a zombie not yet reaped
    (they look alive), and Windows, where signal 0 is Ctrl-C."""
    here, _, own_pid = worker_id().rpartition(" ")
    there, _, pid = (worker or "").rpartition(" ")
    if os.name != "posix" or there != here or not pid.isdigit() or pid == own_pid:
        return False
    try:
        os.kill(int(pid), 0)  # signal 0: no signal, only whether the process exists
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: it exists, another user's
        return False
    return False


def _fail(optuna, study, trial_id: int) -> None:
    """Fail a running trial and hand it to the storage's retry callback, as Optuna's
    ``fail_stale_trials`` does with a stale one (another worker may have failed it first)."""
    storage = study._storage  # no public handle; fail_stale_trials uses it too
    try:
        if not storage.set_trial_state_values(trial_id, state=optuna.trial.TrialState.FAIL):
            return
    except optuna.exceptions.UpdateFinishedTrialError:
        return
    getter = (getattr(storage, "get_heartbeat_stale_trial_callback", None)  # optuna >= 4.9
              or getattr(storage, "get_failed_trial_callback", None))  # fmt: skip
    retry = getter() if getter else None  # a storage without heartbeats: no retry
    if retry is not None:
        retry(study, copy.deepcopy(storage.get_trial(trial_id)))


def running_searched(study) -> list[int]:
    """The numbers of the study's running trials that are not final ones (other workers')."""
    return [t.number for t in study.trials
            if t.state.name == "RUNNING" and FINAL_ATTR not in t.user_attrs]  # fmt: skip


def counted(study) -> int:
    """The study's trials that count towards ``trials``: finished, pruned, and running (another
    worker's), not failed ones (a failure is retried)."""
    return sum(t.state.name in ("COMPLETE", "PRUNED", "RUNNING") for t in study.trials)


def spent_seconds(study, now: Optional[float] = None) -> float:
    """Wall seconds the study has spent (``now``: the time, epoch seconds): its sessions (first
    trial to files written, or to the last trial of a killed one) and its trials (start to
    start plus their recorded seconds), overlaps counted once, so workers side by side count
    once. A running trial counts to ``now`` (call ``fail_stale`` first: a dead worker's is then
    failed); a failed one whose end was never recorded (its worker died) counts to its last
    logged epoch (``ALIVE_ATTR``), or nothing without one, as its ``datetime_complete`` is when
    it was found dead. Regression: a trial killed after 20 minutes of training counted
    nothing, so the resumed study had those 20 minutes again. Start times are epoch seconds
    (``STARTED_ATTR``), the same on every machine whatever its time zone; trials before them
    fall back on Optuna's local ``datetime_start``."""
    now = time.time() if now is None else now
    spans = [tuple(v) for k, v in study.user_attrs.items() if k.startswith(SESSION_PREFIX)]
    for t in study.trials:
        attrs, state = t.user_attrs, t.state.name
        start = attrs.get(STARTED_ATTR)
        if start is None and t.datetime_start is not None:
            start = t.datetime_start.timestamp()
        if start is None:
            continue
        if state == "RUNNING":
            spans.append((start, now))
        elif "seconds" in attrs:
            spans.append((start, start + attrs["seconds"]))
        elif ALIVE_ATTR in attrs:  # a dead worker's: to its last epoch
            spans.append((start, attrs[ALIVE_ATTR]))
        elif state != "FAIL" and t.datetime_complete is not None:  # added by hand, not by tune
            spans.append((start, t.datetime_complete.timestamp()))
    return wall_seconds(spans)


def record_session(study, began: float, ended: float) -> None:
    """Record one session's span (epoch seconds) in the study, under a key of its own (several
    workers write at once)."""
    study.set_user_attr(f"{SESSION_PREFIX}{began:.3f} {os.getpid()}", [began, ended])


def finished_under(study) -> Optional[float]:
    """The --budget seconds of the session whose final trial completed, or None."""
    return study.user_attrs.get(FINISHED_ATTR)


def mark_finished(study, seconds: Optional[float]) -> None:
    """Record that the study's final trial completed under ``seconds`` of --budget (the largest
    such budget, when workers finish under different ones)."""
    if seconds is not None and seconds > (finished_under(study) or 0.0):
        study.set_user_attr(FINISHED_ATTR, seconds)


def final_reason(study, final: int, *, budgeted: bool = True) -> str:
    """Why the study stopped after its final trial, naming the config it retrained when that
    was not the best: a final trial of the best was running elsewhere (another worker's, or a
    killed one's, which looks alive until its heartbeats are missed). Regression (hostile
    pass): a rerun just after a kill said it "retrained the best config" while it had
    retrained the next best."""
    searched = [t for t in study.trials
                if t.state.name == "COMPLETE" and t.values and FINAL_ATTR not in t.user_attrs]  # fmt: skip
    best = max(searched, key=lambda t: t.value)
    rest = " with the rest of the budget" if budgeted else ""
    if study.trials[final].value >= best.value:
        return f"the final trial retrained the best config{rest}"
    return (f"the final trial retrained trial {final}'s config{rest} "
            f"(a final trial of the best, trial {best.number}'s, was running elsewhere)")  # fmt: skip


def short_refit(study, slot: Slot) -> Optional[str]:
    """Why a resumed session's final trial is not run: it would train for less than the run
    it retrains, or an earlier final trial of that config, did. None: run it. Regressions: a
    study resumed near the end of its budget (Ctrl-C in its final trial) retrained the best
    config for what was left, and that shorter run became the result; a finished study given
    a slightly larger --budget retrained it again for less than its first refit. A first
    session is not asked: its shares give the final trial about twice the default run's time,
    less only where a budget of seconds is mostly set-up."""
    parent = to_retrain(study)
    if parent is None or slot.seconds is None:
        return None
    refits = [t for t in study.trials
              if t.state.name == "COMPLETE" and t.user_attrs.get(FINAL_ATTR) == parent.number]  # fmt: skip
    longest = max([parent, *refits], key=lambda t: t.user_attrs.get("train_s") or 0.0)
    trained = longest.user_attrs.get("train_s")
    if trained is None or slot.seconds >= trained:
        return None
    text = lambda s: clock_text(s) if s >= 60 else f"{s:.1f}s"  # noqa: E731 (6s < 6s reads wrong)
    return (f"a {text(slot.seconds)} refit of trial {parent.number}'s config would train less "
            f"than trial {longest.number} did ({text(trained)}), so none was run")  # fmt: skip
