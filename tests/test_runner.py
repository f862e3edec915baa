"""Whole studies through the command line: parallel workers, both backends, kills and resumes."""

import collections
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from optuna.distributions import CategoricalDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from PIL import Image

from cnnsweep.cli import main
from cnnsweep.data import load_data
from cnnsweep.errors import ConfigError
from cnnsweep.journal import LOCK_GRACE
from cnnsweep.runner import study_estimate
from cnnsweep.spec import load_study
from cnnsweep.store import Store, StoreError, this_worker
from cnnsweep.worker import WorkerOptions, check_speed, run_worker, worker_process
from tests.conftest import (
    TINY_STUDY,
    cut_last_line,
    tar_folder,
    torn_files,
    write_image_folder,
    write_spec,
)


def cnnsweep(*args: str, cwd, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cnnsweep", *args], cwd=cwd, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, **kwargs,
    )  # fmt: skip


def assert_each_run_completed_once(store: Store, expected: int) -> None:
    trials = store.trial_states()
    assert all(run_id is not None for run_id, _ in trials), "a stray trial (no run) exists"
    complete = collections.Counter(run_id for run_id, state in trials if state == "complete")
    assert len(complete) == expected and set(complete.values()) == {1}, complete
    assert [r.state for r in store.records()] == ["complete"] * expected


def records_so_far(journal: Path, study: str) -> list:
    """The study's records as a running `cnnsweep run` has written them so far (none before it
    has created the journal, the study and its mark in it)."""
    try:
        return Store.open(str(journal), study).records()
    except StoreError:  # not there yet, or not yet marked as cnnsweep's
        return []


def assert_factors_are_optuna_parameters(store: Store, runs: int) -> None:
    """Optuna's own API (as optuna-dashboard uses it) sees each run's grid levels as categorical
    parameters, and its importance evaluators can rank them."""
    storage = store.url
    if "://" not in storage:  # a journal file, opened as optuna-dashboard opens it
        storage = JournalStorage(JournalFileBackend(store.url))
    study = optuna.load_study(study_name=store.study_name, storage=storage)
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) == runs
    levels = {"optimizer": ["adam", "sgd"], "lr": [0.001, 0.05],
              "regularization": ["batch_norm", "dropout"]}  # fmt: skip
    for trial in trials:
        assert set(trial.params) == set(levels)
        assert trial.params["lr"] == {"adam": 0.001, "sgd": 0.05}[trial.params["optimizer"]]
        for name, choices in levels.items():
            assert trial.distributions[name] == CategoricalDistribution(choices)
    importances = optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.PedAnovaImportanceEvaluator()
    )
    assert set(importances) <= set(levels)


def test_three_workers_complete_eight_runs_exactly_once_on_postgresql(
    tiny_spec, tmp_path, postgres_url, capsys, monkeypatch
):
    """Three worker processes share one PostgreSQL store. (Several workers on one journal file:
    the kill and Ctrl-C tests below, which run the command in a process of its own.)"""
    monkeypatch.chdir(tmp_path)
    spec = tiny_spec(epochs=10, seeds=2)  # runs of half a second: every worker gets some
    args = ["run", str(spec), "--workers", "3", "--devices", "cpu", "--store", postgres_url,
            "--no-report"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "complete: 8" in out
    assert "report: not written (--no-report)" in out and "--store URL" in out
    assert not (tmp_path / "runs" / "tiny" / "report").exists()
    store = Store.open(postgres_url, "tiny")
    assert_each_run_completed_once(store, 8)
    assert_factors_are_optuna_parameters(store, 8)
    workers = {(r.worker["host"], r.worker["pid"]) for r in store.records()}
    assert len(workers) == 3  # all three processes took part
    assert all(r.environment["torch"] and r.environment["device"] == "cpu" for r in store.records())
    csv = pd.read_csv(tmp_path / "runs" / "tiny" / "results.csv")
    assert list(csv.columns[:11]) == [
        "lr", "batch_size", "optimizer", "train_pct", "test_pct", "batch_norm", "dropout",
        "best_train_acc", "epochs_run", "test_accuracy", "train_time",
    ]  # fmt: skip
    assert len(csv) == 8 and csv.test_accuracy.notna().all()


def test_a_changed_spec_is_refused_with_a_diff_and_results_stay(tiny_spec, tmp_path, capsys,
                                                                 monkeypatch):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    spec = tiny_spec(name="changing", epochs=1, seeds=1)
    assert main(["run", str(spec), "--devices", "cpu", "--no-report"]) == 0
    journal = tmp_path / "runs" / "changing" / "journal.log"
    size = journal.stat().st_size
    spec.write_text(spec.read_text().replace("max_epochs = 1", "max_epochs = 2"))
    capsys.readouterr()
    assert main(["run", str(spec), "--devices", "cpu", "--no-report"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "different spec" in err
    assert "spec.fixed.max_epochs: 1 -> 2" in err
    assert journal.stat().st_size == size  # nothing was written
    assert main(["run", str(spec), "--devices", "cpu", "--allow-spec-change", "--no-report"]) == 0
    records = Store.open(str(journal), "changing").records()
    assert len(records) == 8 and {r.state for r in records} == {"complete"}


def test_speed_switches_of_the_command_train_the_same_runs(tiny_spec, tmp_path, capsys,
                                                            monkeypatch):  # fmt: skip
    """`cnnsweep run --eval-batch-size 32 --cuda-graph`: every run trains with them (its stored
    result's config says so) and keeps the id the study gives it; the same command without them
    then has nothing to do. A switch that clashes with the spec's own settings, or with another
    switch, is one line and stores nothing."""
    monkeypatch.chdir(tmp_path)
    spec = tiny_spec(name="speedy", epochs=1, seeds=1)
    fast = ["--eval-batch-size", "32", "--cuda-graph"]
    assert main(["run", str(spec), "--devices", "cpu", "--no-report", *fast]) == 0
    journal = tmp_path / "runs" / "speedy" / "journal.log"
    records = Store.open(str(journal), "speedy").records()
    ids = sorted(run.run_id for run in load_study(str(spec)).runs())  # the study's own ids
    assert sorted(r.run_id for r in records) == ids and {r.state for r in records} == {"complete"}
    for record in records:
        assert record.config["eval_batch_size"] == 256  # the study's, as stored
        used = record.result["config"]
        assert used["eval_batch_size"] == 32 and used["cuda_graph"] is True, used
    blob = journal.read_bytes()
    assert main(["run", str(spec), "--devices", "cpu", "--no-report"]) == 0
    assert "4 of 4 runs already finished" in capsys.readouterr().err
    assert journal.read_bytes() == blob  # nothing trained again, nothing written

    clash = tiny_spec(name="clash", epochs=1, seeds=1)
    clash.write_text(clash.read_text().replace("[fixed]\n", "[fixed]\ncompile = true\n"))
    for spec_path, switches in ((clash, ["--cuda-graph"]), (spec, ["--compile", "--cuda-graph"])):
        capsys.readouterr()
        assert main(["run", str(spec_path), "--devices", "cpu", *switches]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "cuda_graph and compile" in err, err
    assert not (tmp_path / "runs" / "clash").exists() and journal.read_bytes() == blob
    # `cnnsweep worker` takes the same switches, and checks them before it claims a run.
    assert main(["worker", "--study", "speedy", "--compile", "--cuda-graph"]) == 2
    document = Store.open(str(journal), "speedy").document()
    document["spec"]["fixed"]["compile"] = True  # as the clashing spec would be stored
    with pytest.raises(ConfigError, match="cuda_graph and compile"):
        check_speed(document, {"cuda_graph": True})
    check_speed(document, {"eval_batch_size": 32})
    assert journal.read_bytes() == blob
    # A second seed's estimate: with the same switches, at the rates the four trained with them;
    # without them, those rates are not its runs' (they train another step): a probe measures.
    grown = load_study(str(tiny_spec(name="speedy", epochs=1, seeds=2)))
    store, data, cpu = Store.open(str(journal), "speedy"), load_data(grown.spec.data), "cpu"
    sources = [study_estimate(grown, store, data, [torch.device(cpu)], 1, speed=speed).speed_source
               for speed in ({"eval_batch_size": 32, "cuda_graph": True}, {})]  # fmt: skip
    assert sources == ["as 4 finished runs trained", "measured by a probe"]


def kill_session_when(spec, tmp_path, study: str, ready, workers: int = 1, extra=()) -> Path:
    """Start ``cnnsweep run SPEC [extra]`` in a session of its own and SIGKILL the whole session
    (parent and workers) once ``ready(records)`` holds; returns the study's journal."""
    journal, _ = signal_session_when(spec, tmp_path, study, ready, signal.SIGKILL, workers, extra)
    return journal


def as_a_terminal_starts_it() -> None:
    """In the child, before exec: Ctrl-C (SIGINT) handled as a shell's foreground job has it.
    A job started in the background of a script (as CI may run this suite) inherits SIGINT
    ignored, and Python then installs no KeyboardInterrupt handler: a Ctrl-C would do nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_session(spec, tmp_path, workers: int, extra=()) -> subprocess.Popen:
    """``cnnsweep run SPEC [extra]`` (no report) in a session of its own, as a terminal's
    foreground job: a signal to the session reaches the parent and its workers."""
    return cnnsweep("run", str(spec), "--workers", str(workers), "--devices", "cpu", "--no-report",
                    *extra, cwd=tmp_path, start_new_session=True,
                    preexec_fn=as_a_terminal_starts_it)  # fmt: skip


def wait_until(session: subprocess.Popen, journal: Path, study: str, ready) -> list:
    """The study's records once ``ready(records)`` holds. Fails, rather than returning records of
    a finished study, when the moment never comes."""
    deadline = time.time() + 180
    while time.time() < deadline and session.poll() is None:
        time.sleep(0.3)
        records = records_so_far(journal, study)
        if ready(records):
            return records
    if session.poll() is None:
        pytest.fail("the study stalled before the moment to signal it")
    output, _ = session.communicate()
    seen = [(r.label, r.state.value, r.attempts, len(r.history))
            for r in records_so_far(journal, study)]  # fmt: skip
    pytest.fail(f"the study ended (exit {session.returncode}) before the moment to signal it; "
                f"its runs {seen}; its output's end:\n{output[-3000:]}")  # fmt: skip


def kill_clear_of_the_lock(send, journal: Path) -> None:
    """SIGKILL through ``send`` (a process, or a whole session), never while it holds the
    journal's lock: stopped first, it is killed only if the lock is free, else let go on a moment.
    A kill mid-append leaves the lock to be broken after LOCK_GRACE (10 s), which
    tests/test_journal.py proves; here it would only add those seconds, now and then."""
    lock = Path(str(journal.resolve()) + ".lock")
    for _ in range(200):
        send(signal.SIGSTOP)
        time.sleep(0.01)  # stopped by then: a signal reaches a process on another core at once
        if not lock.is_symlink():
            break
        send(signal.SIGCONT)
        time.sleep(0.01)
    send(signal.SIGKILL)


def signal_session(
    session: subprocess.Popen, sig: int, journal: Path | None = None
) -> subprocess.CompletedProcess:
    """``sig`` to the whole session; a SIGKILL clear of the journal's lock where one is given."""
    if sig == signal.SIGKILL and journal is not None:
        kill_clear_of_the_lock(lambda s: os.killpg(session.pid, s), journal)
    else:
        os.killpg(session.pid, sig)
    output, _ = session.communicate(timeout=120)
    return subprocess.CompletedProcess(session.args, session.returncode, output)


def end_session(session: subprocess.Popen) -> None:
    """After a failed test: no process of the session is left running."""
    if session.poll() is None:
        os.killpg(session.pid, signal.SIGKILL)
        session.wait(timeout=30)


def signal_session_when(
    spec, tmp_path, study: str, ready, sig: int, workers: int = 1, extra=()
) -> tuple[Path, subprocess.CompletedProcess]:
    """Start ``cnnsweep run SPEC [extra]`` in a session of its own and send ``sig`` to the whole
    session (parent and workers, as a terminal's Ctrl-C does) once ``ready(records)`` holds."""
    journal = tmp_path / "runs" / study / "journal.log"
    session = start_session(spec, tmp_path, workers, extra)
    try:
        wait_until(session, journal, study, ready)
        return journal, signal_session(session, sig, journal)
    finally:
        end_session(session)


def run_again(spec, tmp_path) -> None:
    """The same ``cnnsweep run`` command again (two workers, no report), in this process: its
    workers are processes all the same."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        assert main(["run", str(spec), "--workers", "2", "--devices", "cpu", "--no-report"]) == 0


def test_sigkill_and_a_torn_journal_then_the_same_command_resumes_and_finishes_what_is_missing(
    tiny_spec, tmp_path, capsys
):
    """SIGKILL the whole session mid-study and tear the journal's last line, as a kill in the
    middle of an append would: the same command repairs the journal, keeps every finished run,
    resumes the run in flight after its last checkpointed epoch, finishes the rest, none twice,
    and removes the checkpoints."""
    spec = tiny_spec(name="resume", epochs=30, seeds=1)  # runs of seconds: kills land mid-run
    checkpoints = tmp_path / "runs" / "resume" / "checkpoints"

    def two_done_one_checkpointed(records) -> bool:
        done = sum(r.state == "complete" for r in records)
        running = [r for r in records if r.state == "running" and len(r.history) >= 3]
        return done >= 2 and bool(running) and any(checkpoints.glob("*.pt"))

    journal = kill_session_when(spec, tmp_path, "resume", two_done_one_checkpointed,
                                extra=("--checkpoint-every", "0"))  # fmt: skip
    cut_last_line(journal)
    before = {r.run_id: r.ended_at for r in Store.open(str(journal), "resume").records()
              if r.state == "complete"}  # fmt: skip
    run_again(spec, tmp_path)
    assert f"{len(before)} of 4 runs already finished" in capsys.readouterr().err
    assert len(torn_files(journal)) == 1  # the torn line, kept aside
    store = Store.open(str(journal), "resume")
    assert_each_run_completed_once_or_retried(store, 4)
    after = {r.run_id: r.ended_at for r in store.records()}
    assert all(after[run_id] == finished for run_id, finished in before.items())  # not rerun
    killed = [r for r in store.records() if r.attempts > 1]
    # The run in flight at the kill: one failed attempt, then complete (two, in the rare case
    # that the torn line was the completion of the run before it). Its history goes on from the
    # checkpoint: every epoch once, in order.
    assert 1 <= len(killed) <= 2
    for record in killed:
        assert [e["epoch"] for e in record.history] == list(range(1, len(record.history) + 1))
    assert any(r.result["resumed_after_epoch"] for r in killed)  # from its checkpoint
    assert not list(checkpoints.glob("*"))  # removed with the runs' ends


def test_a_killed_worker_is_replaced_then_ctrl_c_puts_runs_back_and_the_same_command_finishes(
    tiny_spec, tmp_path
):
    """Two workers on one journal. SIGKILL one mid-run: its run is taken over at once, and a
    third process replaces it. Then Ctrl-C the session, as a terminal does: the runs in flight go
    back to the queue, exit 130. The same command finishes the study, each run exactly once."""
    spec = tiny_spec(name="interrupted", epochs=30, seeds=1)  # runs of seconds: signals mid-run

    def running(records) -> list:
        return [r for r in records if r.state == "running" and r.history]

    journal = tmp_path / "runs" / "interrupted" / "journal.log"
    session = start_session(spec, tmp_path, workers=2)
    try:
        records = wait_until(session, journal, "interrupted", running)
        victim = min(running(records), key=lambda r: len(r.history))  # the most left to train
        first_workers = {r.worker["pid"] for r in records if r.worker}
        # Forked by the fork server (cnnsweep/launch.py), not by the command itself.
        assert parent_pid(victim.worker["pid"]) != session.pid
        pid = victim.worker["pid"]  # the worker only; the parent goes on
        kill_clear_of_the_lock(lambda s: os.kill(pid, s), journal)
        killed_at = time.time()

        def retried(records) -> list:  # taken over: running, or already done
            # Its worker named too: a claim (RUNNING, started) and its worker's name are two
            # writes, and a read between them once saw the claim alone.
            return [r for r in records if r.run_id == victim.run_id and r.attempts > 1
                    and r.started_at and r.worker]  # fmt: skip

        def taken_over_and_replaced(records) -> bool:
            workers = {r.worker["pid"] for r in records if r.worker}
            replaced = bool(workers - first_workers)  # a third process ran something
            return bool(retried(records)) and replaced and bool(running(records))

        records = wait_until(session, journal, "interrupted", taken_over_and_replaced)
        interrupted = signal_session(session, signal.SIGINT)
    finally:
        end_session(session)
    # Taken over at once: the dead process is seen on this machine, no --grace (120 s) to wait
    # out, and (killed clear of the journal's lock) no lock to break either.
    (taken_over,) = retried(records)
    assert taken_over.started_at - killed_at < LOCK_GRACE, taken_over.started_at - killed_at
    assert taken_over.worker["pid"] != victim.worker["pid"]
    assert interrupted.returncode == 130, interrupted.stdout
    assert "run the same command again" in interrupted.stdout
    put_back = Store.open(str(journal), "interrupted").records()
    in_flight = {r.run_id for r in running(records)}  # at the Ctrl-C, give or take a moment
    # The session's output too: were this to fail again, it may say why (it once did, in CI).
    assert {r.state for r in put_back} <= {"complete", "waiting"}, (
        [(r.label, r.state, r.error) for r in put_back], interrupted.stdout[-4000:])  # fmt: skip
    assert any(r.state == "waiting" for r in put_back if r.run_id in in_flight)  # put back
    run_again(spec, tmp_path)
    store = Store.open(str(journal), "interrupted")
    assert_each_run_completed_once(store, 4)
    assert_factors_are_optuna_parameters(store, 4)
    failed = [run_id for run_id, state in store.trial_states() if state == "failed"]
    assert victim.run_id in failed  # the attempt its worker died in, kept as a record


@pytest.mark.parametrize("put_back", ["stored", "store unreachable"])
def test_a_worker_killed_as_the_command_is_interrupted_leaves_no_run_running(
    put_back, tiny_spec, tmp_path, monkeypatch, caplog, ctrl_c_raises
):
    """Ctrl-C reaches `cnnsweep run` and its workers (SIGINT, as a terminal sends it) just as one
    worker is killed (by the OOM killer, say), so that worker cannot put its run back: the
    command does, once its workers have exited, and exits 130. Nothing is left running for the
    next command to find; the run goes back at the same attempt, as an interrupted run does.
    Were the store out of reach by then, the command says so in one line and still exits 130,
    and the next command takes the dead worker's run over at once.

    The command runs in this process (its workers are processes all the same), taking Ctrl-C
    as at a terminal (its workers take it as it does); the Ctrl-C comes as it reads the study's
    progress, once a run is in training."""
    from cnnsweep import runner

    # Runs far longer than the test (it interrupts them; no early stop): none can end between
    # the read that picks the victim and its kill, which waits while the victim holds the
    # journal's lock, as it does at each epoch (a run of 30 epochs once ended in that wait).
    spec = tiny_spec(name="halted", epochs=1000, seeds=1)
    spec.write_text(spec.read_text().replace("patience = 10", "patience = 1000"))
    journal = tmp_path / "runs" / "halted" / "journal.log"
    outages = {"put_back_of_exited": int(put_back == "store unreachable")}
    plant_outages(monkeypatch, outages)
    workers: list = []
    start_worker, supervise = runner._start_worker, runner._supervise

    def started(*args):
        workers.append(start_worker(*args))
        return workers[-1]

    victims: list = []

    def ctrl_c_once_a_run_trains(store, *args, **kwargs):
        read = store.records

        def records(*args, **kwargs):
            training = [r for r in read() if r.state == "running"]
            if not training:
                return read(*args, **kwargs)
            victims.append(min(training, key=lambda r: len(r.history)))  # the most left to train
            pid = victims[0].worker["pid"]
            kill_clear_of_the_lock(lambda s: os.kill(pid, s), journal)
            for worker in workers:
                if worker.pid != pid:
                    os.kill(worker.pid, signal.SIGINT)
            raise KeyboardInterrupt  # as the command's own SIGINT raises it

        monkeypatch.setattr(store, "records", records)
        return supervise(store, *args, **kwargs)

    monkeypatch.setattr(runner, "_start_worker", started)
    monkeypatch.setattr(runner, "_supervise", ctrl_c_once_a_run_trains)
    monkeypatch.setattr(runner, "PROGRESS_INTERVAL", 0.2)  # its reads: 1 s apart otherwise
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(spec), "--workers", "2", "--devices", "cpu", "--no-report"]) == 130
    assert outages == {"put_back_of_exited": 0} and all(w.exitcode is not None for w in workers)
    (victim,) = victims
    store = Store.open(str(journal), "halted")
    after = {r.run_id: r for r in store.records()}
    warned = [r.getMessage() for r in caplog.records if "could not put back" in r.getMessage()]
    if put_back == "stored":
        assert {r.state for r in after.values()} <= {"complete", "waiting"}, [
            (r.label, r.state) for r in after.values()
        ]  # fmt: skip
        # The victim's run among them: put back (without the command's put-back it stays
        # running), or done had it ended just before the kill (then its worker's next run).
        assert not warned
        return
    assert len(warned) == 1 and "\n" not in warned[0], warned
    assert warned[0].endswith("connection refused"), warned
    left = after[victim.run_id]
    if left.state == "waiting":
        # The other worker, between two runs as the kill came, looked for runs of dead workers
        # before its Ctrl-C: it found the victim's, failed it and enqueued it again.
        assert left.attempts == 1 and left.trial_number > victim.trial_number, left
        assert "running" not in {r.state for r in after.values()}, after
        return
    # Else it stays running, its worker gone: lost, and the next command takes it over at once.
    assert left.state == "running" and left.worker["pid"] == victim.worker["pid"], left
    assert left.lost, left
    assert store.recover_stale(grace_seconds=120, max_attempts=3) == [left.label]


CTRL_C_OF_WORKERS = """
import multiprocessing.forkserver, os, signal, sys, time
from cnnsweep.launch import worker_context

signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a script's background job starts
context = worker_context(["cpu"])
context.set_forkserver_preload(["cnnsweep.worker"])  # no TorchDynamo: no run gets that far
# The fork server starts so, and keeps it; before this process's imports, as the command's
# does, so that its imports and the server's run side by side.
multiprocessing.forkserver.ensure_running()
from cnnsweep.runner import _start_worker, open_study_store, run_dicts
from cnnsweep.spec import load_study
from cnnsweep.worker import WorkerOptions

study = load_study(sys.argv[1])
store = open_study_store(study, "journal.log", False)
store.enqueue_missing(run_dicts(study))

def ctrl_c_of_a_worker(wait):
    worker = _start_worker(context, WorkerOptions("journal.log", study.name, device="cpu"))
    while not any(r.state == "running" and (r.worker or {}).get("pid") == worker.pid
                  for r in store.records()):
        time.sleep(0.05)
    os.kill(worker.pid, signal.SIGINT)
    worker.join(timeout=wait)
    alive = worker.exitcode is None
    if alive:
        worker.terminate()  # SIGTERM, which a worker takes as a Ctrl-C
        worker.join(timeout=30)
    return alive, worker.exitcode, sorted(str(r.state) for r in store.records())

signal.signal(signal.SIGINT, signal.default_int_handler)  # the command now takes a Ctrl-C
print(ctrl_c_of_a_worker(30))
signal.signal(signal.SIGINT, signal.SIG_IGN)  # and now ignores it
print(ctrl_c_of_a_worker(1), flush=True)
os._exit(0)  # no teardown of all that was imported: seconds here
"""


def test_a_worker_takes_a_ctrl_c_as_the_command_that_starts_it_does(tiny_spec, tmp_path):
    """A fork server keeps the SIGINT disposition it started with, and its workers took it
    from there: a server started while its process ignored SIGINT (a suite in the background
    of a script, a test of which then takes Ctrl-C) made every later worker deaf to a Ctrl-C,
    training on for 30 s until the command stopped waiting. A worker now takes it as the
    process that starts it does at that moment: interrupted (130), its run put back; or,
    where that process ignores SIGINT, ignored too (until a SIGTERM)."""
    spec = tiny_spec(name="deaf", epochs=1000, seeds=1)
    spec.write_text(spec.read_text().replace("patience = 10", "patience = 1000"))
    done = subprocess.run([sys.executable, "-c", CTRL_C_OF_WORKERS, str(spec)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=180)  # fmt: skip
    assert done.returncode == 0, done.stderr
    takes, ignores = done.stdout.splitlines()[-2:]
    # Interrupted: exit 130, its run waiting again (the four runs: none running).
    assert takes == "(False, 130, ['waiting', 'waiting', 'waiting', 'waiting'])", done.stdout
    # Ignored: still working 1 s on; then a SIGTERM stops it, its run put back all the same.
    assert ignores == "(True, 130, ['waiting', 'waiting', 'waiting', 'waiting'])", done.stdout


def test_a_sigterm_to_the_command_alone_stops_its_workers_and_puts_their_runs_back(
    tiny_spec, tmp_path, monkeypatch, capsys
):
    """`kill PID` of `cnnsweep run` (a scheduler or service manager stopping it) reaches that
    process only: the command passes the SIGTERM on to its workers, which put their runs back,
    and exits 143, as terminated. Before, it died at once and its workers trained on.

    The command runs in this process, which the SIGTERM is sent to (the handler is the
    command's own, and is restored after it); its workers are processes all the same."""
    from cnnsweep import runner

    spec = tiny_spec(name="stopped", epochs=30, seeds=3)  # runs of seconds: signals mid-study
    workers: list = []
    start_worker, supervise = runner._start_worker, runner._supervise

    def started(*args):
        workers.append(start_worker(*args))
        return workers[-1]

    def sigterm_once_runs_train(store, *args, **kwargs):
        read = store.records

        def records(*args, **kwargs):
            if any(r.state == "running" for r in read()):
                os.kill(os.getpid(), signal.SIGTERM)  # raised here, in the main thread
            return read(*args, **kwargs)

        monkeypatch.setattr(store, "records", records)
        return supervise(store, *args, **kwargs)

    monkeypatch.setattr(runner, "_start_worker", started)
    monkeypatch.setattr(runner, "_supervise", sigterm_once_runs_train)
    monkeypatch.setattr(runner, "SIGTERM_HEAD_START_S", 0.1)  # 1 s: no group signal here
    monkeypatch.setattr(runner, "PROGRESS_INTERVAL", 0.2)  # its reads: 1 s apart otherwise
    monkeypatch.chdir(tmp_path)
    before = signal.getsignal(signal.SIGTERM)
    assert main(["run", str(spec), "--workers", "2", "--devices", "cpu", "--no-report"]) == 143
    assert signal.getsignal(signal.SIGTERM) is before
    assert "cnnsweep: terminated; run the same command again" in capsys.readouterr().err
    # Each worker ended as a Ctrl-C ends it (exit 130), having put its run back itself.
    assert [w.exitcode for w in workers] == [130, 130]
    store = Store.open(str(tmp_path / "runs" / "stopped" / "journal.log"), "stopped")
    records = store.records()
    assert {r.state for r in records} <= {"complete", "waiting"}, [(r.label, r.state)
                                                                   for r in records]  # fmt: skip
    assert any(r.state == "waiting" and r.attempts == 1 for r in records)  # put back


def parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def assert_each_run_completed_once_or_retried(store: Store, runs: int) -> None:
    trials = store.trial_states()
    complete = collections.Counter(run_id for run_id, state in trials if state == "complete")
    assert len(complete) == runs and set(complete.values()) == {1}
    assert all(run_id is not None for run_id, _ in trials)
    failed = [run_id for run_id, state in trials if state == "failed"]
    assert len(failed) == 1  # the killed attempt, kept as a record


def test_status_and_export(tiny_spec, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = tiny_spec(name="small", epochs=1, seeds=1)
    assert main(["run", str(spec), "--devices", "cpu", "--no-report"]) == 0
    ended = capsys.readouterr().out.splitlines()
    assert ended[-1].startswith("report: not written (--no-report)")
    assert main(["status", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "runs: 4" in out and "complete: 4" in out and "eta: 0m00s" in out
    assert main(["export", "--study", "small", "-o", "r.parquet"]) == 0  # Parquet, by its name
    frame = pd.read_parquet(tmp_path / "r.parquet")
    assert len(frame) == 4 and frame.columns[0] == "lr" and (frame.state == "complete").all()
    assert main(["export", str(spec), "-o", "r.csv"]) == 0
    csv = pd.read_csv(tmp_path / "r.csv")
    assert list(csv["run_id"]) == list(frame["run_id"])  # the same runs, CSV or Parquet
    assert csv["test_accuracy"].tolist() == pytest.approx(frame["test_accuracy"].tolist())
    assert main(["export", "--study", "small", "--format", "csv", "-o", "r.txt"]) == 0
    assert (tmp_path / "r.txt").read_bytes() == (tmp_path / "r.csv").read_bytes()

    def no_workers(*_args):
        raise AssertionError("a finished study started workers")

    monkeypatch.setattr("cnnsweep.runner._supervise", no_workers)
    assert main(["run", str(spec), "--devices", "cpu"]) == 0  # all done: the report, at once
    ended = capsys.readouterr().out.splitlines()  # the study's findings, then the report
    assert any(line.startswith("best: ") for line in ended) and ended[-1].startswith("report: ")
    assert (tmp_path / "runs" / "small" / "report" / "report.html").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "SPEC", "--workers", "0"], "invalid --workers 0: must be between 1 and 256"),
        (["run", "SPEC", "--devices", "cuda:3"], "device 'cuda:3' does not exist"),
        (["run", "SPEC", "--store", "sqlite:///x.db"], "SQLite is not supported"),
        (["run", "SPEC", "--store", "postgresql://bob:hunter2@127.0.0.1:9/x"],
         "cannot reach store postgresql+psycopg://bob:***@127.0.0.1:9/x"),
        (["status", "--study", "nothing"], "no study store at runs/nothing/journal.log"),
        (["export", "--study", "nothing", "-o", "x.csv"], "no study store at"),
        (["status"], "name the study: give a SPEC or --study NAME"),
    ],
)  # fmt: skip
def test_bad_run_input_is_one_line_and_changes_nothing(
    args, message, tiny_spec, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    spec = tiny_spec()
    args = [str(spec) if a == "SPEC" else a for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "hunter2" not in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_run_that_raises_is_recorded_failed_and_the_others_go_on(
    bars_folder, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    spec = write_spec(tmp_path / "mixed.toml", f"""
name = "mixed"
data = "{bars_folder}"
[fixed]
width = 0.0625
max_epochs = 1
[grid]
normalization = ["report", "train"]  # 'report' needs RGB images; these are grayscale
""")  # fmt: skip
    assert main(["run", str(spec), "--devices", "cpu"]) == 1  # some runs failed
    captured = capsys.readouterr()
    assert "complete: 1, failed: 1" in captured.out
    # The estimate's probe met the failing run first: no time, and the study went on.
    assert "no time estimate (the probe failed: ConfigError: normalization 'report'" in captured.err
    bad, ok = Store.open(None, "mixed").records()
    assert ok.state == "complete" and bad.state == "failed"
    assert bad.error.startswith("ConfigError: normalization 'report' needs 3-channel images")
    # The whole traceback is stored; status shows the error and where it was raised.
    assert bad.traceback.startswith("Traceback (most recent call last):")
    assert "_prepare_splits" in bad.traceback
    assert main(["status", "--study", "mixed"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if "failed   " in ln)
    assert line.startswith("  failed   normalization=report seed=0: ConfigError: normalization")
    assert "train.py" in line and "_prepare_splits" in line


SEED_PROTOCOL = """
name = "script"
protocol = "seed"
data = "{data}"
[fixed]
width = 0.0625
max_epochs = 5
eval_batch_size = 256
[grid]
split = [0.7, 0.9]
"""


def test_workers_from_the_command_line_and_the_reports_csv_columns(tmp_path, bars_folder,
                                                                   capsys):  # fmt: skip
    """`cnnsweep worker` (as on another machine; here, in this process) finishes a
    seed-protocol study; its export has the report script's columns with the script's
    meanings."""
    from cnnsweep.runner import open_study_store, run_dicts
    from cnnsweep.spec import load_study

    spec = write_spec(tmp_path / "script.toml", SEED_PROTOCOL.format(data=bars_folder))
    journal = str(tmp_path / "journal.log")
    study = load_study(str(spec))
    open_study_store(study, journal, False).enqueue_missing(run_dicts(study))
    args = ["worker", "--store", journal, "--study", "script", "--device", "cpu",
            "--max-attempts", "1"]  # fmt: skip
    assert main(args) == 0
    output = capsys.readouterr()
    assert "nothing left to claim in 'script'" in output.out + output.err, output
    records = Store.open(journal, "script").records()
    assert [r.state for r in records] == ["complete", "complete"]
    assert main(["export", "--study", "script", "--store", journal, "-o",
                 str(tmp_path / "r.csv")]) == 0  # fmt: skip
    csv = pd.read_csv(tmp_path / "r.csv")
    for row, record in zip(csv.itertuples(), records, strict=True):
        result, history = record.result, record.history
        assert row.epochs_run == result["best_epoch"]  # the script's "epochs_run": best epoch
        assert row.best_train_acc == max(e["train_accuracy"] for e in history)
        accuracies = [e["train_accuracy"] for e in history]
        assert row.epochs_run == accuracies.index(max(accuracies)) + 1  # seed: on training acc.
        assert (row.train_pct, row.test_pct) == (
            record.config["split"],
            round(1 - record.config["split"], 10),
        )
        assert row.train_time == round(result["train_time"], 2)
        assert row.test_accuracy == result["test_accuracy"]


def enqueued_journal(tmp_path: Path, spec_text: str) -> str:
    """A journal store with the study of ``spec_text`` enqueued, as `cnnsweep run` leaves it
    for workers on other machines."""
    from cnnsweep.runner import open_study_store, run_dicts

    spec = write_spec(tmp_path / "study.toml", spec_text)
    journal = str(tmp_path / "journal.log")
    study = load_study(str(spec))
    open_study_store(study, journal, False).enqueue_missing(run_dicts(study))
    return journal


def plant_outages(monkeypatch, outages: dict[str, int], after_commit: bool = False) -> None:
    """The next ``outages[name]`` calls of each Store method ``name`` raise the connection
    error a database restart gives: before the call writes anything or, ``after_commit``,
    once it has written everything, as when a committed write's reply is lost. The counts go
    down as they are used. The retries' pauses are shortened."""
    from sqlalchemy.exc import OperationalError

    def flaky(name: str):
        original = getattr(Store, name)

        def call(self, *args, **kwargs):
            if not outages[name]:
                return original(self, *args, **kwargs)
            outages[name] -= 1
            if after_commit:
                original(self, *args, **kwargs)
            refused = ConnectionRefusedError("connection refused")
            raise OperationalError("(planted) connect", {}, refused)

        return call

    for name in outages:
        monkeypatch.setattr(Store, name, flaky(name))
    monkeypatch.setattr("cnnsweep.store.FIRST_RETRY_S", 0.01)


def test_a_worker_rides_out_a_store_briefly_unreachable(tmp_path, bars_folder, monkeypatch,
                                                         caplog):  # fmt: skip
    """The store cannot be reached once as an epoch is recorded and once as a result is stored
    (as when a database restarts): the worker tries each write again, says so, and finishes
    the study with every epoch and result stored, each run once."""
    journal = enqueued_journal(tmp_path, SEED_PROTOCOL.format(data=bars_folder))
    outages = {"record_epoch": 1, "finish": 1}  # calls to fail, per store method
    plant_outages(monkeypatch, outages)
    args = ["worker", "--store", journal, "--study", "script", "--device", "cpu",
            "--max-attempts", "1"]  # fmt: skip
    assert main(args) == 0
    assert outages == {"record_epoch": 0, "finish": 0}
    said = caplog.text
    assert "unreachable while recording epoch 1 of" in said and "while storing the result" in said
    records = Store.open(journal, "script").records()
    assert [(r.state, r.attempts) for r in records] == [("complete", 1), ("complete", 1)]
    assert all(len(r.history) == r.result["epochs_trained"] for r in records)


def test_the_command_waits_out_a_store_unreachable_as_it_follows_its_workers(
    tiny_spec, tmp_path, monkeypatch, caplog
):
    """`cnnsweep run` reads the store to follow its workers; once they run, that read finds
    the store unreachable (as when a database restarts): the command says so, tries again,
    and ends when the study does, every run complete, instead of failing mid-study."""
    from cnnsweep import runner

    spec = tiny_spec(name="followed", epochs=1, seeds=1)
    outages = {"records": 0}
    plant_outages(monkeypatch, outages)
    supervise = runner._supervise

    def with_an_outage(*args, **kwargs):
        outages["records"] = 1  # the command's next read of the study fails once
        return supervise(*args, **kwargs)

    monkeypatch.setattr(runner, "_supervise", with_an_outage)
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(spec), "--devices", "cpu", "--no-report"]) == 0
    assert outages == {"records": 0}
    assert "unreachable while reading the progress" in caplog.text
    store = Store.open(str(tmp_path / "runs" / "followed" / "journal.log"), "followed")
    assert [(r.state, r.attempts) for r in store.records()] == [("complete", 1)] * 4


def test_workers_that_keep_dying_end_the_command_non_zero_with_the_runs_left_waiting(
    tiny_spec, tmp_path, monkeypatch, capsys
):
    """Every worker process dies at once (exit 1, as a crash or the OOM killer would end it):
    the command replaces them a bounded number of times, then ends with one line saying how
    many runs are not finished and exit status 1, the runs left waiting for the next command.
    Before, it said nothing of them and exited 0."""
    from cnnsweep import runner

    spec = tiny_spec(name="doomed", epochs=1, seeds=1)
    started = []

    def dying(context, *_):
        process = context.Process(target=os._exit, args=(1,), daemon=True)
        process.start()
        started.append(process)
        return process

    monkeypatch.setattr(runner, "_start_worker", dying)
    monkeypatch.chdir(tmp_path)
    args = ["run", str(spec), "--workers", "2", "--devices", "cpu", "--max-attempts", "2"]
    assert main([*args, "--no-report"]) == 1
    assert len(started) == 2 + 2 * 2  # the two, then workers x max attempts replacements
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("cnnsweep: 4 runs not finished: their workers kept failing (above); "
                       "run the same command again"), err  # fmt: skip
    store = Store.open(str(tmp_path / "runs" / "doomed" / "journal.log"), "doomed")
    assert [r.state for r in store.records()] == ["waiting"] * 4


def test_an_idle_worker_ends_when_told_the_study_is_done_not_at_its_next_look(
    tmp_path, bars_folder, monkeypatch
):
    """A worker with nothing to claim while another trains the study's last runs waits between
    looks at the queue (0.1 s, doubling up to 2 s; 30 s from the first here). `cnnsweep run`
    sets an event once it sees nothing pending: the wait ends then, and so does the worker,
    with no run of its own."""
    monkeypatch.setattr("cnnsweep.worker.FIRST_IDLE_WAIT", 30.0)
    journal = enqueued_journal(tmp_path, SEED_PROTOCOL.format(data=bars_folder))
    store = Store.open(journal, "script")
    other = this_worker()  # another worker of this process: alive, beating
    held = [store.claim(other), store.claim(other)]
    study_done = threading.Event()

    def the_other_worker_finishes() -> None:
        time.sleep(0.5)
        for claim in held:
            store.finish(claim.trial_id, {"test_accuracy": 50.0, "history": []}, False)
        study_done.set()  # what the command does once it reads the study finished

    finisher = threading.Thread(target=the_other_worker_finishes)
    finisher.start()
    started = time.monotonic()
    options = WorkerOptions(journal, "script", device="cpu", poll_interval=30)
    assert run_worker(options, study_done=study_done) == 0
    finisher.join()
    assert time.monotonic() - started < 10  # 0.5 s and the data's load; not 30 s
    assert [r.state for r in store.records()] == ["complete", "complete"]


def test_an_event_set_before_the_study_grew_again_cuts_no_wait(tmp_path, bars_folder, monkeypatch):
    """The event was set (nothing was pending), then runs are pending again (another machine
    enqueued a changed spec's runs, say): the worker's waits between looks are its usual ones,
    not cut short by the event over and over, which would poll the store without a pause."""
    journal = enqueued_journal(tmp_path, SEED_PROTOCOL.format(data=bars_folder))
    store = Store.open(journal, "script")
    other = this_worker()
    held = [store.claim(other), store.claim(other)]
    study_done = threading.Event()
    study_done.set()
    looks = []
    has_pending = Store.has_pending
    monkeypatch.setattr(Store, "has_pending", lambda self: looks.append(1) or has_pending(self))
    finisher = threading.Timer(0.4, lambda: [
        store.finish(claim.trial_id, {"test_accuracy": 50.0, "history": []}, False)
        for claim in held
    ])  # fmt: skip
    finisher.start()
    assert run_worker(WorkerOptions(journal, "script", device="cpu"), study_done=study_done) == 0
    finisher.join()
    assert 2 <= len(looks) <= 5, len(looks)  # 0.1 s, 0.2 s, 0.4 s apart


def test_a_store_lost_for_longer_than_the_patience_ends_the_command_in_one_line(
    tmp_path, bars_folder, monkeypatch, capsys, caplog
):
    """The store stays unreachable past the worker's patience (shortened here from 5 minutes)
    as it records an epoch: the command ends with one line naming the cause and exit status 1,
    not a traceback. The run is not failed as if its training had failed (and the worker gone
    on to the next run): it stays running, for a later command to take over once its worker's
    process is gone, and the rest of the study is untouched."""
    journal = enqueued_journal(tmp_path, SEED_PROTOCOL.format(data=bars_folder))
    before = Path(journal).read_bytes()
    outages = {"record_epoch": 10**6}  # from the first epoch on, every try
    plant_outages(monkeypatch, outages)
    monkeypatch.setattr("cnnsweep.store.STORE_PATIENCE_S", 0.2)
    args = ["worker", "--store", journal, "--study", "script", "--device", "cpu"]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("cnnsweep: error: the store cannot be"), err
    assert "connection refused" in err and "run the command again" in err
    assert Path(journal).read_bytes().startswith(before)  # appended to, nothing rewritten
    store = Store.open(journal, "script")
    assert [(r.state, r.history) for r in store.records()] == [("running", []), ("waiting", [])]
    # Its worker's process is this one, still alive: taken over here only by a zero grace.
    assert store.recover_stale(grace_seconds=-1, max_attempts=3) == ["split=0.7 seed=0"]
    # A worker process of `cnnsweep run` ends so too: one line, exit status 1.
    caplog.clear()
    handler = signal.getsignal(signal.SIGINT)  # the worker sets its own: this process's, after
    with pytest.raises(SystemExit) as ended:
        try:
            worker_process(WorkerOptions(journal, "script", device="cpu"))
        finally:
            signal.signal(signal.SIGINT, handler)
    assert ended.value.code == 1
    (said,) = [r.getMessage() for r in caplog.records if "cannot be reached" in r.getMessage()]
    assert "\n" not in said and said.endswith("connection refused"), said


def test_replies_lost_after_the_database_committed_lose_no_run_and_train_none_twice(
    tmp_path, bars_folder, monkeypatch, caplog
):
    """The database commits a claim and a result, but the replies are lost (the connection
    drops just after the commit). The claim's retry takes up the run it had claimed: it does
    not claim another and leave that one to wait out the grace and train again. The result's
    retry finds the result stored: it does not report it discarded."""
    journal = enqueued_journal(tmp_path, SEED_PROTOCOL.format(data=bars_folder))
    outages = {"claim": 1, "finish": 1}
    plant_outages(monkeypatch, outages, after_commit=True)
    # A grace of 3 s: a run claimed and left would be taken over and trained again in the test.
    args = ["worker", "--store", journal, "--study", "script", "--device", "cpu",
            "--heartbeat", "1", "--grace", "3"]  # fmt: skip
    assert main(args) == 0
    assert outages == {"claim": 0, "finish": 0}
    assert "claiming a run" in caplog.text and "while storing the result" in caplog.text
    assert "discarded" not in caplog.text
    store = Store.open(journal, "script")
    assert [(r.state, r.attempts) for r in store.records()] == [("complete", 1), ("complete", 1)]
    assert [t.state.name for t in store.storage.get_all_trials(store.study_id)] == [
        "COMPLETE", "COMPLETE"
    ]  # fmt: skip


def test_a_search_draw_whose_reply_is_lost_is_taken_up_not_drawn_again(
    tmp_path, bars_folder, monkeypatch, caplog
):
    """A search's draw (Optuna's ask, then the run's attributes) committed but its reply lost:
    the worker tries again, takes up the run it drew, and the search ends within its budget
    with no draw left over. Before, the error ended the worker."""
    search = SEARCH_PROTOCOL.format(data=bars_folder)
    journal = enqueued_journal(tmp_path, search)
    outages = {"ask": 1}
    plant_outages(monkeypatch, outages, after_commit=True)
    args = ["worker", "--store", journal, "--study", "drawn", "--device", "cpu",
            "--heartbeat", "1", "--grace", "3"]  # fmt: skip
    assert main(args) == 0
    assert outages == {"ask": 0} and "claiming a run" in caplog.text
    store = Store.open(journal, "drawn")
    assert [(r.state, r.attempts) for r in store.records()] == [("complete", 1)] * 3
    assert [t.state.name for t in store.storage.get_all_trials(store.study_id)] == [
        "COMPLETE"
    ] * 3  # fmt: skip


SEARCH_PROTOCOL = """
name = "drawn"
protocol = "holdout"
data = "{data}"
[fixed]
width = 0.0625
max_epochs = 2
eval_batch_size = 256
train_eval_images = 0
[search]
sampler = "random"
trials = 3
lr = {{ low = 1e-4, high = 1e-2, log = true }}
"""


def test_other_data_is_refused_by_run_and_worker_with_the_store_untouched(
    tmp_path, capsys, monkeypatch
):
    """A study records the signature of the data it trains on (sizes, classes, a hash of the
    decoded pixels); `cnnsweep run` and `cnnsweep worker` with other data (one pixel changed,
    or one class more) are refused in one line, exit 2, the journal byte for byte as it was.
    The same images elsewhere, or in another format, are the same data."""
    monkeypatch.chdir(tmp_path)
    images = write_image_folder(tmp_path / "images", train_per_class=8, test_per_class=2)
    spec = write_spec(tmp_path / "signed.toml",
                      TINY_STUDY.format(name="signed", data=images, epochs=1, seeds=1))  # fmt: skip
    assert main(["run", str(spec), "--devices", "cpu", "--no-report"]) == 0
    store = Store.open(None, "signed")
    signature = store.data_signature()
    assert signature == load_data(images).signature()
    capsys.readouterr()
    assert main(["status", "--study", "signed"]) == 0  # what the workers are checked against
    assert (f"data: 80 training and 20 test images (1x28x28, 10 classes; sha256 "
            f"{signature['sha256'][:12]})") in capsys.readouterr().out  # fmt: skip
    copy = shutil.copytree(images, tmp_path / "elsewhere" / "images")
    assert load_data(copy).signature() == signature  # another path, the same data
    packed = tar_folder(images, tmp_path / "images.tar.gz")
    assert load_data(packed).signature() == signature  # another format, too
    changed = shutil.copytree(images, tmp_path / "changed")
    image = changed / "train" / "class3" / "0002.png"
    pixels = np.array(Image.open(image))
    pixels[0, 0] ^= 1  # one bit of one pixel
    Image.fromarray(pixels).save(image)
    more = shutil.copytree(images, tmp_path / "more")
    for split in ("train", "test"):
        shutil.copytree(more / split / "class0", more / split / "class10")
    journal = tmp_path / "runs" / "signed" / "journal.log"
    before = journal.read_bytes()
    for argv, words in [
        (["run", str(spec), "--devices", "cpu", "--data", str(changed)], "other pixels"),
        (["worker", "--study", "signed", "--device", "cpu", "--data", str(changed)],
         "other pixels"),
        (["run", str(spec), "--devices", "cpu", "--data", str(more)], "classes ["),
    ]:  # fmt: skip
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "is not the data study 'signed' trains on" in err, err
        assert words in err, err
    assert journal.read_bytes() == before
