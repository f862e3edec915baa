"""Queries on Optuna's RDB storage (PostgreSQL) whose cost does not grow with the study, for what
Optuna's storage API cannot express: the head of the queue, whether any run is pending, a study's
runs without their per-epoch attributes, a bulk enqueue under a study-wide lock, and a claim and a
failure (with its retry) each in one transaction, where Optuna's API takes one per write.

They use Optuna's documented RDB schema (tables ``trials``, ``trial_user_attributes``,
``trial_params``, ``studies``) through SQLAlchemy Core. SCHEMA_VERSIONS lists the schema
revisions this module was written and tested against; on any other the store uses Optuna's API
alone (correct, slower), so an Optuna upgrade that changes the schema costs speed, never results.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import zlib
from collections.abc import Callable
from typing import Any

from optuna.distributions import BaseDistribution, distribution_to_json, json_to_distribution
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import (
    Column,
    DateTime,
    Enum,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Connection

from cnnsweep.schema import EPOCH_PREFIX, Attr
from cnnsweep.waiting import HEAD, WaitingTrial, waiting_twins

# Alembic revisions of Optuna's RDB schema (``storage.get_current_version()``) this module knows:
# v3.2.0.a is the schema of every Optuna from 3.2 to 5.x (cnnsweep allows 4.3 to 5.x; its store
# tests passed on 4.3.0 and 5.0.0).
SCHEMA_VERSIONS = frozenset({"v3.2.0.a"})

# Optuna's tables, the columns used here (never created: Optuna creates and migrates them).
_schema = MetaData()
_STATE = Enum(TrialState, name="trialstate", create_type=False)
studies = Table("studies", _schema, Column("study_id", Integer, primary_key=True))
trials = Table(
    "trials",
    _schema,
    Column("trial_id", Integer, primary_key=True),
    Column("number", Integer),
    Column("study_id", Integer),
    Column("state", _STATE),
    Column("datetime_start", DateTime),
    Column("datetime_complete", DateTime),
)
user_attrs = Table(
    "trial_user_attributes",
    _schema,
    Column("trial_user_attribute_id", Integer, primary_key=True),
    Column("trial_id", Integer),
    Column("key", String),
    Column("value_json", Text),
)
params = Table(
    "trial_params",
    _schema,
    Column("param_id", Integer, primary_key=True),
    Column("trial_id", Integer),
    Column("param_name", String),
    Column("param_value", Float),
    Column("distribution_json", Text),
)


def has_optuna_tables(url: str) -> bool:
    """Whether the database at ``url`` holds Optuna's tables (read from its catalogue only:
    nothing is created)."""
    engine = create_engine(url)
    try:
        return inspect(engine).has_table("version_info")
    finally:
        engine.dispose()


def server_clock(storage: object) -> float | None:
    """Seconds since the epoch by a PostgreSQL server's clock, or None for any other storage.
    Every machine of a study reads the one clock: heartbeats compared by it do not depend on
    whether the machines' own clocks agree."""
    if not (isinstance(storage, RDBStorage) and storage.engine.dialect.name == "postgresql"):
        return None
    with storage.engine.connect() as connection:
        return float(connection.execute(select(func.extract("epoch", func.clock_timestamp())))
                     .scalar_one())  # fmt: skip


def supports(storage: object) -> bool:
    """Whether ``storage`` is a PostgreSQL RDB storage whose schema this module knows."""
    return (
        isinstance(storage, RDBStorage)
        and storage.engine.dialect.name == "postgresql"
        and storage.get_current_version() in SCHEMA_VERSIONS
    )


class StudyQueries:
    """The queries, for one study of one RDB storage."""

    def __init__(self, storage: RDBStorage, study_id: int) -> None:
        self.engine = storage.engine
        self.study_id = study_id

    @staticmethod
    def _has_attr(key: str):
        """A trial (of the outer query) has this user attribute: one index lookup."""
        attr = user_attrs.alias()  # the outer query may read user_attrs itself
        return select(attr.c.trial_id).where(attr.c.trial_id == trials.c.trial_id,
                                             attr.c.key == key).exists()  # fmt: skip

    def waiting_head(self, limit: int = HEAD) -> list[int]:
        """Trial ids of the first ``limit`` waiting runs, in study (trial number) order."""
        return self._first_runs([TrialState.WAITING], limit)

    def _first_runs(self, states: list[TrialState], limit: int) -> list[int]:
        """The first ``limit`` trials (by number) in ``states`` that are runs of cnnsweep's.

        Two plain index lookups, a page at a time, rather than one query with a semi-join on
        the attributes table, whose plan PostgreSQL may choose badly once that table is large
        and its statistics stale (measured: a 5,000-run claim going from 5 to 35 ms)."""
        page = 4 * limit
        with self.engine.connect() as connection:
            for offset in itertools.count(0, page):
                ids = list(connection.execute(
                    select(trials.c.trial_id)
                    .where(trials.c.study_id == self.study_id, trials.c.state.in_(states))
                    .order_by(trials.c.number).limit(page).offset(offset)
                ).scalars())  # fmt: skip
                runs = set(connection.execute(
                    select(user_attrs.c.trial_id)
                    .where(user_attrs.c.trial_id.in_(ids), user_attrs.c.key == Attr.RUN_ID)
                ).scalars())  # fmt: skip
                head = [trial_id for trial_id in ids if trial_id in runs][:limit]
                if head or len(ids) < page:
                    return head
        return []

    def take(self, trial_id: int, attrs: dict[str, Any], keys: list[str]) -> dict[str, Any] | None:
        """Claim a waiting trial in one transaction: mark it RUNNING (as Optuna's
        set_trial_state_values does), write ``attrs`` (the worker, its first heartbeat) and read
        back the user attributes ``keys``. None if it no longer waits (another worker took it).

        One transaction, where Optuna's API takes one per write: a connection lost midway
        leaves the trial waiting, never running with no worker named (which would wait out
        the grace), and a reply lost after the commit leaves it named as this worker's, which
        the worker's retry takes up (Store.held_run)."""
        with self.engine.begin() as connection:
            # A rival's UPDATE of the same row waits for this one's commit, then finds the
            # trial no longer waiting: exactly one claimant wins.
            if not _move(connection, trial_id, TrialState.WAITING, TrialState.RUNNING,
                         datetime_start=_stored_now()):  # fmt: skip
                return None
            _set_user_attrs(connection, trial_id, attrs)
            found = connection.execute(
                select(user_attrs.c.key, user_attrs.c.value_json).where(
                    user_attrs.c.trial_id == trial_id, user_attrs.c.key.in_(keys)
                )
            ).all()
        return {key: json.loads(value) for key, value in found}

    def set_user_attrs(self, trial_id: int, attrs: dict[str, Any]) -> None:
        """Write user attributes of a trial all in one transaction (as set_trial_user_attr
        does each in one of its own): a search's draw is named whole or not at all."""
        with self.engine.begin() as connection:
            _set_user_attrs(connection, trial_id, attrs)

    def close_failed(
        self, trial_id: int, attrs: dict[str, Any], retry: WaitingTrial | None
    ) -> bool:
        """A running trial failed, with ``attrs`` (its error, and traceback), and ``retry``, if
        given, created as a new waiting trial: in one transaction. False, with nothing written,
        if the trial was no longer running (closed by another worker, or by this call's earlier
        try whose reply was lost after the commit). Never a run failed with its retry lost."""
        with self.engine.begin() as connection:
            if retry is not None:
                self._lock_for_enqueue(connection)  # the retry is numbered as an enqueue is
            if not _move(connection, trial_id, TrialState.RUNNING, TrialState.FAIL,
                         datetime_complete=_stored_now()):  # fmt: skip
                return False
            _set_user_attrs(connection, trial_id, attrs)
            if retry is not None:
                self._insert(connection, [retry])
        return True

    def has_pending(self) -> bool:
        """Whether a run's trial waits or runs. (A duplicate is set aside as failed.)"""
        return bool(self._first_runs([TrialState.WAITING, TrialState.RUNNING], 1))

    def trials_without_epochs(self) -> list[FrozenTrial]:
        """Every trial of the study, with its user attributes except a run's epochs, which only
        running trials keep: what progress and status need, at a fraction of the rows. No
        parameters, values or system attributes."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(trials).where(trials.c.study_id == self.study_id)
            ).all()
            attrs = connection.execute(
                select(user_attrs.c.trial_id, user_attrs.c.key, user_attrs.c.value_json)
                .join(trials, trials.c.trial_id == user_attrs.c.trial_id)
                .where(trials.c.study_id == self.study_id)
                .where(
                    ~user_attrs.c.key.startswith(EPOCH_PREFIX, autoescape=True)
                    | (trials.c.state == TrialState.RUNNING)
                )
            ).all()
        by_trial: dict[int, dict[str, Any]] = {}
        for trial_id, key, value in attrs:
            by_trial.setdefault(trial_id, {})[key] = json.loads(value)
        return [_frozen(row, by_trial.get(row.trial_id, {})) for row in rows]

    def categorical_distributions(self) -> dict[str, BaseDistribution]:
        """Each parameter's distribution as its first trial stored it."""
        query = (
            select(params.c.param_name, params.c.distribution_json)
            .join(trials, trials.c.trial_id == params.c.trial_id)
            .where(trials.c.study_id == self.study_id)
            .order_by(params.c.trial_id)
        )
        found: dict[str, BaseDistribution] = {}
        with self.engine.connect() as connection:
            for name, blob in connection.execute(query):
                found.setdefault(name, json_to_distribution(blob))
        return found

    def enqueue(self, make: Callable[[set[str]], list[WaitingTrial]]) -> int:
        """Under a study-wide lock, the trials ``make(present)`` returns, created in one
        transaction; ``present``: the run ids of the study's trials that have not failed (nor
        been set aside). Two enqueues of one study therefore never create the same run twice.
        Returns the number created."""
        with self.engine.begin() as connection:
            self._lock_for_enqueue(connection)
            present = self._present(connection)
            self._set_aside(connection, waiting_twins(present))
            waiting = list(make({run_id for run_id, *_ in present}))
            if waiting:
                self._insert(connection, waiting)
        return len(waiting)

    def _lock_for_enqueue(self, connection: Connection) -> None:
        """Optuna's own lock for numbering trials (it takes it in create_new_trial), then
        cnnsweep's: no other enqueue reads the study until this transaction has committed."""
        connection.execute(
            select(studies.c.study_id).where(studies.c.study_id == self.study_id).with_for_update()
        )
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": self._lock_key()})

    def _lock_key(self) -> int:
        """A 63-bit advisory-lock key for this study's enqueues (another application's keys
        would have to hit the same crc32 pair to collide)."""
        return (zlib.crc32(b"cnnsweep enqueue") << 31) ^ self.study_id

    def _present(self, connection: Connection) -> list[tuple[str, int, int, TrialState]]:
        """(run id, trial id, number, state) of each trial that has not failed."""
        query = (
            select(user_attrs.c.value_json, trials.c.trial_id, trials.c.number, trials.c.state)
            .join(trials, trials.c.trial_id == user_attrs.c.trial_id)
            .where(trials.c.study_id == self.study_id, trials.c.state != TrialState.FAIL)
            .where(user_attrs.c.key == Attr.RUN_ID, ~self._has_attr(Attr.DUPLICATE))
        )
        return [(json.loads(run_id), *rest) for run_id, *rest in connection.execute(query)]

    def _set_aside(self, connection: Connection, trial_ids: list[int]) -> None:
        """Waiting trials failed and marked duplicate, as Store._set_aside does through Optuna."""
        if not trial_ids:
            return
        failed = connection.execute(
            trials.update()
            .where(trials.c.trial_id.in_(trial_ids), trials.c.state == TrialState.WAITING)
            .values(state=TrialState.FAIL, datetime_complete=_stored_now())
            .returning(trials.c.trial_id)
        ).scalars()  # still waiting: a worker may have taken one since it was read
        rows = [{"trial_id": t, "key": Attr.DUPLICATE, "value_json": "true"} for t in failed]
        if rows:
            connection.execute(user_attrs.insert(), rows)

    def _insert(self, connection: Connection, waiting: list[WaitingTrial]) -> None:
        """The rows Optuna's create_new_trial writes for a WAITING template trial, for all of
        ``waiting`` at once: numbers continue the study's count, as Optuna numbers trials."""
        count = connection.execute(
            select(func.count()).select_from(trials).where(trials.c.study_id == self.study_id)
        ).scalar_one()
        rows = [
            {"number": count + i, "study_id": self.study_id, "state": TrialState.WAITING,
             "datetime_start": None, "datetime_complete": None}
            for i in range(len(waiting))
        ]  # fmt: skip
        inserted = trials.insert().returning(trials.c.trial_id, sort_by_parameter_order=True)
        ids = connection.execute(inserted, rows).scalars()
        attr_rows, param_rows = [], []
        for trial_id, trial in zip(ids, waiting, strict=True):
            attr_rows += [
                {"trial_id": trial_id, "key": key, "value_json": json.dumps(value)}
                for key, value in trial.user_attrs.items()
            ]
            param_rows += [
                {"trial_id": trial_id, "param_name": name,
                 "param_value": trial.distributions[name].to_internal_repr(value),
                 "distribution_json": distribution_to_json(trial.distributions[name])}
                for name, value in trial.params.items()
            ]  # fmt: skip
        for target, rows in ((user_attrs, attr_rows), (params, param_rows)):
            if rows:
                connection.execute(target.insert(), rows)


def _move(
    connection: Connection, trial_id: int, state: TrialState, to: TrialState, **times: dt.datetime
) -> bool:
    """The trial set from ``state`` to ``to`` (with its start or completion time, as Optuna's
    set_trial_state_values sets them), if it is in ``state``; whether it was."""
    moved = connection.execute(
        trials.update()
        .where(trials.c.trial_id == trial_id, trials.c.state == state)
        .values(state=to, **times)
        .returning(trials.c.trial_id)
    ).first()
    return moved is not None


def _set_user_attrs(connection: Connection, trial_id: int, attrs: dict[str, Any]) -> None:
    """Write (insert or replace) user attributes of a trial, as set_trial_user_attr does."""
    upsert = insert(user_attrs).values([
        {"trial_id": trial_id, "key": key, "value_json": json.dumps(value)}
        for key, value in attrs.items()
    ])  # fmt: skip
    connection.execute(upsert.on_conflict_do_update(
        index_elements=["trial_id", "key"], set_={"value_json": upsert.excluded.value_json}
    ))  # fmt: skip


def _frozen(row, user_attrs_: dict[str, Any]) -> FrozenTrial:
    return FrozenTrial(
        number=row.number, state=row.state, value=None, values=None,
        datetime_start=_local(row.datetime_start),
        datetime_complete=_local(row.datetime_complete), params={}, distributions={},
        user_attrs=user_attrs_, system_attrs={}, intermediate_values={}, trial_id=row.trial_id,
    )  # fmt: skip


def _stored_as_utc() -> bool:
    """Optuna 5 stores trial datetimes as naive UTC and converts them to local time when read;
    earlier versions store naive local time (same schema revision)."""
    from optuna.storages._rdb import models

    return hasattr(models.TrialModel, "_datetime_start_utc")


_UTC = _stored_as_utc()


def _stored_now() -> dt.datetime:
    """Now, as Optuna stores a trial's datetime (naive; UTC from Optuna 5, local before)."""
    now = dt.datetime.now()
    return now.astimezone(dt.UTC).replace(tzinfo=None) if _UTC else now


def _local(moment: dt.datetime | None) -> dt.datetime | None:
    """A stored datetime as the naive local time a FrozenTrial carries, as Optuna reads it."""
    if moment is None or not _UTC:
        return moment
    return moment.replace(tzinfo=dt.UTC).astimezone().replace(tzinfo=None)
