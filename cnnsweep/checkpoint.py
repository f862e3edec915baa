"""Epoch checkpoints: a run interrupted after epoch e (worker killed, machine preempted) resumes
at epoch e + 1 when it is retried, with the model, optimizer, random states, early-stopping state
and history it had, so that it ends exactly as an uninterrupted run would.

One file per run, ``<folder>/<run_id>.pt``, replaced atomically (a temporary file, fsynced,
renamed over the old one), read with ``torch.load(weights_only=True)`` (tensors and plain values:
loading runs no code), removed when the run ends. A checkpoint that is missing, unreadable, of
another format or written for another config means "start over", never a crash.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("cnnsweep.checkpoint")
FORMAT = 1  # bump when the saved state changes shape; older files are then ignored


class RunCheckpoint:
    """The checkpoint of one run. ``min_interval`` (seconds) spaces the saves out: an epoch
    ending sooner than that after the last save is not saved (a short run restarts cheaply;
    a long one loses at most that much)."""

    def __init__(self, path: Path, config_json: str, min_interval: float = 30.0) -> None:
        self.path = path
        self.key = hashlib.sha256(config_json.encode()).hexdigest()
        self.min_interval = min_interval
        self._last_save = time.monotonic()  # the run's start counts as a save

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None (absent, unreadable, or not this run's: start over)."""
        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a torn or foreign file: any error means "start over"
            log.warning("checkpoint %s unreadable (%s): starting the run over", self.path, exc)
            return None
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            log.warning("checkpoint %s has another format: starting the run over", self.path)
            return None
        if state.get("key") != self.key:
            log.warning("checkpoint %s is of another config: starting the run over", self.path)
            return None
        log.warning("resuming from checkpoint %s after epoch %s", self.path, state.get("epoch"))
        return state

    def due(self) -> bool:
        return time.monotonic() - self._last_save >= self.min_interval

    def save(self, state: dict[str, Any]) -> None:
        """Replace the checkpoint with ``state`` atomically; a failed write keeps the old one."""
        staging = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(staging, "wb") as file:
                torch.save({**state, "format": FORMAT, "key": self.key}, file)
                file.flush()
                os.fsync(file.fileno())
            staging.replace(self.path)
        except OSError as exc:  # a full disk must not end the run: it just resumes from earlier
            log.warning("cannot write checkpoint %s: %s", self.path, exc.strerror)
            with contextlib.suppress(OSError):  # in a folder that cannot be written, say
                staging.unlink(missing_ok=True)
            return
        self._last_save = time.monotonic()

    def remove(self) -> None:
        """The checkpoint, and any half-written one a killed process left behind. A folder
        gone bad since (removed, made read-only) costs a warning, never the worker."""
        try:
            self.path.unlink(missing_ok=True)
            for staging in self.path.parent.glob(f".{self.path.name}.*.tmp"):
                staging.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("cannot remove checkpoint %s: %s", self.path, exc.strerror)
