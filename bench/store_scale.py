"""The store at scale: claim, epoch-write, enqueue and status times at the start and at the end of
a study of N simulated runs (no training) of E epochs each, with P worker processes, on the
journal file and on a private PostgreSQL 15 server; and a check that every run completed once.

    python bench/store_scale.py                      # N = 500, 2,000, 5,000; E = 50; P = 1, 8
    python bench/store_scale.py --sizes 500 --processes 1 --stores journal   # a quick look
    python bench/store_scale.py --exactly-once 2000  # 8 processes share 2,000 short runs

A study of N x E is measured in minutes, not in the hours that writing N x E epochs one at a time
would take (PostgreSQL commits each write):
1. enqueue: the N runs, timed (Store.enqueue_missing: one transaction, under the study's lock).
2. start: P processes take 40 runs (a quarter of a smaller study) through the Store API as a
   worker does (claim, E epoch records, finish), timing each call, while almost every run waits.
3. fill: all runs but the last 40 are written as finished, in bulk, with E epochs each: the rows
   (PostgreSQL) or journal lines the workers write, batched.
4. end: the P processes take the last 40 runs as in 2.
5. status: `cnnsweep status` in a fresh process (open the store, read the runs, format them), at
   the start and at the end.
6. exactly once: every run complete once, no stray trial.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.postgres: the private server the tests use

from optuna.trial import TrialState  # noqa: E402

from cnnsweep.schema import Attr, epoch_key  # noqa: E402
from cnnsweep.store import Store, this_worker  # noqa: E402

STUDY = "scale"
# Runs taken at the start and at the end of a study, by all P processes together: the medians
# are over this many claims.
RUNS_PER_PHASE = 40


def runs_per_process(processes: int, size: int) -> int:
    """Each process's share of a phase: RUNS_PER_PHASE in all (a quarter of a small study)."""
    return max(1, min(RUNS_PER_PHASE, size // 4) // processes)


def runs(count: int) -> list[dict]:
    """N runs of a grid-like study: a config, factors and three categorical parameters."""
    out = []
    for i in range(count):
        factors = {"optimizer": ["adam", "sgd", "rmsprop"][i % 3], "lr": [1e-3, 1e-4][i // 3 % 2],
                   "seed": i // 6}  # fmt: skip
        config = {"model": "alexnet", "width": 1.0, "batch_size": 64, "max_epochs": 50, **factors}
        out.append({"run_id": f"{i:016x}", "index": i, "label": f"run {i}", "config": config,
                    "factors": factors, "params": factors})  # fmt: skip
    return out


def epoch(k: int) -> dict:
    return {"epoch": k, "train_loss": 1.0 / k, "train_accuracy": 50.0 + k / 2, "val_loss": 1.1 / k,
            "val_accuracy": 48.0 + k / 2, "train_eval_loss": None, "train_eval_accuracy": None,
            "epoch_time": 12.5, "images_per_second": 3600.0}  # fmt: skip


def result(epochs: int) -> dict:
    return {"test_accuracy": 70.0, "test_loss": 0.9, "epochs_trained": epochs,
            "best_epoch": epochs, "stop_reason": "max_epochs", "train_time": 600.0,
            "history": [epoch(k) for k in range(1, epochs + 1)]}  # fmt: skip


# --- one worker process ------------------------------------------------------------------------


def work(url: str, epochs: int, quota: int, out, ready) -> None:
    """Take up to ``quota`` runs as a worker does, timing each store call (seconds); starts when
    every process has opened the store (a journal's replay is start-up, not a claim)."""
    store = Store.open(url, STUDY)
    ready.wait()
    me = this_worker()
    times: dict[str, list[float]] = {"claim": [], "epoch": [], "finish": []}
    for _ in range(quota):
        start = time.perf_counter()
        claim = store.claim(me)
        times["claim"].append(time.perf_counter() - start)
        if claim is None:
            break
        store.set_environment(claim.trial_id, {"torch": "2.13.0", "device": "cpu"})
        for k in range(1, epochs + 1):
            start = time.perf_counter()
            store.record_epoch(claim.trial_id, epoch(k), 48.0 + k / 2)
            times["epoch"].append(time.perf_counter() - start)
        start = time.perf_counter()
        store.finish(claim.trial_id, result(epochs), False)
        times["finish"].append(time.perf_counter() - start)
    out.put(times)


def phase(url: str, epochs: int, processes: int, size: int) -> dict[str, float]:
    """P processes take the phase's runs; the median time of each store call, in milliseconds."""
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    quota = runs_per_process(processes, size)
    ready = context.Barrier(processes)
    workers = [context.Process(target=work, args=(url, epochs, quota, out, ready))
               for _ in range(processes)]  # fmt: skip
    for worker in workers:
        worker.start()
    merged: dict[str, list[float]] = {"claim": [], "epoch": [], "finish": []}
    for _ in workers:
        for name, values in out.get(timeout=3600).items():
            merged[name] += values
    for worker in workers:
        worker.join()
    return {f"{name}_ms": round(1000 * statistics.median(values), 2)
            for name, values in merged.items() if values}  # fmt: skip


def status_seconds(url: str) -> float:
    """`cnnsweep status` as a fresh process does it: open the store, read the runs, format."""
    code = (
        "import sys, time\n"
        "start = time.perf_counter()\n"
        "from cnnsweep.progress import status_text\n"
        "from cnnsweep.store import Store\n"
        f"status_text(Store.open({url!r}, {STUDY!r}).records(epochs=False))\n"
        "print(time.perf_counter() - start)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=REPO)  # fmt: skip
    return round(float(done.stdout.split()[-1]), 2)


# --- the bulk fill -------------------------------------------------------------------------------


def fill(store: Store, epochs: int, leave: int) -> int:
    """Write every waiting run but the last ``leave`` as finished, with ``epochs`` epochs."""
    waiting = sorted(store._trials(TrialState.WAITING), key=lambda t: t.number)
    ids = [t._trial_id for t in waiting[: len(waiting) - leave]]
    if store._sql is not None:
        _fill_postgresql(store, ids, epochs)
    else:
        _fill_journal(store, ids, epochs)
    return len(ids)


def _fill_journal(store: Store, trial_ids: list[int], epochs: int) -> None:
    """The lines one real run writes (recorded once, through the Store API, into a scratch
    journal), repeated for each trial id, appended in batches."""
    with tempfile.TemporaryDirectory() as folder:
        scratch = Store.open_or_create(str(Path(folder) / "journal.log"), "scratch")
        scratch.enqueue_missing(runs(1))
        before = scratch.storage._replay_result.log_number_read
        claim = scratch.claim(this_worker())
        scratch.set_environment(claim.trial_id, {"torch": "2.13.0", "device": "cpu"})
        for k in range(1, epochs + 1):
            scratch.record_epoch(claim.trial_id, epoch(k), 48.0 + k / 2)
        scratch.finish(claim.trial_id, result(epochs), False)
        lines = list(scratch.storage._backend.read_logs(before))
    backend = store.storage._checked_backend
    batch = []
    for trial_id in trial_ids:
        batch += [{**line, "trial_id": trial_id} for line in lines]
        if len(batch) > 50_000:
            backend.append_logs(batch)
            batch = []
    if batch:
        backend.append_logs(batch)


def _fill_postgresql(store: Store, trial_ids: list[int], epochs: int) -> None:
    """The rows one finished run has (Optuna's RDB schema), written for many runs at once."""
    import datetime as dt

    from optuna.storages._rdb import models
    from sqlalchemy import update

    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    finished = result(epochs)
    attrs = {Attr.WORKER: this_worker(), Attr.HEARTBEAT: time.time(),
             Attr.ENVIRONMENT: {"torch": "2.13.0", "device": "cpu"},
             Attr.RESULT: {k: v for k, v in finished.items() if k != "history"},
             **{epoch_key(e["epoch"]): e for e in finished["history"]}}  # fmt: skip
    value_type = models.TrialValueModel.TrialValueType.FINITE
    step_type = models.TrialIntermediateValueModel.TrialIntermediateValueType.FINITE
    for start in range(0, len(trial_ids), 500):
        chunk = trial_ids[start : start + 500]
        with store.storage.engine.begin() as connection:
            connection.execute(
                update(models.TrialModel.__table__)
                .where(models.TrialModel.__table__.c.trial_id.in_(chunk))
                .values(state=TrialState.COMPLETE, datetime_start=now, datetime_complete=now)
            )
            connection.execute(models.TrialValueModel.__table__.insert(), [
                {"trial_id": t, "objective": 0, "value": 70.0, "value_type": value_type}
                for t in chunk
            ])  # fmt: skip
            connection.execute(models.TrialUserAttributeModel.__table__.insert(), [
                {"trial_id": t, "key": key, "value_json": json.dumps(value)}
                for t in chunk for key, value in attrs.items()
            ])  # fmt: skip
            connection.execute(models.TrialIntermediateValueModel.__table__.insert(), [
                {"trial_id": t, "step": k, "intermediate_value": 48.0 + k / 2,
                 "intermediate_value_type": step_type}
                for t in chunk for k in range(1, epochs + 1)
            ])  # fmt: skip


# --- one study -----------------------------------------------------------------------------------


def exactly_once(store: Store, count: int) -> bool:
    trials = store.trial_states()
    complete = [run_id for run_id, state in trials if state == "complete"]
    no_stray = all(run_id is not None for run_id, _ in trials)
    return no_stray and len(complete) == len(set(complete)) == count


def measure(url: str, size: int, epochs: int, processes: int) -> dict:
    store = Store.open_or_create(url, STUDY)
    start = time.perf_counter()
    store.enqueue_missing(runs(size))
    row = {"runs": size, "epochs": epochs, "processes": processes,
           "enqueue_s": round(time.perf_counter() - start, 2),
           "status_start_s": status_seconds(url)}  # fmt: skip
    row["start"] = phase(url, epochs, processes, size)
    fill(store, epochs, leave=processes * runs_per_process(processes, size))
    row["end"] = phase(url, epochs, processes, size)
    row["status_end_s"] = status_seconds(url)
    row["exactly_once"] = exactly_once(store, size)
    row["claim_end_over_start"] = round(row["end"]["claim_ms"] / row["start"]["claim_ms"], 2)
    return row


def many_processes_share_a_study(url: str, size: int, processes: int, epochs: int) -> dict:
    """P processes work through ``size`` short runs together: each completes exactly once."""
    store = Store.open_or_create(url, STUDY)
    store.enqueue_missing(runs(size))
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    start = time.perf_counter()
    ready = context.Barrier(processes)
    workers = [context.Process(target=work, args=(url, epochs, size, out, ready))
               for _ in range(processes)]  # fmt: skip
    for worker in workers:
        worker.start()
    claims = sum(len(out.get(timeout=3600)["finish"]) for _ in workers)
    for worker in workers:
        worker.join()
    return {"runs": size, "processes": processes, "epochs": epochs, "runs_done": claims,
            "wall_s": round(time.perf_counter() - start, 1),
            "exactly_once": exactly_once(store, size)}  # fmt: skip


# --- the command ---------------------------------------------------------------------------------


def cpu_kind() -> str:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    kind = "AVX512-BF16" if "avx512_bf16" in flags else "AVX2" if "avx2" in flags else "other"
    return f"{os.cpu_count()} cores, {kind}"


class Stores:
    """A fresh store per measurement: a journal file in a temp folder, or a new database on one
    private PostgreSQL server."""

    def __init__(self, kinds: list[str]) -> None:
        self.kinds = kinds
        self.folder = Path(tempfile.mkdtemp(prefix="cnnsweep-store-scale-"))
        self.server = None
        self.count = 0
        if "postgresql" in kinds:
            from tests.postgres import PostgresServer

            self.server = PostgresServer().start()

    def fresh(self, kind: str) -> str:
        self.count += 1
        if kind == "journal":
            return str(self.folder / f"{self.count}" / "journal.log")
        return self.server.create_database(f"scale{self.count}")

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)  # journals of 5,000 runs: 180 MB each
        if self.server is not None:
            self.server.stop()


def print_row(kind: str, row: dict) -> None:
    start, end = row["start"], row["end"]
    print(f"| {kind} | {row['runs']:,} x {row['epochs']} | {row['processes']} "
          f"| {start['claim_ms']} | {end['claim_ms']} ({row['claim_end_over_start']}x) "
          f"| {start['epoch_ms']} / {end['epoch_ms']} | {row['enqueue_s']} "
          f"| {row['status_start_s']} / {row['status_end_s']} "
          f"| {'yes' if row['exactly_once'] else 'NO'} |", flush=True)  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="500,2000,5000", help="runs per study (N)")
    parser.add_argument("--epochs", type=int, default=50, help="epochs per run (E)")
    parser.add_argument("--processes", default="1,8", help="worker processes (P)")
    parser.add_argument("--stores", default="journal,postgresql")
    parser.add_argument("--exactly-once", type=int, default=0, metavar="N",
                        help="also: 8 processes share N short runs on PostgreSQL")  # fmt: skip
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    kinds = args.stores.split(",")
    stores = Stores(kinds + (["postgresql"] if args.exactly_once else []))
    figures = {"machine": f"{platform.node()}: {cpu_kind()}",
               "date": time.strftime("%Y-%m-%d"), "rows": []}  # fmt: skip
    print(f"store_scale on {figures['machine']}, {figures['date']}; median ms per call")
    print(
        "| store | runs x epochs | P | claim, start | claim, end | epoch write, start / end "
        "| enqueue s | status s, start / end | exactly once |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    try:
        for kind in kinds:
            for size in map(int, args.sizes.split(",")):
                for processes in map(int, args.processes.split(",")):
                    row = measure(stores.fresh(kind), size, args.epochs, processes)
                    figures["rows"].append({"store": kind, **row})
                    print_row(kind, row)
        if args.exactly_once:
            shared = many_processes_share_a_study(stores.fresh("postgresql"), args.exactly_once,
                                                  8, 2)  # fmt: skip
            figures["shared"] = shared
            print(
                f"8 processes x {shared['runs']:,} runs on PostgreSQL: {shared['runs_done']} "
                f"done in {shared['wall_s']} s, exactly once: {shared['exactly_once']}"
            )
    finally:
        stores.close()
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
    gc.freeze()  # the exit then skips a last collection of all torch loaded (about 1 s)
