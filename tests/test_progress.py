import io
import json
import os
import subprocess
import sys
import threading
import time

from rich.console import Console

from cnnsweep.cli import main
from cnnsweep.progress import StudyProgress, eta_seconds, status_text
from cnnsweep.store import RunRecord, Store, this_worker


def record(
    i: int, state: str, history=(), started_at=None, ended_at=None, result=None
) -> RunRecord:
    return RunRecord(
        run_id=f"r{i}", index=i, label=f"run{i}", config={"max_epochs": 3}, factors={},
        state=state, attempts=1, trial_number=i, result=result, history=list(history),
        worker={"host": "h", "pid": 7}, heartbeat=None, started_at=started_at, ended_at=ended_at,
    )  # fmt: skip


EPOCH = {"epoch": 1, "train_loss": 1.5, "train_accuracy": 40.0, "val_accuracy": 35.0}


def test_eta_is_remaining_runs_times_mean_duration_over_workers():
    records = [
        record(0, "complete", started_at=1, ended_at=11),
        record(1, "complete", started_at=1, ended_at=31),
        record(2, "waiting"), record(3, "running"), record(4, "waiting"),
    ]  # fmt: skip
    assert eta_seconds(records, workers=2) == 3 * 20 / 2
    assert eta_seconds([record(0, "waiting")], workers=1) is None


def test_plain_progress_prints_starts_epochs_and_ends():
    stream = io.StringIO()
    progress = StudyProgress(total=2, workers=1, stream=stream, live=False)
    progress.update([record(0, "complete", result={"test_accuracy": 50.0, "epochs_trained": 3},
                            started_at=0, ended_at=5), record(1, "waiting")])  # fmt: skip
    progress.update([record(0, "complete", started_at=0, ended_at=5),
                     record(1, "running", [EPOCH])])  # fmt: skip
    progress.update([record(0, "complete", started_at=0, ended_at=5),
                     record(1, "complete", [EPOCH], 0, 6,
                            {"test_accuracy": 51.0, "epochs_trained": 1})])  # fmt: skip
    lines = stream.getvalue().splitlines()
    assert lines[0] == "1 of 2 runs already finished"
    assert lines[1] == "start    run1 (attempt 1)"
    assert lines[2] == "  epoch 1/3 run1 loss=1.500 acc=40.0 val_acc=35.0"
    assert lines[3].startswith("[2/2] complete run1 test_acc=51.00 epochs=1")


def test_live_progress_renders_on_a_terminal():
    stream = io.StringIO()
    progress = StudyProgress(total=2, workers=1, stream=stream, live=True)
    progress.update([record(0, "running", [EPOCH]), record(1, "waiting")])
    progress.close()
    assert "runs" in stream.getvalue() and "run0: epoch 1/3" in stream.getvalue()


def test_live_progress_lists_the_last_finished_runs_under_the_bar():
    stream = io.StringIO()
    progress = StudyProgress(total=8, workers=1, stream=stream, live=True)
    earlier = record(0, "complete", result={"test_accuracy": 11.0, "epochs_trained": 3})
    progress.update([earlier] + [record(i, "waiting") for i in range(1, 8)])
    for done in range(1, 8):  # one more run finishes at each look
        finished = [record(i, "complete", result={"test_accuracy": 40.0 + i, "epochs_trained": 3})
                    for i in range(1, done + 1)]  # fmt: skip
        progress.update([earlier, *finished] + [record(i, "waiting") for i in range(done + 1, 8)])
    progress._live.refresh()
    shown = progress._live.renderable
    progress.close()
    text = io.StringIO()
    Console(file=text, width=120).print(shown)
    lines = [ln for ln in text.getvalue().splitlines() if "✓" in ln]
    # The five latest, oldest first; the run an earlier session finished is not news.
    assert [ln.split()[2] for ln in lines] == ["run3", "run4", "run5", "run6", "run7"]
    assert "test_acc=47.00 epochs=3" in lines[-1]


def test_status_text_lists_runs_in_flight_and_failures():
    failed = record(2, "failed")
    failed.error = "RuntimeError: boom"
    text = status_text([record(0, "complete", started_at=0, ended_at=4), record(1, "running",
                        [EPOCH]), failed])  # fmt: skip
    assert "runs: 3  waiting: 0  running: 1  complete: 1  diverged: 0  failed: 1" in text
    assert "running  run1: epoch 1/3 loss=1.500" in text
    assert "failed   run2: RuntimeError: boom" in text


def test_no_standard_error_at_all_shows_nothing_and_goes_on(monkeypatch, capsys):
    """A command run with standard error closed (sys.stderr is None): plain lines to nowhere."""
    monkeypatch.setattr("sys.stderr", None)
    progress = StudyProgress(total=1, workers=1)
    assert not progress.live
    progress.update([record(0, "running", [EPOCH])])
    progress.close()


def journal_with_runs(journal: str, count: int, max_epochs: int) -> Store:
    """Study "s" on a journal file, with ``count`` runs waiting ("run 0", "run 1", ...)."""
    store = Store.open_or_create(journal, "s")
    store.enqueue_missing([
        {"run_id": f"r{i}", "index": i, "label": f"run {i}", "config": {"max_epochs": max_epochs},
         "factors": {"lr": i}, "params": {"lr": i}}
        for i in range(count)
    ])  # fmt: skip
    return store


def test_status_json_gives_scripts_what_the_text_says(tmp_path, capsys):
    """`cnnsweep status --json` on a real journal with a run in each state: a finished one, one
    in flight at its first epoch, one lost (its worker's process is gone), one failed with a
    traceback, one waiting. The counts match the text's, every state is counted, zeros too."""
    journal = str(tmp_path / "journal.log")
    store = journal_with_runs(journal, count=5, max_epochs=3)
    me = this_worker()
    done, flying = store.claim(me), store.claim(me)
    assert store.finish(done.trial_id, {"test_accuracy": 50.0, "history": []}, False)
    store.record_epoch(flying.trial_id, EPOCH, EPOCH["val_accuracy"])
    store.heartbeat(flying.trial_id)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    store.claim(me | {"pid": int(dead), "id": "ghost"})
    failing = store.claim(me)
    assert store.fail(
        failing.trial_id,
        "ValueError: boom",
        traceback='Traceback:\n  File "x.py", line 3, in f\nValueError: boom',
    )
    assert main(["status", "--study", "s", "--store", journal, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["study"] == "s" and status["runs"] == 5
    assert status["counts"] == {"waiting": 1, "running": 1, "complete": 1, "diverged": 0,
                                "pruned": 0, "failed": 1, "lost": 1}  # fmt: skip
    assert status["eta_seconds"] is not None and status["eta_seconds"] >= 0
    (running,) = status["running"]
    assert running["label"] == "run 1" and running["epoch"] == 1 and running["max_epochs"] == 3
    assert running["val_accuracy"] == 35.0 and running["worker"]["pid"] == os.getpid()
    assert 0 <= running["heartbeat_age_s"] < 60
    (lost,) = status["lost"]
    assert lost["label"] == "run 2" and lost["worker"]["pid"] == int(dead) and lost["epoch"] is None
    (failed,) = status["failed"]
    assert failed == {
        "run_id": "r3",
        "label": "run 3",
        "attempts": 1,
        "error": "ValueError: boom",
        "raised_at": 'File "x.py", line 3, in f',
    }
    assert main(["status", "--study", "s", "--store", journal]) == 0
    text = capsys.readouterr().out
    assert "waiting: 1  running: 1  complete: 1  diverged: 0  failed: 1  lost: 1" in text


def test_status_watch_follows_a_study_until_nothing_waits_or_runs(tmp_path, capsys):
    """`cnnsweep status --watch` while another process (here, a thread) trains the runs: a line
    as each starts, trains an epoch and ends, then the final status; it returns once nothing
    waits or runs."""
    journal = str(tmp_path / "journal.log")
    store = journal_with_runs(journal, count=2, max_epochs=1)
    first = store.claim(this_worker())  # already running when the watch starts

    def train_them() -> None:
        elsewhere = Store.open(journal, "s")
        for claim in (first, None):
            claim = claim or elsewhere.claim(this_worker())
            time.sleep(0.3)
            elsewhere.record_epoch(claim.trial_id, EPOCH, EPOCH["val_accuracy"])
            time.sleep(0.3)
            result = {"test_accuracy": 50.0, "epochs_trained": 1, "history": [EPOCH]}
            elsewhere.finish(claim.trial_id, result, False)

    trainer = threading.Thread(target=train_them)
    trainer.start()
    try:
        assert main(["status", "--study", "s", "--store", journal, "--watch", "0.1"]) == 0
    finally:
        trainer.join()
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "start    run 0 (attempt 1)"
    assert "  epoch 1/1 run 0 loss=1.500 acc=40.0 val_acc=35.0" in lines
    assert any(line.startswith("[1/2] complete run 0 test_acc=50.00 epochs=1") for line in lines)
    assert "start    run 1 (attempt 1)" in lines
    assert any(line.startswith("[2/2] complete run 1") for line in lines)
    assert "runs: 2  waiting: 0  running: 0  complete: 2" in out  # then the final status
