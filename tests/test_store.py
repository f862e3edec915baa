"""The store's contract, run against every backend (journal file and PostgreSQL)."""

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from cnnsweep import rdb
from cnnsweep.schema import epoch_key, intermediate_value
from cnnsweep.store import (
    Store,
    StoreError,
    StudyNotFound,
    _enqueued_attrs,
    _waiting_template,
    patiently,
    resolve_url,
    this_worker,
    unreachable,
)
from tests.conftest import REPO


def runs(count: int = 4) -> list[dict]:
    return [
        {"run_id": f"r{i}", "index": i, "label": f"run {i}",
         "config": {"lr": 0.1 * (i + 1), "seed": 0}, "factors": {"lr": 0.1 * (i + 1)},
         "params": {"lr": 0.1 * (i + 1)}}
        for i in range(count)
    ]  # fmt: skip


@pytest.fixture(params=["journal", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "journal":
        return str(tmp_path / "journal.log")
    return request.getfixturevalue("postgres_url")


def test_enqueue_is_idempotent_and_claims_follow_study_order(store_url):
    store = Store.open_or_create(store_url, "s")
    assert store.enqueue_missing(runs()) == 4
    assert store.enqueue_missing(runs()) == 0
    assert Store.open_or_create(store_url, "s").enqueue_missing(runs(6)) == 2  # a second process
    me = this_worker()
    claimed = [store.claim(me) for _ in range(6)]
    assert [c.run_id for c in claimed] == ["r0", "r1", "r2", "r3", "r4", "r5"]
    assert store.claim(me) is None
    assert {r.state for r in store.records()} == {"running"}


def test_has_pending_sees_waiting_and_running_runs_only(store_url):
    store = Store.open_or_create(store_url, "s")
    assert not store.has_pending()
    store.enqueue_missing(runs(2))
    assert store.has_pending()
    me = this_worker()
    a, b = store.claim(me), store.claim(me)
    assert store.has_pending()  # both running
    assert store.finish(a.trial_id, {"test_accuracy": 50.0, "history": []}, False)
    assert store.has_pending()
    assert store.fail(b.trial_id, "ValueError: boom")
    assert not store.has_pending()
    optuna.load_study(study_name="s", storage=store.storage).enqueue_trial({})
    assert not store.has_pending()  # a trial that is not a run of cnnsweep's waits for nobody


def test_results_failures_and_divergence_are_recorded(store_url):
    store = Store.open_or_create(store_url, "s")
    store.enqueue_missing(runs(3))
    me = this_worker()
    a, b, c = (store.claim(me) for _ in range(3))
    store.set_environment(a.trial_id, {"torch": "2.13"})
    store.record_epoch(a.trial_id, {"epoch": 1, "val_accuracy": 40.0}, 40.0)
    history = [{"epoch": 1, "val_accuracy": 40.0}, {"epoch": 2, "val_accuracy": 41.0}]
    assert store.finish(a.trial_id, {"test_accuracy": 55.5, "history": history}, False)
    assert store.finish(b.trial_id, {"test_accuracy": 10.0, "history": []}, diverged=True)
    assert store.fail(c.trial_id, "ValueError: boom")
    first, second, third = store.records()
    assert (first.state, first.result["test_accuracy"]) == ("complete", 55.5)
    assert first.history == history  # epoch 1 as recorded during the run, epoch 2 at the end
    # Epoch 2's intermediate value too (an attempt resumed from a checkpoint trains only the
    # epochs after it): a pruner and Optuna's dashboard see the whole curve.
    assert store.storage.get_trial(a.trial_id).intermediate_values == {1: 40.0, 2: 41.0}
    assert first.environment == {"torch": "2.13"} and first.worker["pid"] == me["pid"]
    assert second.state == "diverged"
    assert (third.state, third.error) == ("failed", "ValueError: boom")
    # running the study again retries the failed run only
    assert store.enqueue_missing(runs(3)) == 1
    assert [r.state for r in store.records()] == ["complete", "diverged", "waiting"]


def test_a_dead_workers_run_is_retried_a_bounded_number_of_times(store_url):
    store = Store.open_or_create(store_url, "s")
    store.enqueue_missing(runs(1))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    ghost = this_worker() | {"pid": int(dead)}
    for attempt in (1, 2):
        claim = store.claim(ghost)
        assert claim.attempt == attempt
        assert store.recover_stale(grace_seconds=3600, max_attempts=2) == ["run 0"]
    assert store.records()[0].state == "failed" and "died" in store.records()[0].error
    assert store.records()[0].attempts == 2
    assert store.claim(this_worker()) is None  # no third attempt


def test_a_worker_in_another_pid_namespace_is_not_taken_for_dead(store_url):
    """Containers with host networking share the machine's host name and boot id, not their
    pids: a worker in another pid namespace whose pid is free here may well be alive (its
    heartbeat decides). One in this namespace, or one of 0.7.4 (which recorded none), whose
    pid is gone, is dead at once."""
    store = Store.open_or_create(store_url, "s")
    store.enqueue_missing(runs(3))
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout)  # fmt: skip
    store.claim(this_worker() | {"pid": dead, "pidns": "pid:[1]"})  # another container
    assert store.recover_stale(grace_seconds=3600, max_attempts=3) == []
    assert [r.lost for r in store.records()] == [False, False, False]
    store.claim(this_worker() | {"pid": dead})
    older = {k: v for k, v in this_worker().items() if k != "pidns"} | {"pid": dead}
    store.claim(older)
    assert [r.lost for r in store.records()] == [False, True, True]
    assert store.recover_stale(grace_seconds=3600, max_attempts=3) == ["run 1", "run 2"]


def test_a_silent_worker_is_taken_over_and_its_late_result_refused(store_url):
    store = Store.open_or_create(store_url, "s")
    store.enqueue_missing(runs(1))
    elsewhere = this_worker() | {"host": "another-machine"}
    slow = store.claim(elsewhere)
    assert store.recover_stale(grace_seconds=3600, max_attempts=3) == []  # it is fresh
    time.sleep(0.3)
    assert store.recover_stale(grace_seconds=0.1, max_attempts=3) == ["run 0"]
    assert store.recover_stale(grace_seconds=0.1, max_attempts=3) == []  # only once
    retry = store.claim(this_worker())
    assert retry.attempt == 2
    assert not store.finish(slow.trial_id, {"test_accuracy": 1.0}, False)  # refused
    assert store.finish(retry.trial_id, {"test_accuracy": 2.0}, False)
    (record,) = store.records()
    assert (record.state, record.result["test_accuracy"], record.attempts) == ("complete", 2.0, 2)


def test_a_search_draw_never_named_is_set_aside_once_old(store_url):
    """Optuna's ``ask`` committed a trial, then its worker lost the store before naming it: a
    running trial with no attributes. Nothing counts it, but Optuna's view showed it running
    for ever. Past ORPHAN_AGE_S (by its start time) the next recovery sets it aside (failed,
    marked as no run); one a moment old, still to be named, is left alone, and so are runs."""
    import datetime

    from cnnsweep.store import ORPHAN_AGE_S

    store = Store.open_or_create(store_url, "s")
    store.enqueue_missing(runs(1))
    live = store.claim(this_worker())

    def draw(age_s: float) -> int:
        trial = optuna.trial.create_trial(state=TrialState.RUNNING)
        trial.datetime_start = datetime.datetime.now() - datetime.timedelta(seconds=age_s)
        return store.storage.create_new_trial(store.study_id, template_trial=trial)

    old, fresh = draw(ORPHAN_AGE_S + 60), draw(5)
    before = store.records()
    assert store.recover_stale(grace_seconds=120, max_attempts=3) == []  # no run recovered
    again = Store.open(store_url, "s")  # as another process reads it
    state = {t._trial_id: t.state for t in again.storage.get_all_trials(again.study_id)}
    assert state[old] == TrialState.FAIL and state[fresh] == TrialState.RUNNING
    assert state[live.trial_id] == TrialState.RUNNING
    assert again.storage.get_trial(old).user_attrs == {"duplicate": True}
    assert again.records() == before
    assert again.recover_stale(grace_seconds=120, max_attempts=3) == []  # once is enough


def test_on_postgresql_a_machine_whose_clock_runs_behind_keeps_its_run(postgres_url, monkeypatch):
    """Heartbeats and the check for silent workers read the database server's clock: a live
    worker on a machine whose clock is 10 minutes behind is not taken for silent (with its own
    clock it would be, past the 2-minute default grace, and would lose each run it claims); a
    silent one is still taken over after the grace."""
    store = Store.open_or_create(postgres_url, "s")
    store.enqueue_missing(runs(2))
    elsewhere = this_worker() | {"host": "machine-10-min-behind"}
    skewed = time.time
    with monkeypatch.context() as behind:  # that machine, claiming and beating
        behind.setattr(time, "time", lambda: skewed() - 600)
        remote = Store.open(postgres_url, "s")
        late = remote.claim(elsewhere)
        remote.heartbeat(late.trial_id)
    assert store.recover_stale(grace_seconds=120, max_attempts=3) == []
    beat = store.records()[0].heartbeat
    assert abs(store.now() - beat) < 60 and abs(time.time() - beat) < 60  # one clock, here too
    time.sleep(0.3)
    assert store.recover_stale(grace_seconds=0.1, max_attempts=3) == ["run 0"]


def test_a_result_waits_out_a_database_outage_and_is_stored(postgres, postgres_url):
    """The database restarts (every connection cut) as a trained run's result is to be stored:
    the worker's write is tried again until the server is back, and the result is stored. An
    error other than the store being unreachable is raised at once; an outage longer than the
    patience is raised after it."""
    store = Store.open_or_create(postgres_url, "s")
    store.enqueue_missing(runs(2))
    first, second = store.claim(this_worker()), store.claim(this_worker())
    result = {"test_accuracy": 50.0, "history": [{"epoch": 1, "val_accuracy": 40.0}]}
    postgres.pause()
    back = threading.Timer(0.5, postgres.resume)
    back.start()
    try:
        started = time.monotonic()
        assert patiently(lambda: store.finish(first.trial_id, result, False), "storing", 60)
        assert time.monotonic() - started >= 0.4  # it did wait for the server
    finally:
        back.join()
    (record, _) = store.records()
    assert record.state == "complete" and record.result["test_accuracy"] == 50.0
    calls = []

    def refused() -> None:
        calls.append(1)
        raise ValueError("a write the store refuses")

    with pytest.raises(ValueError):
        patiently(refused, "writing", 60)
    assert calls == [1]
    postgres.pause()
    try:
        with pytest.raises(Exception) as raised:
            patiently(lambda: store.heartbeat(second.trial_id), "beating", patience=0.3)
        assert unreachable(raised.value)
    finally:
        postgres.resume()
    assert store.records()[1].state == "running"


def test_a_worker_interrupted_after_claiming_puts_its_run_back(store_url):
    store = Store.open_or_create(store_url, "s")
    store.enqueue_missing(runs(2))
    me, other = this_worker(), this_worker()
    store.claim(me)
    store.claim(other)
    assert store.put_back(me, "interrupted") == 1  # its own run only
    assert [r.state for r in store.records()] == ["waiting", "running"]
    assert store.put_back(me, "interrupted") == 0


def test_interrupted_run_goes_back_to_the_queue(store_url):
    store = Store.open_or_create(store_url, "s")
    store.enqueue_missing(runs(1))
    claim = store.claim(this_worker())
    assert store.fail(claim.trial_id, "interrupted", retry=True)
    assert store.records()[0].state == "waiting"
    assert store.claim(this_worker()).attempt == 1


def test_reading_a_database_without_optunas_tables_creates_none(empty_postgres_url):
    """A reading command (status, export, report, worker) pointed at an empty database, such as
    a mistyped name on the right server, finds no study and leaves the database as it was."""
    import psycopg

    def tables() -> list[str]:
        with psycopg.connect(empty_postgres_url) as connection:
            query = "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            return [row[0] for row in connection.execute(query)]

    with pytest.raises(StudyNotFound, match=r"no study 'x' in store .*studies there: none"):
        Store.open(empty_postgres_url, "x")
    assert tables() == []
    Store.open_or_create(empty_postgres_url, "x")  # the command that may create, creates
    assert "version_info" in tables() and Store.open(empty_postgres_url, "x").study_name == "x"


def test_opening_a_missing_study_creates_nothing(store_url, tmp_path):
    Store.open_or_create(store_url, "present")
    with pytest.raises(StoreError, match=r"no study 'absent' in store .*studies there: present"):
        Store.open(store_url, "absent")
    with pytest.raises(StoreError, match="no study store at"):
        Store.open(str(tmp_path / "nothing.log"), "x")
    assert not (tmp_path / "nothing.log").exists()


def test_unreachable_postgres_names_it_without_the_password():
    url = "postgresql://alice:s3cret-pw@127.0.0.1:9/db"
    with pytest.raises(StoreError) as error:
        Store.open_or_create(url, "s")
    message = str(error.value)
    assert message.startswith("cannot reach store postgresql+psycopg://alice:***@127.0.0.1:9/db")
    assert "s3cret-pw" not in message and "\n" not in message
    # A password that is a letter of the driver's words is masked alone, not out of them.
    with pytest.raises(StoreError) as error:
        Store.open_or_create("postgresql://bob:p@127.0.0.1:9/db", "s")
    message = str(error.value)
    assert message.startswith("cannot reach store postgresql+psycopg://bob:***@127.0.0.1:9/db")
    assert "port 9 failed" in message and "***ort" not in message, message


def test_sqlite_is_refused():
    with pytest.raises(StoreError, match="SQLite is not supported"):
        resolve_url("sqlite:///study.db", "s")


def test_a_run_whose_worker_is_gone_shows_as_lost(store_url, capsys):
    from cnnsweep.cli import main

    store = Store.open_or_create(store_url, "s")
    store.enqueue_missing(runs(2))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    store.claim(this_worker() | {"pid": int(dead)})  # its process has exited
    store.claim(this_worker())  # this one is alive
    lost, alive = store.records()
    assert (lost.state, lost.lost, alive.state, alive.lost) == ("running", True, "running", False)
    assert main(["status", "--store", store_url, "--study", "s"]) == 0
    out = capsys.readouterr().out
    assert "running: 1" in out and "lost: 1" in out
    assert f"  lost     run 0: starting [{this_worker()['host']}:{dead}" in out
    assert "its worker process is gone" in out


def test_a_study_that_cnnsweep_did_not_create_is_left_untouched(store_url):
    import optuna

    storage = Store.open_or_create(store_url, "ours").storage  # the same backend, another study
    study = optuna.create_study(storage=storage, study_name="theirs")
    study.enqueue_trial({"x": 1.0})
    with pytest.raises(StoreError, match=r"'theirs' .* was not created by cnnsweep"):
        Store.open(store_url, "theirs")
    with pytest.raises(StoreError, match="was not created by cnnsweep"):
        Store.open_or_create(store_url, "theirs")
    (trial,) = study.get_trials()
    assert trial.state == optuna.trial.TrialState.WAITING and trial.user_attrs == {}


def test_the_private_optuna_names_cnnsweep_relies_on_exist(tmp_path):
    """store.py and journal.py use a few private Optuna names (pyproject caps optuna below 6);
    if an Optuna release renames one, this fails before anything else does."""
    from optuna.storages.journal._storage import JournalOperation, JournalStorageReplayResult

    store = Store.open_or_create(str(tmp_path / "journal.log"), "s")
    store.enqueue_missing(runs(1))
    (trial,) = store._trials()
    assert isinstance(trial._trial_id, int)
    backend = store.storage._backend
    assert backend._log_number_offset and hasattr(backend, "_lock")
    assert store.storage._replay_result.log_number_read > 0
    assert callable(JournalStorageReplayResult._is_issued_by_this_worker)
    assert {int(op) for op in JournalOperation} >= set(range(10))


def test_a_retry_keeps_the_runs_optuna_parameters(store_url):
    store = Store.open_or_create(store_url, "s")
    store.enqueue_missing(runs(2))
    first = store.claim(this_worker())
    assert store.fail(first.trial_id, "lost", retry=True)
    waiting = store.storage.get_all_trials(store.study_id, states=(TrialState.WAITING,))
    retry = next(t for t in waiting if t.user_attrs["run_id"] == "r0")
    assert retry.params == {"lr": 0.1}
    assert retry.distributions == {"lr": CategoricalDistribution([0.1, 0.2])}
    assert retry.user_attrs["attempt"] == 1


@pytest.mark.parametrize("moment", ["claim", "epoch", "finish", "fail"])
def test_a_ctrl_c_inside_a_runs_change_of_state_waits_for_the_whole_change(
    moment, store_url, monkeypatch, ctrl_c_raises
):
    """An interrupt in the middle of a run's change of state is delivered after the whole change:
    - claim: between "running" and the worker's name (its worker could not put it back; it
      would wait out the grace as a run with no worker);
    - epoch: between an epoch's metrics and its intermediate value (a pruner would miss it);
    - finish: between the result and "complete" (a trained run's result would be lost);
    - fail: between "failed" and the retry (the run would stay failed until run again).
    On PostgreSQL a claim and a failure are each one transaction: the interrupt comes inside it,
    before the commit (it would roll the claim back, which the worker's put-back then misses)."""
    store = Store.open_or_create(store_url, "s")
    store.enqueue_missing(runs(1))
    me = this_worker()
    claimed = None if moment == "claim" else store.claim(me)
    storage = store.storage
    set_state, set_attr = storage.set_trial_state_values, storage.set_trial_user_attr

    def ctrl_c() -> None:
        os.kill(os.getpid(), signal.SIGINT)  # KeyboardInterrupt at the next bytecode

    def state_then_ctrl_c(trial_id, state, values=None):
        done = set_state(trial_id, state, values)
        if state == {"claim": TrialState.RUNNING, "fail": TrialState.FAIL}.get(moment):
            ctrl_c()
        return done

    def attr_then_ctrl_c(trial_id, key, value):
        set_attr(trial_id, key, value)
        if (moment, key) in {("finish", "result"), ("epoch", epoch_key(1))}:
            ctrl_c()

    monkeypatch.setattr(storage, "set_trial_state_values", state_then_ctrl_c)
    monkeypatch.setattr(storage, "set_trial_user_attr", attr_then_ctrl_c)
    set_attrs_in_transaction = rdb._set_user_attrs

    def attrs_in_transaction_then_ctrl_c(connection, trial_id, attrs):
        set_attrs_in_transaction(connection, trial_id, attrs)
        if moment in ("claim", "fail"):
            ctrl_c()

    monkeypatch.setattr(rdb, "_set_user_attrs", attrs_in_transaction_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        if moment == "claim":
            store.claim(me)
        elif moment == "epoch":
            store.record_epoch(claimed.trial_id, {"epoch": 1, "val_accuracy": 40.0}, 40.0)
        elif moment == "finish":
            store.finish(claimed.trial_id, {"test_accuracy": 50.0, "history": []}, False)
        else:
            store.fail(claimed.trial_id, "interrupted", retry=True)
    monkeypatch.undo()
    if moment == "claim":  # what the interrupted worker then does (worker.run_worker)
        assert store.put_back(me, "interrupted") == 1
    if moment == "epoch":
        assert store.storage.get_trial(claimed.trial_id).intermediate_values == {1: 40.0}
        return
    expected = "complete" if moment == "finish" else "waiting"
    assert [r.state for r in Store.open(store_url, "s").records()] == [expected]


def test_an_epochs_intermediate_value_is_its_validation_accuracy_else_its_training_one():
    """Under the seed protocol an epoch has no validation accuracy; a diverged one may have
    neither, and Optuna is then given none (it refuses NaN)."""
    assert intermediate_value({"val_accuracy": 41.5, "train_accuracy": 60.0}) == 41.5
    assert intermediate_value({"val_accuracy": None, "train_accuracy": 60.0}) == 60.0
    assert intermediate_value({"val_accuracy": None, "train_accuracy": float("nan")}) is None
    assert intermediate_value({"val_accuracy": None, "train_accuracy": None}) is None


def test_levels_a_changed_spec_adds_stay_out_of_optuna_parameters(store_url):
    """Optuna fixes a categorical parameter's choices when first stored; the new runs of a grown
    grid are enqueued all the same, their new levels kept in their factors only."""
    store = Store.open_or_create(store_url, "s")
    store.enqueue_missing(runs(2))
    assert store.enqueue_missing(runs(3)) == 1
    trials = store.storage.get_all_trials(store.study_id)
    assert [t.params for t in trials] == [{"lr": 0.1}, {"lr": 0.2}, {}]
    assert trials[2].user_attrs["factors"] == {"lr": 0.30000000000000004}


def race(calls) -> list:
    """Run ``calls`` (functions of no arguments) at the same moment, one thread each."""
    barrier = threading.Barrier(len(calls))

    def start(call):
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(start, calls))


def test_claimants_racing_for_one_waiting_run_exactly_one_wins(store_url):
    store = Store.open_or_create(store_url, "s")
    rivals = [Store.open(store_url, "s") for _ in range(4)]  # four processes' connections
    for i in range(3):
        store.enqueue_missing(runs(i + 1))  # one more waiting run each round
        won = race([lambda s=s: s.claim(this_worker()) for s in rivals])
        assert sum(c is not None for c in won) == 1, won
    assert [r.state for r in store.records()] == ["running"] * 3


def test_a_claim_or_result_committed_then_asked_again_is_known_as_done(store_url):
    """On both stores, as a worker's retries see it when a committed write's reply was lost:
    the run it claimed is the one it holds (another worker's is not), and storing the same
    result again says stored; a different result, or a run taken over, says not."""
    store = Store.open_or_create(store_url, "s")
    store.enqueue_missing(runs(2))
    me, other = this_worker(), this_worker()
    assert store.held_run(me) is None
    claimed = store.claim(me)
    assert store.held_run(me) == claimed and store.held_run(other) is None
    result = {"test_accuracy": 0.5, "history": [{"epoch": 1, "val_accuracy": 50.0}]}
    assert store.finish(claimed.trial_id, result, False)
    assert store.finish(claimed.trial_id, result, False)  # the retry: already stored, as is
    assert not store.finish(claimed.trial_id, {**result, "test_accuracy": 0.6}, False)
    assert store.held_run(me) is None  # done: held no longer
    second = store.claim(me)
    assert store.recover_stale(grace_seconds=-1, max_attempts=2)  # taken from this worker
    assert not store.finish(second.trial_id, result, False)
    assert [r.state for r in store.records()] == ["complete", "waiting"]


def test_after_a_ctrl_c_the_runs_of_the_commands_exited_workers_go_back(store_url):
    """What `cnnsweep run` does once its workers have exited after a Ctrl-C: a run still held
    by one of them (killed before it could put it back) goes back to the queue, same attempt.
    A run of a worker still alive, or of a process that is not one of them, is left alone."""
    store = Store.open_or_create(store_url, "s")
    store.enqueue_missing(runs(3))
    exited = subprocess.Popen(["true"])
    exited.wait()
    gone = {**this_worker(), "pid": exited.pid}
    alive = this_worker()  # this process
    stranger = {**this_worker(), "pid": exited.pid + 1_000_000}  # gone, but not a worker of it
    claims = [store.claim(worker) for worker in (gone, alive, stranger)]
    assert store.put_back_of_exited([exited.pid, os.getpid()], "interrupted") == 1
    assert [r.state for r in store.records()] == ["waiting", "running", "running"]
    again = store.claim(this_worker())
    assert again.run_id == claims[0].run_id and again.attempt == claims[0].attempt


def test_two_runs_enqueueing_one_study_at_once_train_no_run_twice(store_url):
    """Twins of three runs, as two racing enqueues of an earlier version left them (forced
    here), then two enqueues racing now (under the study's lock, so neither makes a twin): the
    enqueue sets the old twins aside, and every run is trained once."""
    first, second = (Store.open_or_create(store_url, "s") for _ in range(2))
    first.enqueue_missing(runs(3))
    for run in runs(3):
        optunas_own_enqueue(second, run, {}, {})  # what a racing enqueue_missing did
    race([lambda: first.enqueue_missing(runs(5)), lambda: second.enqueue_missing(runs(5))])
    assert len(first.trial_states()) == 3 + 3 + 2  # no new twin; the old ones set aside
    trained = []
    while (claim := first.claim(this_worker())) is not None:
        trained.append(claim.run_id)
        first.finish(claim.trial_id, {"test_accuracy": 1.0}, False)
    assert sorted(trained) == [f"r{i}" for i in range(5)]  # each run once
    assert [r.state for r in first.records()] == ["complete"] * 5
    assert all(run_id is not None for run_id, _ in first.trial_states())


def test_enqueues_racing_in_three_processes_create_each_run_once(store_url, tmp_path):
    """Three processes enqueueing one study at the same moment, as three `cnnsweep run` would:
    the study-wide enqueue lock lets one of them find the runs missing; the others find them
    there."""
    Store.open_or_create(store_url, "s")
    script = tmp_path / "enqueue.py"
    script.write_text(
        "import sys\n"
        "from cnnsweep.store import Store\n"
        f"runs = {runs(150)!r}\n"  # written out: this module's imports cost 1 s a process
        "store = Store.open_or_create(sys.argv[1], 's')\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()  # the go: all three start together\n"
        "print(store.enqueue_missing(runs))\n"
    )
    command = [sys.executable, str(script), store_url]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    processes = [
        subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(3)
    ]
    assert [p.stdout.readline() for p in processes] == ["ready\n"] * 3  # each one's store open
    for p in processes:
        p.stdin.write("go\n")
        p.stdin.flush()
    counts = [int(p.communicate(timeout=120)[0]) for p in processes]
    assert sorted(counts) == [0, 0, 150]
    states = Store.open(store_url, "s").trial_states()
    assert sorted(run_id for run_id, _ in states) == sorted(f"r{i}" for i in range(150))


def optunas_own_enqueue(store: Store, run: dict, params: dict, distributions: dict) -> None:
    """One waiting trial of ``run`` (attempt 1), created by Optuna's create_new_trial."""
    waiting = rdb.WaitingTrial(_enqueued_attrs(run, 1), params, distributions)
    store.storage.create_new_trial(store.study_id, template_trial=_waiting_template(waiting))


def test_bulk_enqueued_trials_are_what_optunas_own_create_trial_writes(store_url):
    """The bulk enqueue writes rows (PostgreSQL) or lines (journal) of its own: read back through
    Optuna, each trial equals the one Optuna's create_new_trial makes from the same template."""
    bulk = Store.open_or_create(store_url, "bulk")
    one_by_one = Store.open_or_create(store_url, "one-by-one")
    bulk.enqueue_missing(runs(3))
    distributions = bulk._distributions(runs(3))
    for run in runs(3):
        optunas_own_enqueue(one_by_one, run, run["params"], distributions)
    for made, expected in zip(bulk._trials(), one_by_one._trials(), strict=True):
        assert made.number == expected.number and made.state == expected.state
        assert made.params == expected.params and made.distributions == expected.distributions
        assert made.user_attrs == expected.user_attrs
        assert made.system_attrs == expected.system_attrs == {}
        assert made.datetime_start is expected.datetime_start is None
        assert made.value is expected.value is None


def test_postgresql_uses_the_schema_queries_and_claims_read_the_queue_head_only(postgres_url):
    """On PostgreSQL a claim reads a few rows whatever the study's size: counted here as the
    rows its statements return, for a study of 100 waiting runs and one of 400."""
    from sqlalchemy import event

    from cnnsweep import rdb

    returned = []
    rows_per_claim = []
    for size in (100, 400):
        store = Store.open_or_create(postgres_url, f"size-{size}")
        assert store._sql is not None  # this Optuna's schema is one rdb.py knows
        assert store.storage.get_current_version() in rdb.SCHEMA_VERSIONS
        store.enqueue_missing(runs(size))
        for _ in range(3):  # a few runs running and finished
            claim = store.claim(this_worker())
            store.finish(claim.trial_id, {"test_accuracy": 1.0, "history": []}, False)

        def count(conn, cursor, statement, parameters, context, executemany):
            returned.append(max(cursor.rowcount, 0))

        event.listen(store.storage.engine, "after_cursor_execute", count)
        returned.clear()
        store.claim(this_worker())
        event.remove(store.storage.engine, "after_cursor_execute", count)
        rows_per_claim.append(sum(returned))
    assert rows_per_claim[1] <= rows_per_claim[0] + 5, rows_per_claim


@contextlib.contextmanager
def connection_lost_at(store: Store, statement: str) -> Iterator[list[str]]:
    """From the next SQL statement of ``store`` that starts with ``statement`` on, every one
    meets a lost connection, as when the database goes down mid-transaction (the server then
    rolls back whatever the transaction wrote) and stays down until the block ends (Optuna's
    own retries of a write meet it too). Yields the statements met, in order."""
    from sqlalchemy import event
    from sqlalchemy.exc import OperationalError

    met: list[str] = []

    def drop(conn, cursor, sql, parameters, context, executemany) -> None:
        if sql.startswith(statement) and statement not in met:
            met.append(statement)  # down from here on
        met.append(sql)
        if statement in met:
            raise OperationalError("(planted) server closed the connection", {}, ConnectionError())

    event.listen(store.storage.engine, "before_cursor_execute", drop)
    try:
        yield met
    finally:
        event.remove(store.storage.engine, "before_cursor_execute", drop)


@pytest.mark.parametrize("moment", ["claim", "fail", "recover"])
def test_on_postgresql_a_connection_lost_midway_leaves_a_run_as_it_was(moment, postgres_url):
    """A claim, a failure with its retry, and the recovery of a dead worker's run are each one
    transaction on PostgreSQL: the connection lost between their writes leaves the run as it
    was, and the worker's retry (store.patiently) completes the change. Before, the writes
    committed one by one: a claim left its run running with no worker named (to wait out the
    grace), and a failure left its run failed with no retry (missing from the study until the
    next `cnnsweep run`)."""
    store = Store.open_or_create(postgres_url, "s")
    store.enqueue_missing(runs(2))
    me = holder = this_worker()
    if moment == "recover":  # a worker of this machine whose process is gone
        exited = subprocess.Popen(["true"])
        exited.wait()
        holder = {**this_worker(), "pid": exited.pid}
    claimed = None if moment == "claim" else store.claim(holder)
    before = [(r.state, r.attempts) for r in store.records()]
    # The claim's second write names the worker; a failure's last creates the retry's trial.
    statement = "INSERT INTO trial_user_attributes" if moment == "claim" else "INSERT INTO trials"
    with pytest.raises(Exception) as lost, connection_lost_at(store, statement) as met:
        if moment == "claim":
            store.claim(me)
        elif moment == "fail":
            store.fail(claimed.trial_id, "interrupted", retry=True)
        else:
            store.recover_stale(grace_seconds=120, max_attempts=3)
    assert unreachable(lost.value) and statement in met
    assert [(r.state, r.attempts) for r in store.records()] == before
    assert store.held_run(me) == (claimed if moment == "fail" else None)
    if moment == "claim":  # the retry claims the same run, the first waiting
        assert patiently(lambda: store.claim(me), "claiming").run_id == "r0"
        expected = [("running", 1), ("waiting", 0)]
    else:
        if moment == "fail":  # put back: the same attempt again
            assert patiently(lambda: store.fail(claimed.trial_id, "interrupted", retry=True), "")
        else:  # taken over: the next attempt
            assert store.recover_stale(grace_seconds=120, max_attempts=3) == ["run 0"]
        expected = [("waiting", 1), ("waiting", 0)]
        waiting = store.storage.get_all_trials(store.study_id, states=(TrialState.WAITING,))
        retry = next(t for t in waiting if t.user_attrs["run_id"] == "r0")
        assert retry.user_attrs["attempt"] == (1 if moment == "fail" else 2)
    assert [(r.state, r.attempts) for r in store.records()] == expected


def test_on_postgresql_a_claim_and_a_failure_write_what_optunas_own_calls_write(postgres_url):
    """The one-transaction claim and failure write the trial's state and times as Optuna's
    set_trial_state_values does: read back through Optuna, they are the same."""
    import datetime as dt

    store = Store.open_or_create(postgres_url, "s")
    store.enqueue_missing(runs(2))
    started = dt.datetime.now()
    claimed = store.claim(this_worker())
    trial = store.storage.get_trial(claimed.trial_id)
    assert trial.state == TrialState.RUNNING and trial.datetime_complete is None
    assert abs(trial.datetime_start - started) < dt.timedelta(seconds=30)  # local, as Optuna's
    assert store.fail(claimed.trial_id, "diverged", traceback="Traceback ...", retry=True)
    trial = store.storage.get_trial(claimed.trial_id)
    assert trial.state == TrialState.FAIL
    assert abs(trial.datetime_complete - started) < dt.timedelta(seconds=30)
    assert trial.user_attrs["error"] == "diverged"
    assert trial.user_attrs["traceback"] == "Traceback ..."
    retry = store.storage.get_all_trials(store.study_id)[-1]
    assert retry.state == TrialState.WAITING and retry.number == 2
    assert retry.datetime_start is retry.datetime_complete is None
    assert retry.user_attrs == _enqueued_attrs(trial.user_attrs, 1)
    assert retry.params == trial.params == {"lr": 0.1}
    assert retry.distributions == trial.distributions
