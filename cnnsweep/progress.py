"""What a person watching a study sees: counts, runs in flight, and an ETA.

On a terminal, a live rich display; otherwise (logs, CI) plain lines as runs start and end.
"""

from __future__ import annotations

import sys
import time
from collections import Counter, deque
from typing import TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from cnnsweep.schema import RunState
from cnnsweep.store import STATES, RunRecord


def eta_seconds(records: list[RunRecord], workers: int) -> float | None:
    """Remaining runs x mean duration of finished runs / workers busy (None before any ends)."""
    durations = [r.ended_at - r.started_at for r in records if r.state.finished
                 and r.ended_at is not None and r.started_at is not None]  # fmt: skip
    remaining = sum(r.state.pending for r in records)
    if not durations:
        return None
    return remaining * (sum(durations) / len(durations)) / max(1, workers)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def in_flight_line(record: RunRecord, now: float) -> str:
    epoch = record.history[-1] if record.history else None
    max_epochs = record.config.get("max_epochs")
    where = f"epoch {epoch['epoch']}/{max_epochs}" if epoch else "starting"
    metrics = ""
    if epoch:
        metrics = f" loss={epoch['train_loss']:.3f} acc={epoch['train_accuracy']:.1f}"
        if epoch.get("val_accuracy") is not None:
            metrics += f" val_acc={epoch['val_accuracy']:.1f}"
    worker = record.worker or {}
    beat = f", heartbeat {now - record.heartbeat:.0f}s ago" if record.heartbeat else ""
    return (f"{record.label}: {where}{metrics} "
            f"[{worker.get('host', '?')}:{worker.get('pid', '?')}{beat}]")  # fmt: skip


def _in_flight(records: list[RunRecord]) -> tuple[list[RunRecord], list[RunRecord]]:
    """(running, lost): runs in flight, and those whose worker process here is gone."""
    running = [r for r in records if r.state == RunState.RUNNING and not r.lost]
    return running, [r for r in records if r.lost]


def status_text(
    records: list[RunRecord], workers: int | None = None, now: float | None = None
) -> str:
    """The status, as lines; ``now``: the store's clock, which the heartbeats were written by
    (Store.now; this machine's if not given)."""
    counts = Counter("lost" if r.lost else r.state for r in records)
    running, lost = _in_flight(records)
    lines = [
        f"runs: {len(records)}  "
        + "  ".join(
            f"{s}: {counts.get(s, 0)}" for s in STATES if s != RunState.PRUNED or counts.get(s)
        )  # only searches prune
        + (f"  lost: {len(lost)}" if lost else ""),
    ]
    busy = workers if workers is not None else len(running)
    lines.append(f"eta: {format_duration(eta_seconds(records, busy))}")
    now = time.time() if now is None else now
    lines += [f"  running  {in_flight_line(r, now)}" for r in running]
    lines += [
        f"  lost     {in_flight_line(r, now)}: its worker process is gone; the next "
        "`cnnsweep run` or `cnnsweep worker` runs it again"
        for r in lost
    ]
    lines += [
        f"  failed   {r.label}: {failure_line(r)}" for r in records if r.state == RunState.FAILED
    ]
    return "\n".join(lines)


def failure_line(record: RunRecord) -> str:
    """The error, and the traceback's last frame when there is one (where it was raised)."""
    where = raised_at(record)
    return f"{record.error} ({where})" if where else str(record.error)


def raised_at(record: RunRecord) -> str | None:
    """The last frame of a failed run's traceback (``File "…", line N, in f``), if it has one."""
    frames = [ln.strip() for ln in (record.traceback or "").splitlines() if ln.startswith("  File")]
    return frames[-1] if frames else None


def status_document(
    records: list[RunRecord], workers: int | None = None, now: float | None = None
) -> dict:
    """What ``status_text`` says, for scripts (``cnnsweep status --json``): every state's count
    (zero included, and ``lost``), the ETA in seconds (None before a run ends), the runs in
    flight and the lost ones with their last epoch, and the failed runs with their error."""
    counts = Counter("lost" if r.lost else r.state for r in records)
    running, lost = _in_flight(records)
    now = time.time() if now is None else now

    def in_flight(record: RunRecord) -> dict:
        epoch = record.history[-1] if record.history else {}
        worker = record.worker or {}
        return {
            "run_id": record.run_id, "label": record.label, "attempt": record.attempts,
            "epoch": epoch.get("epoch"), "max_epochs": record.config.get("max_epochs"),
            "train_loss": epoch.get("train_loss"),
            "train_accuracy": epoch.get("train_accuracy"),
            "val_accuracy": epoch.get("val_accuracy"),
            "worker": {"host": worker.get("host"), "pid": worker.get("pid")},
            "heartbeat_age_s": None if record.heartbeat is None else now - record.heartbeat,
        }  # fmt: skip

    def failed(record: RunRecord) -> dict:
        return {"run_id": record.run_id, "label": record.label, "attempts": record.attempts,
                "error": record.error, "raised_at": raised_at(record)}  # fmt: skip

    return {
        "runs": len(records),
        "counts": {str(state): counts.get(state, 0) for state in (*STATES, "lost")},
        "eta_seconds": eta_seconds(records, workers if workers is not None else len(running)),
        "running": [in_flight(r) for r in running],
        "lost": [in_flight(r) for r in lost],
        "failed": [failed(r) for r in records if r.state == RunState.FAILED],
    }


RECENT_RUNS = 5  # finished runs listed under the live bar


def ended_detail(record: RunRecord) -> str:
    """An ended run's outcome: its test accuracy and epochs, or its error."""
    result = record.result or {}
    if "test_accuracy" in result:
        return f"test_acc={result['test_accuracy']:.2f} epochs={result['epochs_trained']}"
    return f"error: {record.error}"


class StudyProgress:
    """Feed it the store's records now and then; it shows what changed."""

    def __init__(
        self, total: int, workers: int, stream: TextIO | None = None, live: bool | None = None
    ) -> None:
        self.workers = workers
        self.stream = stream = stream or sys.stderr
        # sys.stderr is None when the command runs with standard error closed: lines, unshown.
        self.live = (stream is not None and stream.isatty()) if live is None else live
        self._seen: dict[str, str] | None = None  # run_id -> state last shown
        self._epochs_shown: dict[str, int] = {}  # run_id -> epochs already printed
        self._started = time.time()
        if self.live:
            self.console = Console(file=stream)
            self.bar = Progress(
                TextColumn("[bold]runs"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[states]}"), TimeElapsedColumn(),
                TextColumn("eta {task.fields[eta]}"), console=self.console,
            )  # fmt: skip
            self.task = self.bar.add_task("runs", total=total, states="", eta="unknown")
            # The last runs to finish, shown under the bar (their states as last seen).
            self._recent: deque[str] = deque(maxlen=RECENT_RUNS)
            self._ended: dict[str, str] | None = None
            self._live = Live(Group(self.bar), console=self.console, refresh_per_second=4)
            self._live.start()

    def update(self, records: list[RunRecord]) -> None:
        done = sum(r.state.ended for r in records)
        eta = format_duration(eta_seconds(records, self.workers))
        if self.live:
            counts = Counter(r.state for r in records)
            states = " ".join(f"{s}:{counts[s]}" for s in STATES if counts.get(s))
            self.bar.update(self.task, completed=done, total=len(records), states=states, eta=eta)
            table = Table.grid(padding=(0, 1))
            for line in self._newly_ended(records):
                self._recent.append(line)
            for line in self._recent:
                table.add_row("  ✓", Text(line, style="dim"))
            now = time.time()
            for record in records:
                if record.state == RunState.RUNNING:
                    table.add_row("  ▶", in_flight_line(record, now))
            self._live.update(Group(self.bar, table))
            return
        if self._seen is None:  # first look: report what an earlier session already finished
            self._seen = {r.run_id: r.state for r in records if r.state.ended}
            if self._seen:
                self._print(f"{len(self._seen)} of {len(records)} runs already finished")
        for record in records:
            before = self._seen.get(record.run_id)
            if before == record.state:
                self._print_new_epochs(record)
                continue
            self._seen[record.run_id] = record.state
            if record.state == RunState.RUNNING:
                self._print(f"start    {record.label} (attempt {record.attempts})")
                self._print_new_epochs(record)
            elif record.state.ended:
                self._print(f"[{done}/{len(records)}] {record.state:<8} {record.label} "
                            f"{ended_detail(record)} (eta {eta})")  # fmt: skip

    def _newly_ended(self, records: list[RunRecord]) -> list[str]:
        """Live mode: a line for each run that ended since the last look (none on the first
        look, whose ended runs an earlier session finished)."""
        first = self._ended is None
        ended = {r.run_id: r.state for r in records if r.state.ended}
        fresh = [] if first else [r for r in records if r.state.ended
                                  and self._ended.get(r.run_id) != r.state]  # fmt: skip
        self._ended = ended
        return [f"{r.state:<8} {r.label} {ended_detail(r)}" for r in fresh]

    def _print_new_epochs(self, record: RunRecord) -> None:
        """Plain mode: one line per epoch of a running run, as it is recorded."""
        if record.state != RunState.RUNNING:
            return
        shown = self._epochs_shown.get(record.run_id, 0)
        for epoch in record.history[shown:]:
            val = epoch.get("val_accuracy")
            self._print(
                f"  epoch {epoch['epoch']}/{record.config.get('max_epochs')} {record.label} "
                f"loss={epoch['train_loss']:.3f} acc={epoch['train_accuracy']:.1f}"
                + (f" val_acc={val:.1f}" if val is not None else "")
            )
        self._epochs_shown[record.run_id] = len(record.history)

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self.live:
            self._live.stop()
