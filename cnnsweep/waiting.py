"""The queue's waiting trials, as both stores keep them (a journal file and PostgreSQL): what a
trial to enqueue holds, how many a claim reads, and which are twins left by racing enqueues.

Apart from rdb.py so that a journal store loads no SQLAlchemy (0.4 s of each process's start).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.trial import TrialState

HEAD = 16  # waiting trials read per claim: enough to get past those other workers just took


@dataclass(frozen=True)
class WaitingTrial:
    """A trial to create as WAITING: its user attributes and categorical parameters."""

    user_attrs: dict[str, Any]
    params: dict[str, Any]
    distributions: dict[str, BaseDistribution]


def waiting_twins(present: list[tuple[str, int, int, TrialState]]) -> list[int]:
    """Of (run id, trial id, number, state) rows, the waiting trials of a run that has another
    trial finished, running, or waiting with a lower number: left by two enqueues of an earlier
    cnnsweep racing (this one enqueues under a lock), and never to be trained."""
    rank = {TrialState.COMPLETE: 0, TrialState.PRUNED: 0, TrialState.RUNNING: 1}
    keep: dict[str, tuple[int, int]] = {}
    for run_id, _, number, state in present:
        key = (rank.get(state, 2), number)
        keep[run_id] = min(keep.get(run_id, key), key)
    return [
        trial_id
        for run_id, trial_id, number, state in present
        if state == TrialState.WAITING and (2, number) != keep[run_id]
    ]
