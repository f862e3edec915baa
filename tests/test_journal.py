"""The journal file: a torn last line is moved aside and the study goes on; other damage is
refused without touching the file (tests/test_hostile.py has those cases through the CLI, and
tests/test_runner.py kills a whole study and tears its journal before running it again)."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from cnnsweep.journal import InterruptibleSymlinkLock, JournalError
from cnnsweep.store import Store
from tests.conftest import cut_last_line, torn_files

RUNS = [
    {"run_id": f"r{i}", "index": i, "label": f"run {i}", "config": {"seed": i}, "factors": {}}
    for i in range(3)
]


def test_a_torn_last_line_is_moved_aside_when_the_store_is_opened(tmp_path, caplog):
    journal = tmp_path / "journal.log"
    store = Store.open_or_create(str(journal), "s")
    store.enqueue_missing(RUNS)
    whole = journal.read_bytes()
    torn = cut_last_line(journal)
    reopened = Store.open(str(journal), "s")
    assert journal.read_bytes() == whole[: whole.rstrip(b"\n").rfind(b"\n") + 1]
    (aside,) = torn_files(journal)
    assert aside.read_bytes() == torn
    assert "repaired journal" in caplog.text and str(aside) in caplog.text
    assert [r.run_id for r in reopened.records()] == ["r0", "r1"]  # the torn run was never whole
    assert reopened.enqueue_missing(RUNS) == 1  # enqueued again, on a clean line
    assert [r.run_id for r in Store.open(str(journal), "s").records()] == ["r0", "r1", "r2"]


@pytest.mark.filterwarnings("ignore:The value of `grace_period` might be too small")
def test_a_lock_left_by_a_killed_writer_is_broken_after_its_grace(tmp_path, monkeypatch):
    """A writer killed while it held the journal's lock leaves the lock behind (Optuna's
    symlink). The next writer breaks it once the journal has not changed for LOCK_GRACE seconds
    (10; 1 here), appends, and releases. The studies that kill workers mid-run wait out this
    grace only when a kill lands mid-append, so they avoid it; this is where it is proven."""
    import cnnsweep.journal

    journal = tmp_path / "journal.log"
    Store.open_or_create(str(journal), "s").enqueue_missing(RUNS[:1])
    lock = Path(str(journal.resolve()) + ".lock")  # beside the resolved path, as the store's
    lock.symlink_to(journal.resolve())  # as a holder killed mid-append leaves it
    monkeypatch.setattr(cnnsweep.journal, "LOCK_GRACE", 1)
    start = time.monotonic()
    # In a thread: a lock never broken would hang the append, and the test must fail instead.
    append = threading.Thread(target=lambda: Store.open(str(journal), "s").enqueue_missing(RUNS),
                              daemon=True)  # fmt: skip
    append.start()
    append.join(timeout=30)
    waited = time.monotonic() - start
    assert not append.is_alive(), "the lock was never broken"
    assert 1 <= waited < 10, waited  # the grace (1 s), not the default's 10 s
    assert not lock.is_symlink()  # released after the append
    assert [r.run_id for r in Store.open(str(journal), "s").records()] == ["r0", "r1", "r2"]


@pytest.mark.filterwarnings("ignore:The value of `grace_period` might be too small")
def test_a_waiter_breaks_only_the_lock_it_saw_stand_for_the_grace(tmp_path):
    """Two waiters behind a lock left by a killed holder: the first breaks it after the grace
    and takes the lock anew. The second, which has watched the old lock as long, must not
    break the new one (the journal unchanged meanwhile: Optuna's check alone would), only a
    lock that stands unchanged for a whole grace of its own."""
    journal = (tmp_path / "journal.log").resolve()
    journal.write_text("")
    lock_file = Path(f"{journal}.lock")
    lock_file.symlink_to(journal)  # left by a killed holder
    second = InterruptibleSymlinkLock(str(journal), grace_period=0.3).attempts()
    assert next(second) is False  # it starts watching the old lock
    time.sleep(0.35)
    lock_file.unlink()  # the first waiter breaks the old lock ...
    lock_file.symlink_to(journal)  # ... and takes it: a new lock file, the journal as it was
    assert next(second) is False and next(second) is False
    assert lock_file.is_symlink()  # not broken
    time.sleep(0.35)  # the new lock, in turn, stands a whole grace (its holder killed too)
    assert next(second) is False  # broken now ...
    assert next(second) is True  # ... and taken
    assert lock_file.is_symlink()


@pytest.mark.parametrize("lock", ["journal", "enqueue"])
def test_a_ctrl_c_as_a_lock_is_taken_leaves_no_lock_behind(
    lock, tmp_path, monkeypatch, ctrl_c_raises
):
    """A Ctrl-C that arrives just after a lock's file is made (before Optuna's code would reach
    the try that removes it) is delivered once the lock is given up: the lock is not left for
    every other process to wait out its grace (10 s; the enqueue lock's 60 s). An append it
    interrupts is made whole or not at all: here not at all (since 0.7.5 the Ctrl-C is
    delivered as the lock is taken, and the lock given up, before the write starts)."""
    journal = tmp_path / "journal.log"
    store = Store.open_or_create(str(journal), "s")
    store.enqueue_missing(RUNS[:1])
    journal_lock = store.storage._checked_backend._lock
    attempts = InterruptibleSymlinkLock.attempts

    def take_then_ctrl_c(self):
        for taken in attempts(self):
            if taken and (self is journal_lock) == (lock == "journal"):
                os.kill(os.getpid(), signal.SIGINT)  # KeyboardInterrupt at the next bytecode
            yield taken

    monkeypatch.setattr(InterruptibleSymlinkLock, "attempts", take_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        if lock == "journal":
            store.enqueue_missing(RUNS)
        else:
            with store.storage.enqueue_lock():
                pytest.fail("the Ctrl-C was not delivered as the lock was taken")
    assert not list(tmp_path.glob("*.lock")), list(tmp_path.iterdir())
    monkeypatch.undo()
    appended = [r.run_id for r in Store.open(str(journal), "s").records()]
    assert appended == ["r0"]


@pytest.mark.parametrize("lock", ["journal", "enqueue"])
def test_a_ctrl_c_while_a_lock_left_by_a_killed_holder_is_waited_for_is_delivered_at_once(
    lock, tmp_path, ctrl_c_raises
):
    """A lock left by a killed holder is broken only after its grace (10 s; the enqueue lock's
    60 s). A Ctrl-C meanwhile, as `cnnsweep run` enqueues, is delivered at once (before 0.7.5,
    after the grace): nothing is written, and the lock, which is not this process's, stays."""
    journal = tmp_path / "journal.log"
    store = Store.open_or_create(str(journal), "s")
    store.enqueue_missing(RUNS[:1])
    before = journal.read_bytes()
    left = Path(f"{journal.resolve()}{'.enqueue' if lock == 'enqueue' else ''}.lock")
    left.symlink_to(journal.resolve())  # as a holder killed while it held the lock leaves it
    ctrl_c = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    started = time.monotonic()
    ctrl_c.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            store.enqueue_missing(RUNS)
    finally:
        ctrl_c.join()
    assert time.monotonic() - started < 2  # not the grace
    assert left.is_symlink() and journal.read_bytes() == before
    assert sorted(p.name for p in tmp_path.glob("*.lock")) == [left.name]


def test_a_writer_that_finds_a_torn_tail_repairs_it_before_appending(tmp_path):
    journal = tmp_path / "journal.log"
    store = Store.open_or_create(str(journal), "s")
    store.enqueue_missing(RUNS[:1])
    other = Store.open(str(journal), "s")  # opened while the file was whole
    store.enqueue_missing(RUNS[1:2])
    cut_last_line(journal)  # that append was cut short
    other.enqueue_missing(RUNS)  # appends: must not glue its line onto the torn one
    assert len(torn_files(journal)) == 1
    assert [r.run_id for r in Store.open(str(journal), "s").records()] == ["r0", "r1", "r2"]


def test_damage_in_the_middle_is_refused_and_left_alone(tmp_path):
    journal = tmp_path / "journal.log"
    Store.open_or_create(str(journal), "s").enqueue_missing(RUNS)
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join([*lines[:2], lines[2][:30] + b"\n", *lines[3:]]))
    damaged = journal.read_bytes()
    with pytest.raises(JournalError, match=r"corrupt journal .*journal.log: line 3 is not a JSON"):
        Store.open(str(journal), "s")
    assert journal.read_bytes() == damaged and torn_files(journal) == []


WRITER = textwrap.dedent("""
    import sys
    from cnnsweep.store import Store
    store = Store.open(sys.argv[1], "s")
    payload = "x" * (48 << 20)  # 48 MB lines: a kill is likely to land inside one
    print("ready", flush=True)
    while True:
        store.storage.set_study_user_attr(store.study_id, "payload", payload)
""")


def test_a_real_kill_mid_append_is_repaired(tmp_path):
    """SIGKILL a process while it appends big lines, until a kill lands mid-line (Linux stops a
    large write at a fatal signal); then the store opens, repaired, with every run in it."""
    journal = tmp_path / "journal.log"
    Store.open_or_create(str(journal), "s").enqueue_missing(RUNS)
    whole = journal.read_bytes()
    landed = False
    for _ in range(6):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(journal)],
                                  stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert writer.stdout.readline() == "ready\n"
        # The file grows page by page while a 48 MB line is written: kill it as it grows.
        deadline = time.monotonic() + 30
        while journal.stat().st_size == len(whole) and time.monotonic() < deadline:
            time.sleep(0.001)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        lock = Path(str(journal) + ".lock")
        if lock.is_symlink():
            lock.unlink()  # the killed writer held the lock (Optuna breaks it after a grace)
        if not journal.read_bytes().endswith(b"\n"):
            landed = True
            break
        journal.write_bytes(whole)  # the kill fell between two writes: try again
    if not landed:  # never happened on this machine: append a line and cut it as a kill would
        writer = Store.open(str(journal), "s")
        writer.storage.set_study_user_attr(writer.study_id, "payload", "x" * 1000)
        cut_last_line(journal)
    store = Store.open(str(journal), "s")
    assert len(torn_files(journal)) == 1
    assert journal.read_bytes().endswith(b"\n")
    assert [r.run_id for r in store.records()] == ["r0", "r1", "r2"]
    store.enqueue_missing(RUNS)  # and it takes new lines
    assert [r.state for r in Store.open(str(journal), "s").records()] == ["waiting"] * 3
