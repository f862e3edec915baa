"""A study's runs in Optuna storage: enqueue once, claim, record, finish or fail, read back.

Backends: an Optuna journal file (default, ``runs/<study>/journal.log``; no server) or an Optuna
RDB storage on PostgreSQL (``postgresql://…``) for many machines. SQLite is refused: with parallel
workers it handed one queued trial to two of them (DESIGN.md).

Each run is one Optuna trial enqueued with user attributes (run_id, config, factors, attempt). The
guarantees rest on two atomic transitions that both backends provide:
- WAITING -> RUNNING succeeds for exactly one claimant (so a run is never trained twice at once);
- RUNNING -> finished succeeds once (so when a dead worker's run is failed and re-enqueued by one
  process, no other process can do the same, and a late result from the "dead" worker is refused).
This module knows nothing of PyTorch: configs and results are plain dicts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
from optuna.trial import FrozenTrial, TrialState

from cnnsweep.errors import CnnsweepError

optuna.logging.set_verbosity(optuna.logging.WARNING)
logging.getLogger("sqlalchemy").setLevel(logging.WARNING)

STATES = ("waiting", "running", "complete", "diverged", "failed")
_STATE_OF = {
    TrialState.WAITING: "waiting",
    TrialState.RUNNING: "running",
    TrialState.COMPLETE: "complete",
    TrialState.PRUNED: "diverged",  # a run that ended early because its loss became NaN/inf
    TrialState.FAIL: "failed",
}
_RUN_ATTRS = ("run_id", "index", "label", "config", "factors")
DEFAULT_ROOT = Path("runs")
JOURNAL_NAME = "journal.log"
# Seconds after which a journal lock is taken as abandoned (its holder was killed mid-write); an
# append holds it for milliseconds.
JOURNAL_LOCK_GRACE = 10


class StoreError(CnnsweepError):
    """The store cannot be reached, or the study is not in it."""


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def this_worker() -> dict[str, Any]:
    """Identifies a worker process: host (with boot id, so a reboot is a new machine) and pid."""
    return {
        "host": socket.gethostname(),
        "boot": _boot_id(),
        "pid": os.getpid(),
        "id": uuid.uuid4().hex[:8],
    }


def _pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead, just not reaped
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def redact(url: str) -> str:
    """The URL with its password masked, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def resolve_url(url: str | None, study_name: str) -> str:
    """``None`` -> the default journal file of the study; ``postgresql://`` -> psycopg 3 driver."""
    if url is None:
        return str(DEFAULT_ROOT / study_name / JOURNAL_NAME)
    if url.startswith("sqlite"):
        raise StoreError(
            "SQLite is not supported: with parallel workers it hands one run to two of them; "
            "use the default journal file or postgresql://"
        )
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _is_database(url: str) -> bool:
    return "://" in url


def _open_storage(url: str, create: bool) -> BaseStorage:
    if not _is_database(url):
        path = Path(url)
        if not create and not path.is_file():
            raise StoreError(f"no study store at {path}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # An absolute path: Optuna's lock is a symlink to it, and a relative target would not
            # resolve, so a lock left by a killed worker would never be broken.
            target = str(path.resolve())
            lock = JournalFileSymlinkLock(target, grace_period=JOURNAL_LOCK_GRACE)
            return JournalStorage(JournalFileBackend(target, lock_obj=lock))
        except OSError as exc:
            raise StoreError(f"cannot open store {path}: {exc.strerror}") from None
    try:
        return RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    except Exception as exc:  # sqlalchemy raises many kinds; each becomes one line
        password = _password(url)
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        if password:
            reason = reason.replace(password, "***")
        raise StoreError(f"cannot reach store {redact(url)}: {reason}") from None


def _password(url: str) -> str | None:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).password
    except Exception:
        return None


@dataclass
class Claim:
    trial_id: int
    run_id: str
    config: dict[str, Any]
    label: str
    attempt: int


@dataclass
class RunRecord:
    """One run of the study as the store knows it (its deciding trial plus its attempts)."""

    run_id: str
    index: int
    label: str
    config: dict[str, Any]
    factors: dict[str, Any]
    state: str
    attempts: int
    trial_number: int
    result: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    worker: dict[str, Any] | None = None
    environment: dict[str, Any] | None = None
    heartbeat: float | None = None
    started: float | None = None
    finished: float | None = None


class Store:
    """A study in Optuna storage. Open it with :meth:`create` or :meth:`open`."""

    def __init__(self, storage: BaseStorage, study_name: str, url: str) -> None:
        self.storage = storage
        self.study_name = study_name
        self.url = url
        self.study_id = storage.get_study_id_from_name(study_name)

    # --- opening ----------------------------------------------------------------------------

    @classmethod
    def create(cls, url: str | None, study_name: str) -> Store:
        """Open the study, creating it (and a journal file) if needed."""
        resolved = resolve_url(url, study_name)
        storage = _open_storage(resolved, create=True)
        try:
            storage.get_study_id_from_name(study_name)  # exists: write nothing at all
        except KeyError:
            with contextlib.suppress(optuna.exceptions.DuplicatedStudyError):  # a racing creator
                optuna.create_study(storage=storage, study_name=study_name, direction="maximize")
        return cls(storage, study_name, resolved)

    @classmethod
    def open(cls, url: str | None, study_name: str) -> Store:
        """Open an existing study; a missing one is an error (and nothing is created)."""
        resolved = resolve_url(url, study_name)
        storage = _open_storage(resolved, create=False)
        try:
            return cls(storage, study_name, resolved)
        except KeyError:
            names = ", ".join(s.study_name for s in storage.get_all_studies()) or "none"
            raise StoreError(
                f"no study {study_name!r} in store {redact(resolved)}; studies there: {names}"
            ) from None

    @property
    def display_url(self) -> str:
        return redact(self.url)

    # --- the study's spec -------------------------------------------------------------------

    def document(self) -> dict[str, Any] | None:
        return self.storage.get_study_user_attrs(self.study_id).get("document")

    def set_document(self, document: dict[str, Any]) -> None:
        self.storage.set_study_user_attr(self.study_id, "document", document)

    # --- the queue --------------------------------------------------------------------------

    def _trials(self, *states: TrialState) -> list[FrozenTrial]:
        return self.storage.get_all_trials(self.study_id, deepcopy=False, states=states or None)

    def _enqueue(self, run: dict[str, Any], attempt: int) -> None:
        """One WAITING trial, created with all its attributes in one storage operation, so no
        worker can claim a trial whose attributes are half written."""
        attrs = {key: run[key] for key in _RUN_ATTRS} | {"attempt": attempt}
        template = optuna.trial.create_trial(state=TrialState.WAITING, user_attrs=attrs)
        self.storage.create_new_trial(self.study_id, template_trial=template)

    def enqueue_missing(self, runs: list[dict[str, Any]]) -> int:
        """Enqueue each run that has no trial waiting, running or finished with a result.

        A run whose every attempt failed counts as missing, so running a study again retries it.
        """
        present = {
            t.user_attrs.get("run_id")
            for t in self._trials()
            if t.state != TrialState.FAIL and not t.user_attrs.get("duplicate")
        }
        missing = [run for run in runs if run["run_id"] not in present]
        for run in missing:
            self._enqueue(run, attempt=1)
        return len(missing)

    def claim(self, worker: dict[str, Any]) -> Claim | None:
        """Take the first waiting run (in study order) for ``worker``, or None if none waits."""
        waiting = sorted(self._trials(TrialState.WAITING), key=lambda t: t.number)
        for trial in waiting:
            try:
                if not self.storage.set_trial_state_values(trial._trial_id, TrialState.RUNNING):
                    continue  # another worker took it first
            except UpdateFinishedTrialError:
                continue
            self.storage.set_trial_user_attr(trial._trial_id, "worker", worker)
            self.storage.set_trial_user_attr(trial._trial_id, "heartbeat", time.time())
            if self._is_duplicate(trial):
                self.storage.set_trial_user_attr(trial._trial_id, "duplicate", True)
                self.storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
                continue
            attrs = trial.user_attrs
            return Claim(
                trial._trial_id, attrs["run_id"], attrs["config"], attrs["label"], attrs["attempt"]
            )
        return None

    def _is_duplicate(self, claimed: FrozenTrial) -> bool:
        """Another trial of the same run finished, or runs and was enqueued earlier.

        Only possible when two processes enqueued the same study at the same moment; the earlier
        trial wins, so exactly one of the two goes on.
        """
        run_id = claimed.user_attrs.get("run_id")
        for trial in self._trials(TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED):
            if trial.number == claimed.number or trial.user_attrs.get("run_id") != run_id:
                continue
            if trial.state != TrialState.RUNNING or trial.number < claimed.number:
                return True
        return False

    # --- recording --------------------------------------------------------------------------

    def heartbeat(self, trial_id: int) -> None:
        self.storage.set_trial_user_attr(trial_id, "heartbeat", time.time())

    def record_epoch(self, trial_id: int, epoch: dict[str, Any], monitored: float | None) -> None:
        """Store one epoch's metrics (its own attribute: writes stay small as runs grow long),
        the monitored value as Optuna's intermediate value, and a heartbeat."""
        self.storage.set_trial_user_attr(trial_id, _epoch_key(epoch["epoch"]), epoch)
        if monitored is not None and monitored == monitored:  # skip NaN
            self.storage.set_trial_intermediate_value(trial_id, epoch["epoch"], monitored)
        self.heartbeat(trial_id)

    def set_environment(self, trial_id: int, environment: dict[str, Any]) -> None:
        self.storage.set_trial_user_attr(trial_id, "environment", environment)

    def finish(self, trial_id: int, result: dict[str, Any], diverged: bool) -> bool:
        """Store the result and close the run; False if the run was taken from this worker.

        Epochs of ``result["history"]`` not yet recorded by :meth:`record_epoch` are added.
        """
        try:
            recorded = self.storage.get_trial(trial_id).user_attrs
            for epoch in result.get("history", []):
                if _epoch_key(epoch["epoch"]) not in recorded:
                    self.storage.set_trial_user_attr(trial_id, _epoch_key(epoch["epoch"]), epoch)
            self.storage.set_trial_user_attr(
                trial_id, "result", {k: v for k, v in result.items() if k != "history"}
            )
            if diverged:
                self.storage.set_trial_state_values(trial_id, TrialState.PRUNED)
            else:
                values = [float(result["test_accuracy"])]
                self.storage.set_trial_state_values(trial_id, TrialState.COMPLETE, values)
        except UpdateFinishedTrialError:
            return False
        return True

    def fail(self, trial_id: int, error: str, *, retry: bool = False) -> bool:
        """Close the run as failed, with its error; ``retry`` enqueues it again (same attempt).

        Returns False when the run was already closed by someone else.
        """
        trial = self.storage.get_trial(trial_id)
        try:
            self.storage.set_trial_user_attr(trial_id, "error", error)
            self.storage.set_trial_state_values(trial_id, TrialState.FAIL)
        except UpdateFinishedTrialError:
            return False
        if retry:
            self._enqueue(trial.user_attrs, attempt=trial.user_attrs["attempt"])
        return True

    def recover_stale(self, grace_seconds: float, max_attempts: int) -> list[str]:
        """Fail the runs of dead workers and enqueue them again, up to ``max_attempts`` each.

        A worker is dead when it ran on this machine and its process is gone, or when its
        heartbeat is older than ``grace_seconds``. Returns the labels of the runs recovered.
        """
        me = this_worker()
        now = time.time()
        recovered = []
        for trial in self._trials(TrialState.RUNNING):
            attrs = trial.user_attrs
            worker = attrs.get("worker") or {}
            beat = attrs.get("heartbeat") or _timestamp(trial.datetime_start) or now
            same_machine = worker.get("host") == me["host"] and worker.get("boot") == me["boot"]
            if same_machine and worker.get("pid") and not _pid_alive(worker["pid"]):
                reason = f"worker {worker['host']}:{worker['pid']} died"
            elif now - beat > grace_seconds:
                reason = (
                    f"worker {worker.get('host')}:{worker.get('pid')} silent {now - beat:.0f} s"
                )
            else:
                continue
            attempt = attrs.get("attempt", 1)
            try:
                self.storage.set_trial_user_attr(trial._trial_id, "error", reason)
                self.storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            except UpdateFinishedTrialError:
                continue  # another process recovered it first
            if attempt < max_attempts:
                self._enqueue(attrs, attempt=attempt + 1)
            recovered.append(attrs.get("label", str(trial.number)))
        return recovered

    # --- reading ----------------------------------------------------------------------------

    def records(self) -> list[RunRecord]:
        """One record per run, in study order; the deciding trial is the finished one, else the
        running one, else the waiting one, else the last failed attempt."""
        by_run: dict[str, list[FrozenTrial]] = {}
        for trial in self._trials():
            run_id = trial.user_attrs.get("run_id")
            if run_id is not None and not trial.user_attrs.get("duplicate"):
                by_run.setdefault(run_id, []).append(trial)
        priority = {
            TrialState.COMPLETE: 0, TrialState.PRUNED: 0, TrialState.RUNNING: 1,
            TrialState.WAITING: 2, TrialState.FAIL: 3,
        }  # fmt: skip
        records = []
        for run_id, trials in by_run.items():
            deciding = min(trials, key=lambda t: (priority[t.state], -t.number))
            attrs = deciding.user_attrs
            records.append(
                RunRecord(
                    run_id=run_id,
                    index=attrs["index"],
                    label=attrs["label"],
                    config=attrs["config"],
                    factors=attrs["factors"],
                    state=_STATE_OF[deciding.state],
                    attempts=sum(t.state != TrialState.WAITING for t in trials),
                    trial_number=deciding.number,
                    result=attrs.get("result"),
                    history=[attrs[k] for k in sorted(attrs) if k.startswith(_EPOCH_PREFIX)],
                    error=attrs.get("error"),
                    worker=attrs.get("worker"),
                    environment=attrs.get("environment"),
                    heartbeat=attrs.get("heartbeat"),
                    started=_timestamp(deciding.datetime_start),
                    finished=_timestamp(deciding.datetime_complete),
                )
            )
        return sorted(records, key=lambda r: r.index)

    def trial_states(self) -> list[tuple[str | None, str]]:
        """(run_id, state) of every trial, strays and retries included (for audits and tests)."""
        return [(t.user_attrs.get("run_id"), _STATE_OF[t.state]) for t in self._trials()]


_EPOCH_PREFIX = "epoch:"


def _epoch_key(epoch: int) -> str:
    return f"{_EPOCH_PREFIX}{epoch:05d}"  # zero-padded, so that keys sort in epoch order


def _timestamp(moment) -> float | None:
    return moment.timestamp() if moment is not None else None
