"""Resume state: what ``--resume`` needs to continue a run bit-identically.

``trainer_state.pt`` holds the weights, optimizer, schedule, GradScaler, EMA, RNG and data-order
state and the history, as tensors and plain containers only: it loads with
``torch.load(weights_only=True)``. The weights travel inside it (one atomic rename, so a kill can
never pair new weights with an old optimizer state); ``last.safetensors`` beside it is for people
and tools. A run stopped mid-epoch records how many batches of the epoch finished, and the resumed
run skips them without reading them.

Example:
    >>> save_state(trainer, "runs/x", epoch=3, history=history, loader=train_loader)  # doctest: +SKIP
    >>> epoch, history = load_state(trainer, "runs/x", train_loader)  # doctest: +SKIP
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .._io import (
    LAST_WEIGHTS_NAME,
    METRICS_NAME,
    STATE_NAME,
    WEIGHTS_NAME,
    atomic_path,
    write_jsonl,
)
from ..errors import first_line

if TYPE_CHECKING:
    from .trainer import Trainer

__all__ = ["FitHistory", "save_state", "load_state", "skip_batches"]


@dataclass
class FitHistory:
    """Per-epoch records and the best epoch so far (saved in the resume state)."""

    epochs: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_val_accuracy: float = -1.0
    seconds: float = 0.0
    stopped_early: int = 0  # epoch at which early stopping ended the run (0 = it did not)
    resumed_at: float = 0.0  # seconds trained before a --resume (not saved: from ``seconds``)
    # why a logger ended the run early (trainer ``halt``; not saved: a resume goes on)
    halted: str = ""


def save_state(
    trainer: "Trainer", run_dir, *, epoch: int, history: FitHistory, loader, batches_done: int = 0
) -> None:
    """Atomically write ``last.safetensors`` and ``trainer_state.pt``: ``epoch`` epochs are
    finished, plus ``batches_done`` batches of the next one (Ctrl-C or a mid-epoch save)."""
    from safetensors.torch import save_model

    run_dir = Path(run_dir)
    model = trainer.inner
    with atomic_path(run_dir / LAST_WEIGHTS_NAME) as tmp:
        save_model(model, tmp, force_contiguous=True)
    generator = getattr(loader, "generator", None)
    state = dict(
        epoch=epoch,
        batches_done=batches_done,
        step=trainer.step,
        model={k: v.detach().cpu() for k, v in model.state_dict().items()},
        stopped_early=history.stopped_early,
        optimizer=trainer.optimizer.state_dict(),
        scheduler=trainer.scheduler.state_dict(),
        scaler=trainer.scaler.state_dict(),
        history=dict(
            epochs=history.epochs,
            best_epoch=history.best_epoch,
            best_val_accuracy=history.best_val_accuracy,
            seconds=history.seconds,
        ),
        rng=_rng_state(),
        loader_rng=generator.get_state() if generator else None,
        ema=trainer.ema.state_dict() if trainer.ema is not None else None,
        # --budget: the plan the schedule follows (None: none)
        total_steps=trainer.total_steps,
        warmup_steps=trainer.scheduler.warmup if hasattr(trainer.scheduler, "warmup") else None,
    )
    with atomic_path(run_dir / STATE_NAME) as tmp:
        torch.save(state, tmp)


def load_state(trainer: "Trainer", run_dir, loader) -> tuple[int, FitHistory]:
    """Restore a run written by ``save_state`` into ``trainer``; returns (epochs done, history).
    ``metrics.jsonl`` is rewritten from the saved history (epochs after the state were lost)."""
    run_dir = Path(run_dir)
    try:
        state = torch.load(run_dir / STATE_NAME, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        if (run_dir / WEIGHTS_NAME).exists():  # finished with --no-keep-state (or it was deleted)
            raise FileNotFoundError(
                f"{run_dir / STATE_NAME} not found: the run kept only its weights "
                "(--no-keep-state), so it cannot be resumed or extended; start a new run "
                f"(--weights {run_dir / WEIGHTS_NAME} starts from its weights)"
            ) from None
        raise FileNotFoundError(
            f"{run_dir / STATE_NAME} not found: the run never finished "
            "an epoch, so there is nothing to resume; start it again"
        ) from None
    except Exception as e:  # a truncated or foreign file
        raise ValueError(
            f"{run_dir / STATE_NAME}: cannot read ({type(e).__name__}: {e}); "
            "the resume state is damaged"
        ) from None
    done = state.get("epoch", 0) if isinstance(state, dict) else 0
    budgeted = isinstance(state, dict) and bool(state.get("total_steps"))
    # a budgeted run plans its own epochs (train.epochs is not its length): regression, a 1h
    # run that planned 40 epochs and was stopped after 12 could not be resumed ("--epochs 10")
    if isinstance(done, int) and done > trainer.train.epochs and not budgeted:
        raise ValueError(
            f"{run_dir} already trained {done} epochs; --epochs {trainer.train.epochs} would "
            "not extend it (give more epochs than that, or use the run as it is)"
        )
    try:
        epoch, history = _restore(trainer, state, loader)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        # regression: wrong keys or another architecture's state ended in a traceback
        raise ValueError(
            f"{run_dir / STATE_NAME}: does not fit this run ({first_line(e)[:160]}); it is "
            "damaged or from another run: restore it, or start a new run"
        ) from None
    write_jsonl(run_dir / METRICS_NAME, history.epochs)
    return epoch, history


def _restore(trainer: "Trainer", state: dict, loader) -> tuple[int, FitHistory]:
    # the param groups the interrupted run had when it saved: a mid-epoch state (batches_done)
    # was saved after its running epoch's stages thawed. Regression: Ctrl-C in the epoch a stage
    # thawed at gave a state whose optimizer "does not fit this run"
    trainer.thaw(state["epoch"] + (1 if state.get("batches_done") else 0))
    trainer.inner.load_state_dict(state["model"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    if state.get("total_steps"):  # a budgeted run: its planned length, then its schedule state
        trainer.total_steps = int(state["total_steps"])
        trainer.epochs = -(-trainer.total_steps // trainer.scheduler.steps_per_epoch)
        trainer.scheduler.replan(
            trainer.total_steps, step=state["step"], warmup=state.get("warmup_steps")
        )
    trainer.scheduler.load_state_dict(state["scheduler"])
    trainer.scaler.load_state_dict(state["scaler"])
    if trainer.ema is not None and state.get("ema") is not None:
        trainer.ema.load_state_dict(state["ema"])
    trainer.step = state["step"]
    trainer.scheduler.step_update(trainer.step)  # the same LR, or the re-planned one (--epochs)
    trainer.skip_batches = state.get("batches_done", 0)  # stopped mid-epoch: skip what ran
    _set_rng_state(state["rng"])
    generator = getattr(loader, "generator", None)
    if generator is not None and state["loader_rng"] is not None:
        generator.set_state(state["loader_rng"])
    h = state["history"]
    history = FitHistory(
        list(h["epochs"]),
        h["best_epoch"],
        h["best_val_accuracy"],
        h["seconds"],
        state.get("stopped_early", 0),
        resumed_at=h["seconds"],
    )
    return state["epoch"], history


def skip_batches(loader, skip: int):
    """``loader`` from its ``skip``-th batch on, reading none of the skipped samples (reading them
    would also draw augmentation randomness the uninterrupted run drew only once)."""
    if not isinstance(loader, torch.utils.data.DataLoader) or loader.sampler is None:
        return iter(list(loader)[skip:])
    indices = list(loader.sampler)[skip * loader.batch_size :]
    # a throwaway generator: the iterator's base seed must not come from the global RNG (nor
    # from the loader's, which already drew it for this epoch before the interruption)
    return iter(
        torch.utils.data.DataLoader(
            loader.dataset,
            batch_size=loader.batch_size,
            sampler=indices,
            num_workers=loader.num_workers,
            collate_fn=loader.collate_fn,
            pin_memory=loader.pin_memory,
            drop_last=loader.drop_last,
            generator=torch.Generator(),
        )
    )


def _rng_state() -> dict:
    np_state = np.random.get_state()
    return dict(
        torch=torch.get_rng_state(),
        cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        python=list(random.getstate()[1]),
        python_pos=random.getstate()[2],
        numpy=torch.from_numpy(np_state[1].astype("int64")),
        numpy_pos=int(np_state[2]),
    )


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate((3, tuple(state["python"]), state["python_pos"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype("uint32"), state["numpy_pos"]))
