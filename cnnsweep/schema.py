"""The stored run, defined once: its states, the keys of its trial attributes, and how its grid
values become Optuna parameters. No dependencies: the store, the report and the CLI all read it.

    waiting -> running -> complete | diverged | pruned | failed
                  ^                               |
                  +---- enqueued again (a retry) --+

A run that is ``complete`` or ``diverged`` is *finished*: it has a result (metrics, history). A
``pruned`` one (a search's pruner stopped it) has its metrics so far, and is not compared with
finished ones. A ``failed`` one has an error and, when it raised, a traceback. ``waiting`` and
``running`` runs are
still pending. A run's identity (``run_id``) is computed by identity.py, versioned per study.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class RunState(StrEnum):
    WAITING = "waiting"
    RUNNING = "running"
    COMPLETE = "complete"
    DIVERGED = "diverged"  # ended early because its loss became NaN or infinite; has a result
    PRUNED = "pruned"  # a search's pruner stopped it (behind the others); never retried
    FAILED = "failed"

    @property
    def pending(self) -> bool:
        """Still to be worked on: waiting, or running now."""
        return self in (RunState.WAITING, RunState.RUNNING)

    @property
    def finished(self) -> bool:
        """Ended with metrics: complete or diverged."""
        return self in (RunState.COMPLETE, RunState.DIVERGED)

    @property
    def ended(self) -> bool:
        """Nothing more will happen to it unless it is run again: finished, pruned or failed."""
        return not self.pending


class Attr(StrEnum):
    """The user attributes of a run's Optuna trial. Stored studies depend on these spellings."""

    # Written once, when the run is enqueued (one storage operation with the trial).
    RUN_ID = "run_id"
    INDEX = "index"  # position in the study's expansion
    LABEL = "label"
    CONFIG = "config"  # the resolved TrainConfig, as JSON
    FACTORS = "factors"  # axis name -> the grid value this run took (bundles as tables)
    ATTEMPT = "attempt"  # 1 for the first try; a retry after a lost worker counts up
    # Written while the run is claimed and trained.
    WORKER = "worker"  # host, boot id, pid of the claimant
    HEARTBEAT = "heartbeat"  # seconds since the epoch
    ENVIRONMENT = "environment"  # versions and device of the worker
    DUPLICATE = "duplicate"  # a second trial of a run enqueued (or sampled) by a racing process
    PRUNED = "pruned"  # true: stopped by a search's pruner (Optuna state PRUNED, like diverged)
    # Written when the run ends.
    RESULT = "result"
    ERROR = "error"
    TRACEBACK = "traceback"


ENQUEUED_ATTRS = (Attr.RUN_ID, Attr.INDEX, Attr.LABEL, Attr.CONFIG, Attr.FACTORS)
EPOCH_PREFIX = "epoch:"  # one attribute per epoch: "epoch:00001", zero-padded to sort


def epoch_key(epoch: int) -> str:
    return f"{EPOCH_PREFIX}{epoch:05d}"


def intermediate_value(epoch: dict[str, Any]) -> float | None:
    """An epoch's value for Optuna (its dashboard's curves, a pruner's input): the validation
    accuracy, or under the seed protocol (no validation) the training one; None for NaN."""
    value = epoch.get("val_accuracy")
    if value is None:
        value = epoch.get("train_accuracy")
    return None if value is None or value != value else float(value)


def level_label(value: Any) -> Any:
    """A grid value as its level: scalars as they are, a bundle of settings by the keys it turns
    on (``{batch_norm = true, dropout = false}`` -> ``"batch_norm"``). Levels are what the report
    groups by and what Optuna stores as a trial's categorical parameter."""
    if isinstance(value, dict):
        chosen = [k for k, v in value.items() if v is True]
        return "+".join(chosen) if chosen else ",".join(f"{k}:{v}" for k, v in value.items())
    return value
