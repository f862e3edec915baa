"""A study's runs in Optuna storage: enqueue once, claim, record, finish or fail, read back.

Backends: an Optuna journal file (default, ``runs/<study>/journal.log``; no server) or an Optuna
RDB storage on PostgreSQL (``postgresql://…``) for many machines. SQLite is refused: with parallel
workers it handed one queued trial to two of them (DESIGN.md).

Each run is one Optuna trial enqueued with its user attributes (schema.Attr: run_id, config,
factors, attempt, …) and its grid levels as categorical parameters, so that Optuna's own tools
(optuna-dashboard, ``optuna.importance``) see the study's factors. The guarantees rest on two
atomic transitions that both backends provide:
- WAITING -> RUNNING succeeds for exactly one claimant (so a run is never trained twice at once);
- RUNNING -> finished succeeds once (so when a dead worker's run is failed and re-enqueued by one
  process, no other process can do the same, and a late result from the "dead" worker is refused).
This module knows nothing of PyTorch: configs and results are plain dicts.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import math
import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import FrozenTrial, TrialState

from cnnsweep.errors import CnnsweepError, first_line, unreachable
from cnnsweep.identity import IDENTITY_VERSION, KNOWN_VERSIONS
from cnnsweep.interrupts import interrupts_deferred
from cnnsweep.journal import CheckedJournalStorage, open_journal
from cnnsweep.paths import file_in_the_way
from cnnsweep.schema import (
    ENQUEUED_ATTRS,
    EPOCH_PREFIX,
    Attr,
    RunState,
    epoch_key,
    intermediate_value,
)
from cnnsweep.spec import check_name
from cnnsweep.waiting import HEAD, WaitingTrial, waiting_twins

log = logging.getLogger("cnnsweep.store")
optuna.logging.set_verbosity(optuna.logging.WARNING)
logging.getLogger("sqlalchemy").setLevel(logging.WARNING)

STATES = tuple(RunState)
_STATE_OF = {
    TrialState.WAITING: RunState.WAITING,
    TrialState.RUNNING: RunState.RUNNING,
    TrialState.COMPLETE: RunState.COMPLETE,
    TrialState.PRUNED: RunState.DIVERGED,  # Optuna's "pruned": the run's loss became NaN/inf
    TrialState.FAIL: RunState.FAILED,
}
_IDENTITY_ATTR = "identity_version"  # a study attribute; cnnsweep's mark on its studies
_DOCUMENT_ATTR = "document"  # a study attribute: the spec it was run with (Study.document)
_DATA_ATTR = "data"  # a study attribute: the signature of the data its runs train on (0.7.5)
DEFAULT_ROOT = Path("runs")
JOURNAL_NAME = "journal.log"


class StoreError(CnnsweepError):
    """The store cannot be reached, or the study is not in it."""


class StudyNotFound(StoreError):
    """There is no such store, or no such study in it."""


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


STORE_PATIENCE_S = 300.0  # how long a worker retries a write while the database is unreachable
FIRST_RETRY_S = 0.5  # the first pause before such a retry; each next one twice as long, up to 30 s
ORPHAN_AGE_S = 600.0  # a search draw unnamed this long (by its own machine's clock) is set aside
T = TypeVar("T")


def patiently(write: Callable[[], T], what: str, patience: float | None = None) -> T:
    """``write()``, tried again with backoff while the database is unreachable (a restart, a
    network outage), for up to ``patience`` seconds (STORE_PATIENCE_S unless given): an epoch
    or a trained result is not lost to an outage shorter than that. Any other error is raised
    at once."""
    patience = STORE_PATIENCE_S if patience is None else patience
    deadline, delay = time.monotonic() + patience, FIRST_RETRY_S
    while True:
        try:
            return write()
        except Exception as exc:
            if not unreachable(exc) or time.monotonic() + delay > deadline:
                raise
            log.warning("cnnsweep: the store is unreachable while %s; trying again in %.0f s",
                        what, delay)  # fmt: skip
            time.sleep(delay)
            delay = min(2 * delay, 30.0)


def _pid_namespace() -> str:
    """The process-id namespace this process is in (``pid:[4026531836]``): containers on one
    machine may share its host name and boot id (host networking), never their pids' meaning."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def this_worker() -> dict[str, Any]:
    """Identifies a worker process: host (with boot id, so a reboot is a new machine, and pid
    namespace, so a container is a machine of its own) and pid."""
    return {
        "host": socket.gethostname(),
        "boot": _boot_id(),
        "pidns": _pid_namespace(),
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
    """The URL with its password masked, for messages; a URL whose user-info part does not parse
    unambiguously (an unencoded ``@`` in the password) is shown without that part at all."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return url
    netloc, slash, path = rest.partition("/")
    if "@" not in netloc:
        return url
    userinfo, host = netloc.rsplit("@", 1)
    user, colon, _ = userinfo.partition(":")
    if "@" in userinfo or "/" in userinfo or not user:
        return f"{scheme}://{host}{slash}{path}"
    return f"{scheme}://{user}{':***' if colon else ''}@{host}{slash}{path}"


def _masked(text: str, secrets: list[str]) -> str:
    """``text`` with each of ``secrets`` that stands as a whole word replaced by ``***``: a
    one-letter password is masked where it stands alone, never out of "port"."""
    for secret in sorted(filter(None, set(secrets)), key=len, reverse=True):
        text = re.sub(rf"(?<![\w%]){re.escape(secret)}(?![\w%])", "***", text)
    return text


def _userinfo(url: str) -> str:
    netloc = url.partition("://")[2].partition("/")[0]
    return netloc.rsplit("@", 1)[0] if "@" in netloc else ""


def study_folder(study_name: str, root: Path = DEFAULT_ROOT) -> Path:
    """``root/<study>``: where a study's default journal, CSV and report live; never outside."""
    check_name(study_name, "study name")
    folder = root / study_name
    if not folder.resolve().is_relative_to(root.resolve()):
        raise StoreError(f"study folder {folder} is outside {root}")
    return folder


def resolve_url(url: str | None, study_name: str) -> str:
    """``None`` -> the default journal file of the study; ``postgresql://`` -> psycopg 3 driver."""
    if url is None:
        return str(study_folder(study_name) / JOURNAL_NAME)
    if not url.strip():
        raise StoreError("invalid --store '': give a journal file path or a postgresql:// URL")
    if url.startswith("sqlite"):
        raise StoreError(
            "SQLite is not supported: with parallel workers it hands one run to two of them; "
            "use the default journal file or postgresql://"
        )
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def check_store_can_be_made(url: str | None, study_name: str) -> None:
    """Refuse a journal store whose folder a file stands in the way of (``runs`` a file, or
    ``--store notes.txt/journal.log``). A database is checked when it is opened."""
    resolved = resolve_url(url, study_name)
    if _is_database(resolved):
        return
    path = Path(resolved)
    if (blocking := file_in_the_way(path.parent)) is not None:
        raise StoreError(f"cannot open store {path}: {str(blocking)!r} is not a folder")


def _is_database(url: str) -> bool:
    return "://" in url


def _open_storage(url: str, create: bool) -> BaseStorage | None:
    """The storage at ``url``; ``create`` makes a missing journal file or Optuna's tables in a
    database. Without it, a database with no Optuna tables gives None: nothing is written to a
    database that a reading command, or a mistyped name, points at."""
    if not _is_database(url):
        path = Path(url)
        if not create and not path.exists():
            raise StudyNotFound(f"no study store at {path}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return open_journal(path)
        except OSError as exc:
            raise StoreError(f"cannot open store {path}: {exc.strerror}") from None
    userinfo = _userinfo(url)
    if "@" in userinfo or "/" in userinfo:
        raise StoreError(
            f"cannot parse store URL {redact(url)}: its user:password part holds an unencoded "
            "'@' or '/' (percent-encode them: %40, %2F)"
        )
    from cnnsweep import rdb  # SQLAlchemy's queries: loaded for a database only

    try:
        if not create and not rdb.has_optuna_tables(url):
            return None
        return RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    except Exception as exc:  # sqlalchemy raises many kinds; each becomes one line
        password = userinfo.partition(":")[2]
        reason = _masked(first_line(exc), [userinfo, password, unquote(password)])
        raise StoreError(f"cannot reach store {redact(url)}: {reason}") from None


# The attributes of a claimed run's trial that make its ClaimedRun, in the dataclass's order.
CLAIMED_ATTRS = (Attr.RUN_ID, Attr.CONFIG, Attr.LABEL, Attr.ATTEMPT)


@dataclass
class ClaimedRun:
    """A run a worker has taken from the queue: its trial (to record into) and its config."""

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
    state: RunState
    attempts: int
    trial_number: int
    result: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    traceback: str | None = None
    worker: dict[str, Any] | None = None
    environment: dict[str, Any] | None = None
    heartbeat: float | None = None
    started_at: float | None = None  # seconds since the epoch
    ended_at: float | None = None
    lost: bool = False  # running, but its worker's process on this machine is gone

    def __post_init__(self) -> None:
        self.state = RunState(self.state)  # a plain "complete" is accepted, and checked


class Store:
    """A study in Optuna storage. Open it with :meth:`open_or_create` or :meth:`open`."""

    def __init__(self, storage: BaseStorage, study_name: str, url: str) -> None:
        self.storage = storage
        self.study_name = study_name
        self.url = url
        self.study_id = storage.get_study_id_from_name(study_name)
        # PostgreSQL with a schema rdb.py knows: queries that read only what each step needs.
        self._sql = None
        if isinstance(storage, RDBStorage):  # a journal file loads no SQLAlchemy
            from cnnsweep import rdb

            self._sql = rdb.StudyQueries(storage, self.study_id) if rdb.supports(storage) else None

    def now(self) -> float:
        """Seconds since the epoch by the study's clock: on PostgreSQL the server's, so that the
        heartbeats of many machines and the check for silent ones read one clock (a machine
        whose own clock runs minutes behind would otherwise look silent, and lose its runs);
        on a journal file, this machine's."""
        if not isinstance(self.storage, RDBStorage):
            return time.time()
        from cnnsweep import rdb

        server = rdb.server_clock(self.storage)
        return time.time() if server is None else server

    # --- opening ----------------------------------------------------------------------------

    @classmethod
    def open_or_create(cls, url: str | None, study_name: str) -> Store:
        """Open the study, creating it (and a journal file) if needed."""
        resolved = resolve_url(url, study_name)
        storage = _open_storage(resolved, create=True)
        try:
            storage.get_study_id_from_name(study_name)  # exists: write nothing at all
        except KeyError:
            with contextlib.suppress(optuna.exceptions.DuplicatedStudyError):  # a racing creator
                optuna.create_study(storage=storage, study_name=study_name, direction="maximize")
        store = cls(storage, study_name, resolved)
        if not store.is_ours():
            if store._trials():
                raise store._foreign()
            # New, or left empty by a run killed right after creating it: ours from now on.
            storage.set_study_user_attr(store.study_id, _IDENTITY_ATTR, IDENTITY_VERSION)
        return store

    @classmethod
    def open(cls, url: str | None, study_name: str) -> Store:
        """Open an existing study of cnnsweep's; a missing one is an error (nothing is created),
        and so is one that cnnsweep did not create (nothing in it is touched)."""
        resolved = resolve_url(url, study_name)
        storage = _open_storage(resolved, create=False)  # None: a database with no tables
        try:
            store = cls(storage, study_name, resolved) if storage is not None else None
        except KeyError:
            store = None
        if store is None:
            studies = storage.get_all_studies() if storage is not None else []
            names = ", ".join(s.study_name for s in studies) or "none"
            raise StudyNotFound(
                f"no study {study_name!r} in store {redact(resolved)}; studies there: {names}"
            )
        if not store.is_ours():
            raise store._foreign()
        return store

    @property
    def display_url(self) -> str:
        return redact(self.url)

    def is_ours(self) -> bool:
        attrs = self.storage.get_study_user_attrs(self.study_id)
        return _IDENTITY_ATTR in attrs or _DOCUMENT_ATTR in attrs

    def _foreign(self) -> StoreError:
        return StoreError(
            f"study {self.study_name!r} in store {self.display_url} was not created by cnnsweep "
            "(it has trials but no cnnsweep study document); cnnsweep leaves it untouched"
        )

    @property
    def identity_version(self) -> int:
        """How this study's run_ids are computed (identity.py); 0 for studies stored by 0.1.0."""
        version = self.storage.get_study_user_attrs(self.study_id).get(_IDENTITY_ATTR, 0)
        if version not in KNOWN_VERSIONS:
            raise StoreError(
                f"study {self.study_name!r} uses run identity version {version}, unknown to "
                f"this cnnsweep (it knows {', '.join(map(str, KNOWN_VERSIONS))}): upgrade cnnsweep"
            )
        return version

    # --- the study's spec -------------------------------------------------------------------

    def document(self) -> dict[str, Any] | None:
        return self.storage.get_study_user_attrs(self.study_id).get(_DOCUMENT_ATTR)

    def set_document(self, document: dict[str, Any]) -> None:
        self.storage.set_study_user_attr(self.study_id, _DOCUMENT_ATTR, document)

    def data_signature(self) -> dict[str, Any] | None:
        """The signature of the data set the study's runs train on (ImageDataset.signature);
        None for a study that has not trained since 0.7.5."""
        return self.storage.get_study_user_attrs(self.study_id).get(_DATA_ATTR)

    def set_data_signature(self, signature: dict[str, Any]) -> None:
        self.storage.set_study_user_attr(self.study_id, _DATA_ATTR, signature)

    # --- the queue --------------------------------------------------------------------------

    def _trials(self, *states: TrialState) -> list[FrozenTrial]:
        return self.storage.get_all_trials(self.study_id, deepcopy=False, states=states or None)

    def enqueue_missing(self, runs: list[dict[str, Any]]) -> int:
        """Enqueue each run that has no trial waiting, running or finished with a result.

        ``runs`` (all of the study's) are dicts of the enqueued attributes
        (schema.ENQUEUED_ATTRS) plus ``params``: each factor's level. A factor's levels over all
        the runs, in order, are the choices of its categorical distribution. A run whose every
        attempt failed counts as missing, so running a study again retries it.

        The missing runs are found and written under a study-wide lock (PostgreSQL: an advisory
        lock; journal: a lock file), all in one transaction (one append): two processes
        enqueueing one study at the same moment never enqueue a run twice.
        """

        def missing(present: set[str]) -> list[WaitingTrial]:
            distributions = self._distributions(runs)
            return [
                WaitingTrial(_enqueued_attrs(run, 1), params, _subset(distributions, params))
                for run in runs
                if run[Attr.RUN_ID] not in present
                for params in [_known_levels(run, distributions)]
            ]

        if self._sql is not None:
            return self._sql.enqueue(missing)
        with self._enqueue_lock():
            present = [
                (t.user_attrs[Attr.RUN_ID], t._trial_id, t.number, t.state)
                for t in self._trials()
                if t.state != TrialState.FAIL and Attr.RUN_ID in t.user_attrs
                and not t.user_attrs.get(Attr.DUPLICATE)
            ]  # fmt: skip
            for trial_id in waiting_twins(present):
                self._set_aside(trial_id)
            waiting = missing({run_id for run_id, *_ in present})
            if isinstance(self.storage, CheckedJournalStorage):
                self.storage.create_waiting_trials(self.study_id, waiting)
            else:  # another database: one trial at a time, duplicates caught at claim
                for trial in waiting:
                    self.storage.create_new_trial(self.study_id, _waiting_template(trial))
        return len(waiting)

    @contextlib.contextmanager
    def _enqueue_lock(self) -> Iterator[None]:
        if isinstance(self.storage, CheckedJournalStorage):
            with self.storage.enqueue_lock():
                yield
        else:
            yield

    @property
    def _enqueues_locked(self) -> bool:
        """Whether this backend enqueues under a study-wide lock (then no claim needs to look
        for a twin of its run)."""
        return self._sql is not None or isinstance(self.storage, CheckedJournalStorage)

    def _distributions(self, runs: list[dict[str, Any]]) -> dict[str, CategoricalDistribution]:
        """Each factor's categorical distribution: the one its trials already have, else its
        levels over ``runs``. Optuna fixes a categorical parameter's choices for good when it is
        first stored, so a level that a changed spec adds stays out of the new runs' parameters
        (their factors, in user attributes, are complete; Optuna's views just omit them)."""
        levels: dict[str, dict[Any, None]] = {}
        for run in runs:
            for name, level in run.get("params", {}).items():
                levels.setdefault(name, {})[level] = None
        distributions = {name: CategoricalDistribution(list(ls)) for name, ls in levels.items()}
        for name, stored in self._stored_distributions().items():
            if name in distributions and isinstance(stored, CategoricalDistribution):
                distributions[name] = stored
        for name, stored in distributions.items():
            if added := [level for level in levels[name] if level not in stored.choices]:
                log.warning(
                    "factor %r has levels %s that the study's first runs did not: Optuna's "
                    "views (dashboard, importance) leave %r out for those runs",
                    name, added, name,
                )  # fmt: skip
        return distributions

    def _stored_distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        if self._sql is not None:
            return self._sql.categorical_distributions()
        found: dict[str, optuna.distributions.BaseDistribution] = {}
        for trial in self._trials():
            for name, stored in trial.distributions.items():
                found.setdefault(name, stored)
        return found

    def claim(self, worker: dict[str, Any]) -> ClaimedRun | None:
        """Take the first waiting run (in study order) for ``worker``, or None if none waits.
        Reads the head of the queue only: its cost does not grow with the study."""
        while head := self._waiting_head():
            for trial_id in head:
                if claimed := self._take(trial_id, worker):
                    return claimed
        return None

    def _take(self, trial_id: int, worker: dict[str, Any]) -> ClaimedRun | None:
        """The waiting trial marked running and ``worker``'s, or None if another took it first.
        A Ctrl-C meanwhile waits until the run is marked, so that it is put back as the
        worker's (a running run with no worker would wait out the grace)."""
        taken = {Attr.WORKER: worker, Attr.HEARTBEAT: self.now()}
        with interrupts_deferred():
            if self._sql is not None:  # one transaction
                attrs = self._sql.take(trial_id, taken, list(CLAIMED_ATTRS))
                if attrs is None:
                    return None  # another worker took it first
                return ClaimedRun(trial_id, *(attrs[key] for key in CLAIMED_ATTRS))
            try:
                if not self.storage.set_trial_state_values(trial_id, TrialState.RUNNING):
                    return None  # another worker took it first
            except UpdateFinishedTrialError:
                return None
            for key, value in taken.items():
                self.storage.set_trial_user_attr(trial_id, key, value)
            trial = self.storage.get_trial(trial_id)
            if not self._enqueues_locked and self._is_duplicate(trial):
                self._set_aside(trial_id)
                return None
            attrs = trial.user_attrs
            return ClaimedRun(trial_id, *(attrs[key] for key in CLAIMED_ATTRS))

    def _waiting_head(self) -> list[int]:
        """The trial ids of the first waiting runs, in study order (trials that are not runs of
        cnnsweep's are never touched)."""
        if self._sql is not None:
            return self._sql.waiting_head()
        waiting = [t for t in self._trials(TrialState.WAITING) if Attr.RUN_ID in t.user_attrs]
        return [t._trial_id for t in heapq.nsmallest(HEAD, waiting, key=lambda t: t.number)]

    def ask(
        self,
        sampler: optuna.samplers.BaseSampler,
        space: dict[str, optuna.distributions.BaseDistribution],
        make_run: Callable[[dict[str, Any], int], dict[str, Any]],
        worker: dict[str, Any],
        budget: int,
    ) -> ClaimedRun | None:
        """A new run of a search study, sampled by Optuna from ``space`` and claimed for
        ``worker``; None once ``budget`` runs were drawn. ``make_run(params, number)`` makes the
        run's attributes; its index is its trial's number, which the storage makes unique.

        The budget counts the runs drawn before this one; a draw that finds it spent is set
        aside. Draws made at the very same moment by several workers may each see the others
        unnamed yet, so a search can end up to (workers - 1) runs over its budget.
        """
        if self._drawn(math.inf) >= budget:
            return None
        study = optuna.load_study(study_name=self.study_name, storage=self.storage,
                                  sampler=sampler)  # fmt: skip
        trial = study.ask(space)
        trial_id = trial._trial_id
        try:
            run = make_run(trial.params, trial.number)
        except Exception:
            self._set_aside(trial_id)  # not a run: never left running with no one to end it
            raise
        # run_id last: a trial counts as a run (for records and the budget) only once whole.
        attrs = {Attr.WORKER: worker, Attr.HEARTBEAT: self.now(), Attr.ATTEMPT: 1}
        attrs |= {key: run[key] for key in ENQUEUED_ATTRS if key != Attr.RUN_ID}
        attrs[Attr.RUN_ID] = run[Attr.RUN_ID]
        if self._sql is not None:  # one transaction, where Optuna's API takes one a write
            self._sql.set_user_attrs(trial_id, attrs)
        else:
            for key, value in attrs.items():
                self.storage.set_trial_user_attr(trial_id, key, value)
        if self._drawn(trial.number) >= budget:
            self._set_aside(trial_id)
            return None
        return ClaimedRun(trial_id, run[Attr.RUN_ID], run[Attr.CONFIG], run[Attr.LABEL], 1)

    def _drawn(self, before: float) -> int:
        """How many search runs were drawn by trials numbered below ``before`` (first attempts
        only: a retry is the same run)."""
        return sum(
            t.number < before and t.user_attrs.get(Attr.ATTEMPT) == 1
            and Attr.RUN_ID in t.user_attrs and not t.user_attrs.get(Attr.DUPLICATE)
            for t in self._trials()
        )  # fmt: skip

    def _set_aside(self, trial_id: int) -> None:
        """A trial that is not a run: failed, and marked so that no count includes it."""
        self.storage.set_trial_user_attr(trial_id, Attr.DUPLICATE, True)
        self.storage.set_trial_state_values(trial_id, TrialState.FAIL)

    def _is_duplicate(self, claimed: FrozenTrial) -> bool:
        """Another trial of the same run finished, or runs and was enqueued earlier.

        Only possible when two processes enqueued the same study at the same moment; the earlier
        trial wins, so exactly one of the two goes on.
        """
        run_id = claimed.user_attrs.get(Attr.RUN_ID)
        for trial in self._trials(TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED):
            if trial.number == claimed.number or trial.user_attrs.get(Attr.RUN_ID) != run_id:
                continue
            if trial.state != TrialState.RUNNING or trial.number < claimed.number:
                return True
        return False

    # --- recording --------------------------------------------------------------------------

    def heartbeat(self, trial_id: int) -> None:
        self.storage.set_trial_user_attr(trial_id, Attr.HEARTBEAT, self.now())

    def record_epoch(self, trial_id: int, epoch: dict[str, Any], monitored: float | None) -> None:
        """Store one epoch's metrics (its own attribute: writes stay small as runs grow long)
        and the monitored value as Optuna's intermediate value. (No heartbeat: the worker's
        heartbeat thread writes one every --heartbeat seconds, epochs or not.) A Ctrl-C between
        the two writes waits for the second: a pruner reads the intermediate values."""
        with interrupts_deferred():
            self._write_epoch(trial_id, epoch, monitored)

    def _write_epoch(self, trial_id: int, epoch: dict[str, Any], monitored: float | None) -> None:
        self.storage.set_trial_user_attr(trial_id, epoch_key(epoch["epoch"]), epoch)
        if monitored is not None and monitored == monitored:  # skip NaN
            self.storage.set_trial_intermediate_value(trial_id, epoch["epoch"], monitored)

    def set_environment(self, trial_id: int, environment: dict[str, Any]) -> None:
        self.storage.set_trial_user_attr(trial_id, Attr.ENVIRONMENT, environment)

    def finish(
        self, trial_id: int, result: dict[str, Any], diverged: bool, pruned: bool = False
    ) -> bool:
        """Store the result and close the run; False if the run was taken from this worker.
        A diverged or pruned run closes as Optuna's PRUNED (a pruned one marked so).

        Epochs of ``result["history"]`` not yet recorded by :meth:`record_epoch` are added, with
        their intermediate values (an attempt resumed from a checkpoint trained only the epochs
        after it). A Ctrl-C meanwhile waits: a trained run's result is stored whole.
        """
        with interrupts_deferred():
            try:
                recorded = self.storage.get_trial(trial_id).user_attrs
                for epoch in result.get("history", []):
                    if epoch_key(epoch["epoch"]) not in recorded:
                        self._write_epoch(trial_id, epoch, intermediate_value(epoch))
                self.storage.set_trial_user_attr(
                    trial_id, Attr.RESULT, {k: v for k, v in result.items() if k != "history"}
                )
                if pruned:
                    self.storage.set_trial_user_attr(trial_id, Attr.PRUNED, True)
                if diverged or pruned:
                    self.storage.set_trial_state_values(trial_id, TrialState.PRUNED)
                else:
                    values = [float(result["test_accuracy"])]
                    self.storage.set_trial_state_values(trial_id, TrialState.COMPLETE, values)
            except UpdateFinishedTrialError:
                # Closed already: by this very call's earlier try, whose reply was lost after
                # the database committed it (the result is then ours, stored), or by another
                # worker that took the run over (it failed this trial; no result of ours).
                return self._closed_with(trial_id, result)
            return True

    def _closed_with(self, trial_id: int, result: dict[str, Any]) -> bool:
        """Whether the run is closed as done with exactly ``result`` stored (no other worker
        stores a result in this trial: a run taken over goes on in a trial of its own)."""
        trial = self.storage.get_trial(trial_id)
        stored = trial.user_attrs.get(Attr.RESULT)
        done = trial.state in (TrialState.COMPLETE, TrialState.PRUNED)
        return done and stored == {k: v for k, v in result.items() if k != "history"}

    def fail(
        self, trial_id: int, error: str, *, traceback: str | None = None, retry: bool = False
    ) -> bool:
        """Close the run as failed, with its error (one line) and, if given, the traceback that
        led to it; ``retry`` enqueues it again (same attempt).

        Returns False when the run was already closed by someone else.
        """
        trial = self.storage.get_trial(trial_id)
        again = trial.user_attrs[Attr.ATTEMPT] if retry else None
        return self._close_failed(trial, error, traceback, enqueue_attempt=again)

    def _close_failed(
        self,
        trial: FrozenTrial,
        error: str,
        traceback: str | None = None,
        enqueue_attempt: int | None = None,
    ) -> bool:
        """The one failure transition: record the error (and traceback), RUNNING -> FAIL, and,
        if ``enqueue_attempt`` is given, a fresh WAITING trial of the same run with that attempt
        number (Optuna cannot move a trial back to WAITING). False if the run was already closed
        by someone else; then nothing is enqueued. A Ctrl-C meanwhile waits for the retry to be
        enqueued: a run is never left failed with no retry by an interrupt (nor, on PostgreSQL,
        where it is one transaction, by a connection lost midway)."""
        trial_id = trial._trial_id
        failure = {Attr.ERROR: error, **({Attr.TRACEBACK: traceback} if traceback else {})}
        retry = None
        if enqueue_attempt is not None:  # the retry keeps the trial's parameters (0.2.0: none)
            attrs = _enqueued_attrs(trial.user_attrs, enqueue_attempt)
            retry = WaitingTrial(attrs, trial.params, trial.distributions)
        with interrupts_deferred():
            if self._sql is not None:  # one transaction: never failed with the retry lost
                return self._sql.close_failed(trial_id, failure, retry)
            try:
                for key, value in failure.items():
                    self.storage.set_trial_user_attr(trial_id, key, value)
                self.storage.set_trial_state_values(trial_id, TrialState.FAIL)
            except UpdateFinishedTrialError:
                return False
            if retry is not None:
                self.storage.create_new_trial(self.study_id, _waiting_template(retry))
            return True

    def held_run(self, worker: dict[str, Any]) -> ClaimedRun | None:
        """A run that ``worker`` holds, claimed (or drawn) whole, or None. Between its runs a
        worker holds none, unless a claim's reply was lost after the database committed it:
        the retry then takes up that run, which would otherwise wait out the grace."""
        for trial in self._trials(TrialState.RUNNING):
            attrs = trial.user_attrs
            mine = attrs.get(Attr.WORKER, {}).get("id") == worker["id"]
            if mine and all(key in attrs for key in CLAIMED_ATTRS):
                return ClaimedRun(trial._trial_id, *(attrs[key] for key in CLAIMED_ATTRS))
        return None

    def put_back(self, worker: dict[str, Any], error: str) -> int:
        """Every run ``worker`` holds goes back to the queue (same attempt): a worker interrupted
        between claiming a run and training it leaves none behind. Returns how many."""
        return self._put_back_held(lambda held_by: held_by.get("id") == worker["id"], error)

    def put_back_of_exited(self, pids: Collection[int], error: str) -> int:
        """Every run still held by one of ``pids``, processes of this machine that have exited
        (the workers of an interrupted `cnnsweep run`), goes back to the queue (same attempt):
        what a worker could not put back itself, killed or interrupted twice meanwhile, is not
        left running until the next command sees it. Returns how many."""
        me = this_worker()

        def exited(held_by: dict[str, Any]) -> bool:
            return held_by.get("pid") in pids and _worker_gone(held_by, me)

        return self._put_back_held(exited, error)

    def _put_back_held(self, held_by: Callable[[dict[str, Any]], bool], error: str) -> int:
        held = [t for t in self._trials(TrialState.RUNNING)
                if held_by(t.user_attrs.get(Attr.WORKER) or {})
                and Attr.RUN_ID in t.user_attrs]  # fmt: skip
        return sum(
            self._close_failed(t, error, enqueue_attempt=t.user_attrs.get(Attr.ATTEMPT, 1))
            for t in held
        )

    def recover_stale(self, grace_seconds: float, max_attempts: int) -> list[str]:
        """Fail the runs of dead workers and enqueue them again, up to ``max_attempts`` each.

        A worker is dead when it ran on this machine and its process is gone, or when its
        heartbeat is older than ``grace_seconds`` by the study's clock (:meth:`now`). Returns
        the labels of the runs recovered.
        """
        me = this_worker()
        now = self.now()
        recovered = []
        for trial in self._trials(TrialState.RUNNING):
            attrs = trial.user_attrs
            if Attr.RUN_ID not in attrs and Attr.WORKER not in attrs:
                self._set_aside_if_orphaned(trial, now, grace_seconds)
                continue
            worker = attrs.get(Attr.WORKER) or {}
            beat = attrs.get(Attr.HEARTBEAT) or _timestamp(trial.datetime_start) or now
            if _worker_gone(worker, me):
                reason = f"worker {worker['host']}:{worker['pid']} died"
            elif now - beat > grace_seconds:
                reason = (
                    f"worker {worker.get('host')}:{worker.get('pid')} silent {now - beat:.0f} s"
                )
            else:
                continue
            attempt = attrs.get(Attr.ATTEMPT, 1)
            again = attempt + 1 if attempt < max_attempts else None
            if Attr.RUN_ID not in attrs:  # a search draw whose worker died before naming it
                again = None
            if self._close_failed(trial, reason, enqueue_attempt=again):
                recovered.append(attrs.get(Attr.LABEL, str(trial.number)))
            # else: another process recovered it first
        return recovered

    def _set_aside_if_orphaned(self, trial: FrozenTrial, now: float, grace: float) -> None:
        """A running trial with no attributes: a search draw that Optuna's ``ask`` committed,
        whose worker then lost the store (or died) before the transaction that names it. It is no
        run and nothing counts it, but Optuna's own view would show it running for ever: once
        it is ORPHAN_AGE_S old (or the grace, if longer) it is set aside. Its age is read on
        the clock of the machine that drew it (Optuna's start time), not the study's, hence the
        margin: a draw a moment old on a machine minutes behind is left to be named."""
        started = _timestamp(trial.datetime_start)
        if started is None or now - started <= max(grace, ORPHAN_AGE_S):
            return
        with interrupts_deferred(), contextlib.suppress(UpdateFinishedTrialError):
            self._set_aside(trial._trial_id)  # another process may have set it aside first

    # --- reading ----------------------------------------------------------------------------

    def records(self, epochs: bool = True) -> list[RunRecord]:
        """One record per run, in study order; the deciding trial is the finished one, else the
        running one, else the waiting one, else the last failed attempt. ``epochs=False``: only
        running runs keep their history, which on PostgreSQL reads a fraction of the rows (what
        progress and status show)."""
        light = not epochs and self._sql is not None
        trials = self._sql.trials_without_epochs() if light else self._trials()
        by_run: dict[str, list[FrozenTrial]] = {}
        for trial in trials:
            run_id = trial.user_attrs.get(Attr.RUN_ID)
            if run_id is not None and not trial.user_attrs.get(Attr.DUPLICATE):
                by_run.setdefault(run_id, []).append(trial)
        priority = {
            TrialState.COMPLETE: 0, TrialState.PRUNED: 0, TrialState.RUNNING: 1,
            TrialState.WAITING: 2, TrialState.FAIL: 3,
        }  # fmt: skip
        records = []
        me = this_worker()
        for run_id, trials in by_run.items():
            deciding = min(trials, key=lambda t: (priority[t.state], -t.number))
            attrs = deciding.user_attrs
            records.append(
                RunRecord(
                    run_id=run_id,
                    index=attrs[Attr.INDEX],
                    label=attrs[Attr.LABEL],
                    config=attrs[Attr.CONFIG],
                    factors=attrs[Attr.FACTORS],
                    state=RunState.PRUNED if attrs.get(Attr.PRUNED) else _STATE_OF[deciding.state],
                    attempts=sum(t.state != TrialState.WAITING for t in trials),
                    trial_number=deciding.number,
                    result=attrs.get(Attr.RESULT),
                    history=[attrs[k] for k in sorted(attrs) if k.startswith(EPOCH_PREFIX)],
                    error=attrs.get(Attr.ERROR),
                    traceback=attrs.get(Attr.TRACEBACK),
                    worker=attrs.get(Attr.WORKER),
                    environment=attrs.get(Attr.ENVIRONMENT),
                    heartbeat=attrs.get(Attr.HEARTBEAT),
                    started_at=_timestamp(deciding.datetime_start),
                    ended_at=_timestamp(deciding.datetime_complete),
                    lost=deciding.state == TrialState.RUNNING
                    and _worker_gone(attrs.get(Attr.WORKER) or {}, me),
                )
            )
        return sorted(records, key=lambda r: r.index)

    def has_pending(self) -> bool:
        """Whether any run waits or runs: a look at those trials alone, no record built."""
        if self._sql is not None:
            return self._sql.has_pending()
        return any(
            Attr.RUN_ID in t.user_attrs and not t.user_attrs.get(Attr.DUPLICATE)
            for t in self._trials(TrialState.WAITING, TrialState.RUNNING)
        )

    def trial_states(self) -> list[tuple[str | None, RunState]]:
        """(run_id, state) of every trial, strays and retries included (for audits and tests)."""
        return [(t.user_attrs.get(Attr.RUN_ID), _STATE_OF[t.state]) for t in self._trials()]


def _enqueued_attrs(attrs: dict[str, Any], attempt: int) -> dict[str, Any]:
    return {key: attrs[key] for key in ENQUEUED_ATTRS} | {Attr.ATTEMPT: attempt}


def _known_levels(
    run: dict[str, Any], distributions: dict[str, CategoricalDistribution]
) -> dict[str, Any]:
    """The run's levels that its factor's stored distribution has (see _distributions)."""
    return {
        name: level
        for name, level in run.get("params", {}).items()
        if level in distributions[name].choices
    }


def _subset(distributions: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    return {name: distributions[name] for name in params}


def _waiting_template(waiting: WaitingTrial) -> FrozenTrial:
    return optuna.trial.create_trial(
        state=TrialState.WAITING, user_attrs=waiting.user_attrs, params=waiting.params,
        distributions=waiting.distributions,
    )  # fmt: skip


def _worker_gone(worker: dict[str, Any], me: dict[str, Any]) -> bool:
    """Whether ``worker`` ran on this machine (same host, boot and pid namespace) and its
    process is gone. A worker of a release before 0.7.5 recorded no pid namespace: host and
    boot decide for it, as they did then."""
    same_machine = (worker.get("host") == me["host"] and worker.get("boot") == me["boot"]
                    and worker.get("pidns", me["pidns"]) == me["pidns"])  # fmt: skip
    return bool(same_machine and worker.get("pid") and not _pid_alive(worker["pid"]))


def _timestamp(moment) -> float | None:
    return moment.timestamp() if moment is not None else None
