"""The states of a stored run, defined once (no dependencies: the report and the CLI read them too).

    waiting -> running -> complete | diverged | failed
                  ^                               |
                  +---- enqueued again (a retry) --+

A run that is ``complete`` or ``diverged`` has a result (metrics, history); a ``failed`` one has
an error and, when it raised, a traceback. ``waiting`` and ``running`` runs are still pending.
"""

from __future__ import annotations

from enum import StrEnum


class RunState(StrEnum):
    WAITING = "waiting"
    RUNNING = "running"
    COMPLETE = "complete"
    DIVERGED = "diverged"  # ended early because its loss became NaN or infinite; has a result
    FAILED = "failed"

    @property
    def pending(self) -> bool:
        """Still to be worked on: waiting, or running now."""
        return self in (RunState.WAITING, RunState.RUNNING)

    @property
    def has_result(self) -> bool:
        """Ended with metrics: complete or diverged."""
        return self in (RunState.COMPLETE, RunState.DIVERGED)

    @property
    def ended(self) -> bool:
        """Nothing more will happen to it unless it is run again: has a result, or failed."""
        return not self.pending
