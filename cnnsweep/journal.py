"""The journal file behind the default store: Optuna's append-only log, checked and repaired.

Optuna's ``JournalFileBackend`` appends one JSON line per operation under a lock file. Two ways to
damage it, and what cnnsweep does about each:

- A writer killed mid-append (``kill -9``, a full disk) leaves a last line without its newline.
  Optuna skips it when reading, but the next append would glue a new line onto it and every later
  read would fail. Before each append, and when the store is opened, the torn tail is moved aside
  (into ``journal.log.torn-<time>``) under the journal's lock, and one line says so.
- Any other damage — a line that is not JSON, not an operation, an unknown op code, a binary
  file — is refused: a one-line error naming the file and the line number, the file untouched.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

from optuna.distributions import distribution_to_json
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
from optuna.storages.journal._storage import JournalOperation
from optuna.trial import TrialState

from cnnsweep.errors import CnnsweepError
from cnnsweep.interrupts import held, interrupts_deferred

log = logging.getLogger("cnnsweep.journal")

# Seconds after which a journal lock is taken as abandoned (its holder was killed mid-write); an
# append holds it for milliseconds.
LOCK_GRACE = 10
# The same for the enqueue lock (seconds): held while a study's missing runs are found and written.
ENQUEUE_GRACE = 60
# Every line Optuna writes starts so (``json.dumps`` of {"op_code": …, "worker_id": …, …}); a torn
# tail is one that starts as a line would, never arbitrary bytes.
_LINE_START = b'{"op_code":'
_OP_CODES = {int(op) for op in JournalOperation}


class JournalError(CnnsweepError):
    """The journal file is damaged in a way that cannot be repaired safely."""


def _parse_line(raw: bytes, path: Path, number: int) -> dict[str, Any]:
    """One complete journal line as its operation; a damaged line is an error naming it."""
    try:
        entry = json.loads(raw)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError alike
        raise JournalError(f"corrupt journal {path}: line {number} is not a JSON line") from None
    if not isinstance(entry, dict) or "op_code" not in entry:
        problem = "not a journal operation (no op_code)"
    elif isinstance(entry["op_code"], bool) or entry["op_code"] not in _OP_CODES:
        problem = f"an unknown op code {entry['op_code']!r}"
    else:
        return entry
    raise JournalError(f"corrupt journal {path}: line {number} is {problem}")


class InterruptibleSymlinkLock(JournalFileSymlinkLock):
    """Optuna's symlink lock (the same lock file: every release of cnnsweep, and Optuna itself,
    exclude each other with it), waited for an attempt at a time (:meth:`attempts`), so that
    ``interrupts.held`` can deliver a Ctrl-C while it waits. Optuna's own ``acquire`` waits
    until it has the lock, a lock left by a killed holder included: up to its grace."""

    def attempts(self) -> Iterator[bool]:
        """One wait for the lock, an attempt per ``next()``: True once it is taken. A lock
        that stands unchanged for the grace during this wait is broken, as Optuna's ``acquire``
        breaks it (its holder was killed). Unchanged: the same lock file (not one another
        waiter made after breaking the first: Optuna's check, on the journal's time alone,
        lets two waiters break it in turn), and the journal not written to meanwhile."""
        seen: tuple[tuple, float] | None = None  # (the lock as last seen, when first seen so)
        while True:
            try:
                os.symlink(self._lock_target_file, self._lock_file)
            except FileExistsError:
                pass
            else:
                yield True
                return
            try:
                link = os.lstat(self._lock_file)  # this lock file, not another made since
                journal = os.stat(self._lock_file)  # as Optuna's: the journal, through it
            except OSError:  # given up meanwhile: the next attempt may take it
                yield False
                continue
            state = (link.st_ino, link.st_ctime_ns, journal.st_mtime_ns)
            now = time.monotonic()
            if seen is None or seen[0] != state:
                seen = (state, now)
            elif now - seen[1] > self.grace_period:
                log.warning("cnnsweep: breaking the lock %s, left for %d s by a holder that was "
                            "killed", self._lock_file, self.grace_period)  # fmt: skip
                with contextlib.suppress(RuntimeError):  # another waiter broke it first
                    self.release()
                seen = None
            yield False


class CheckedJournalFile(JournalFileBackend):
    """Optuna's journal file, refusing damaged lines and repairing a torn last line."""

    def __init__(self, path: Path) -> None:
        # An absolute path: Optuna's lock is a symlink to it, and a relative target would not
        # resolve, so a lock left by a killed worker would never be broken.
        self.path = path.resolve()
        if self.path.exists() and not self.path.is_file():
            raise JournalError(f"store {path} is not a regular file")
        lock = InterruptibleSymlinkLock(str(self.path), grace_period=LOCK_GRACE)
        super().__init__(str(self.path), lock_obj=lock)
        self.last_entry: dict[str, Any] = {}  # the operation read last (replay errors name it)

    def repair_on_open(self) -> None:
        """Move a torn last line aside. Called once the whole file was read (and so checked,
        line by line, by read_logs), so that a damaged journal is refused untouched."""
        if self._torn_tail() is not None:
            with held(self._lock), interrupts_deferred():
                self._repair_torn_tail()

    # --- checking ----------------------------------------------------------------------------

    def _torn_tail(self) -> int | None:
        """The offset where an unterminated last line starts, or None if the file ends a line."""
        size = self.path.stat().st_size
        if size == 0:
            return None
        with self.path.open("rb") as handle:
            handle.seek(size - 1)
            if handle.read(1) == b"\n":
                return None
            # Walk back to the previous newline, a block at a time.
            end = size
            while end > 0:
                start = max(0, end - 65536)
                handle.seek(start)
                block = handle.read(end - start)
                if (cut := block.rfind(b"\n")) >= 0:
                    return start + cut + 1
                end = start
            return 0

    def _repair_torn_tail(self) -> None:
        """Move an unterminated last line aside. Call with the journal lock held."""
        offset = self._torn_tail()
        if offset is None:
            return
        with self.path.open("r+b") as handle:
            handle.seek(offset)
            tail = handle.read()
            if not _could_be_torn(tail):
                raise JournalError(f"corrupt journal {self.path}: its last line is not a journal "
                                   "line (nor the start of one)")  # fmt: skip
            stamp = time.strftime("%Y%m%dT%H%M%S")
            aside = self.path.with_name(f"{self.path.name}.torn-{stamp}-{os.getpid()}")
            aside.write_bytes(tail)
            handle.truncate(offset)
            handle.flush()
            os.fsync(handle.fileno())
        log.warning(
            "cnnsweep: repaired journal %s: a torn last line (%d bytes, left by a writer that "
            "was killed) moved to %s",
            self.path, len(tail), aside,
        )  # fmt: skip

    # --- Optuna's backend interface ---------------------------------------------------------

    def read_logs(self, log_number_from: int) -> Generator[dict[str, Any], None, None]:
        """Optuna's reader (one operation per line, offsets remembered for the next call), but
        a damaged complete line is an error that names it, where Optuna's would skip a damaged
        last line until something is appended after it."""
        with self.path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size  # lines appended after this: next time
            first = log_number_from if log_number_from in self._log_number_offset else 0
            position = self._log_number_offset[first]
            handle.seek(position)
            for number, raw in enumerate(handle, start=first):
                position += len(raw)
                if position > size or not raw.endswith(b"\n"):
                    return  # a line still being written (or torn): read it next time
                self._log_number_offset[number + 1] = position
                if number < log_number_from:
                    continue
                self.last_entry = _parse_line(raw, self.path, number + 1)
                yield self.last_entry

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        # Whole or not at all under a Ctrl-C: one while the lock is waited for is delivered at
        # once, with nothing written; one once it is taken, after the append (milliseconds).
        with held(self._lock), interrupts_deferred():
            self._repair_torn_tail()  # never glue a new line onto a torn one
            lines = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in logs)
            with self.path.open("ab") as handle:
                handle.write(lines.encode("utf-8"))
                handle.flush()
                os.fsync(handle.fileno())


def _could_be_torn(tail: bytes) -> bool:
    """Whether ``tail`` can be the start of a line Optuna was writing when it was cut short."""
    head = tail[: len(_LINE_START)]
    return len(tail) > 0 and _LINE_START.startswith(head) and b"\n" not in tail


class CheckedJournalStorage(JournalStorage):
    """Optuna's JournalStorage whose replay errors name the journal line that caused them.

    Optuna's replay raises on purpose for an operation of this process that lost a race (a trial
    finished by someone else, a study created twice): that is how the caller learns it, so such
    errors pass unchanged. Any other replay error is damage to the journal."""

    def __init__(self, backend: CheckedJournalFile) -> None:
        self._checked_backend = backend
        super().__init__(backend)  # replays the whole file: a damaged line is refused here
        backend.repair_on_open()

    def _sync_with_backend(self) -> None:
        try:
            super()._sync_with_backend()
        except JournalError:
            raise
        except Exception as exc:
            if self._replay_result._is_issued_by_this_worker(self._checked_backend.last_entry):
                raise
            line = self._replay_result.log_number_read
            raise JournalError(
                f"corrupt journal {self._checked_backend.path}: line {line} cannot be replayed "
                f"({type(exc).__name__}: {exc})"
            ) from None

    @contextlib.contextmanager
    def enqueue_lock(self) -> Iterator[None]:
        """Held while a process reads which runs the study has and appends the missing ones, so
        that two `cnnsweep run` of one study never both enqueue a run. A lock file of its own
        (the journal's lock is taken per append, inside this one); broken after ENQUEUE_GRACE
        seconds, should its holder have been killed."""
        lock = InterruptibleSymlinkLock(str(self._checked_backend.path) + ".enqueue",
                                        grace_period=ENQUEUE_GRACE)  # fmt: skip
        with held(lock):
            yield

    def create_waiting_trials(self, study_id: int, waiting: list) -> None:
        """Many WAITING trials in one append (one write, one fsync): each line the one Optuna's
        create_new_trial writes for a template trial of those user attributes, parameters and
        distributions (``waiting``: waiting.WaitingTrial, or anything with those three)."""
        worker_id = self._replay_result.worker_id
        as_json: dict[int, str] = {}  # one distribution serves many trials: serialised once
        entries = []
        for trial in waiting:
            distributions = {}
            for name, distribution in trial.distributions.items():
                if id(distribution) not in as_json:
                    as_json[id(distribution)] = distribution_to_json(distribution)
                distributions[name] = as_json[id(distribution)]
            params = {
                name: trial.distributions[name].to_internal_repr(value)
                for name, value in trial.params.items()
            }
            entries.append(
                {"op_code": JournalOperation.CREATE_TRIAL, "worker_id": worker_id,
                 "study_id": study_id, "datetime_start": None, "state": TrialState.WAITING,
                 "value": None, "values": None, "distributions": distributions,
                 "params": params, "user_attrs": trial.user_attrs, "system_attrs": {},
                 "intermediate_values": {}}
            )  # fmt: skip
        with self._thread_lock:
            self._checked_backend.append_logs(entries)
            self._sync_with_backend()


def open_journal(path: Path) -> CheckedJournalStorage:
    return CheckedJournalStorage(CheckedJournalFile(path))
