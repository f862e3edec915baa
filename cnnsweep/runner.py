"""``cnnsweep run``: store the study, enqueue what is missing, run local workers, write the CSV.

Workers are separate processes (each with its own torch threads and storage connection), placed
round-robin on the listed devices; several may share one GPU.
"""

from __future__ import annotations

import json
import logging
import multiprocessing.connection
import multiprocessing.context
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import torch
from pydantic import ValidationError

from cnnsweep.config import with_speed
from cnnsweep.data import ImageDataset, load_data
from cnnsweep.data.cache import save_cached
from cnnsweep.devices import resolve_device
from cnnsweep.errors import ConfigError, first_line
from cnnsweep.estimate import StudyEstimate, cpu_share, estimate_study
from cnnsweep.frame import results_frame, study_data, write_table
from cnnsweep.identity import IDENTITY_VERSION, OUTSIDE_IDENTITY
from cnnsweep.interrupts import Terminated
from cnnsweep.launch import start_worker_server
from cnnsweep.machine import usable_cores
from cnnsweep.preflight import available_memory, device_memory, footprint, preflight
from cnnsweep.progress import StudyProgress
from cnnsweep.schema import level_label
from cnnsweep.spec import Run, Study, StudySpec
from cnnsweep.store import (
    RunRecord,
    Store,
    StudyNotFound,
    check_store_can_be_made,
    patiently,
    study_folder,
)
from cnnsweep.worker import WorkerOptions, check_same_data, worker_process

log = logging.getLogger("cnnsweep.runner")

# Local worker processes: each imports torch and holds its data (hundreds of MB), so thousands
# would exhaust any machine; many machines join with `cnnsweep worker` instead.
MAX_WORKERS = 256


@dataclass
class RunSummary:
    study: str
    store: str
    enqueued: int
    counts: dict[str, int]
    csv: Path | None
    report: Path | None = None
    findings: list[str] = field(default_factory=list)  # the report's summary, a line each


def run_dicts(study: Study, identity_version: int = IDENTITY_VERSION) -> list[dict]:
    return [
        {
            "run_id": run.run_id,
            "index": run.index,
            "label": run.label,
            "config": run.config.model_dump(mode="json"),
            "factors": run.factors,
            "params": {name: level_label(value) for name, value in run.factors.items()},
        }
        for run in study.runs(identity_version)
    ]


def _flatten(document: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in document.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def spec_diff(stored: dict, new: dict) -> str:
    """Readable one-line difference, e.g. ``spec.fixed.max_epochs: 1 -> 2``."""
    old, now = _flatten(stored), _flatten(new)
    absent = "(absent)"
    changes = [
        f"{key}: {json.dumps(old.get(key, absent))} -> {json.dumps(now.get(key, absent))}"
        for key in sorted(old.keys() | now.keys())
        if old.get(key, absent) != now.get(key, absent)
    ]
    return "; ".join(changes)


def normalized_document(document: dict) -> dict:
    """A stored study document as this release would write it: the spec re-validated, so that a
    field that a later release adds (with its default) is not taken for a change of spec."""
    try:
        spec = StudySpec(**document["spec"])
    except (KeyError, TypeError, ValidationError):
        return document  # not understood: compared as it is
    return {**document, "spec": spec.model_dump(mode="json", exclude={"presets"})}


# Spec fields that change no run: what the report shows, and settings outside a run's identity
# (speed switches, measurements). A change to them alone updates the stored spec silently.
REPORT_FIELDS = ("description", "metric", "claims")


def runs_document(document: dict) -> dict:
    """The part of a study document that decides its runs (what a spec change is judged on)."""
    spec = {k: v for k, v in document.get("spec", {}).items() if k not in REPORT_FIELDS}

    def computing(settings: dict) -> dict:
        return {k: v for k, v in settings.items() if k not in OUTSIDE_IDENTITY}

    spec["fixed"] = computing(spec.get("fixed", {}))
    preset = computing(document.get("preset_settings", {}))
    return {**document, "spec": spec, "preset_settings": preset}


def open_study_store(study: Study, store_url: str | None, allow_spec_change: bool) -> Store:
    """Create or open the study's store; refuse a spec whose runs changed unless allowed."""
    store = Store.open_or_create(store_url, study.name)
    if check_stored_spec(store, study, allow_spec_change):
        store.set_document(study.document())
    return store


def check_stored_spec(store: Store, study: Study, allow_spec_change: bool) -> bool:
    """Refuse (reading only) a study of a newer cnnsweep, and a spec whose runs differ from the
    stored one's unless allowed; returns whether the stored spec needs writing."""
    store.identity_version  # noqa: B018  (refuses a study of a newer cnnsweep)
    stored, new = store.document(), study.document()
    if stored is not None and not allow_spec_change:
        old_runs, new_runs = runs_document(normalized_document(stored)), runs_document(new)
        if old_runs != new_runs:
            raise ConfigError(
                f"study {study.name!r} exists in {store.display_url} with a different spec "
                f"(pass --allow-spec-change to run the new one): {spec_diff(old_runs, new_runs)}"
            )
    return stored is None or normalized_document(stored) != new


def existing_store(study: Study, store_url: str | None) -> Store | None:
    """The study's store if it exists (read only), else None once it is known that one can
    be made there: a journal's folder blocked by a file is refused before any data is read."""
    try:
        return Store.open(store_url, study.name)
    except StudyNotFound:
        check_store_can_be_made(store_url, study.name)
        return None


def study_estimate(
    study: Study, store: Store | None, data: ImageDataset, devices: list[torch.device],
    workers: int, context: multiprocessing.context.BaseContext | None = None,
    speed: dict | None = None,
) -> StudyEstimate:  # fmt: skip
    """How long the runs still to do will take here (cnnsweep.estimate); reads the store only.
    ``context``: how the workers start (its fork server, if any, serves the probes too);
    ``speed``: the command's speed switches, which the runs will train with."""
    stored = store.records(epochs=False) if store is not None else []
    version = store.identity_version if store is not None else IDENTITY_VERSION
    return estimate_study(study, stored, data, devices, workers, version, context, speed or {})


def stored_identity_version(study: Study, store_url: str | None) -> int:
    """The identity version of the study's stored runs; this release's for a study not stored."""
    try:
        return Store.open(store_url, study.name).identity_version
    except StudyNotFound:
        return IDENTITY_VERSION


def run_study(
    study: Study,
    *,
    store_url: str | None = None,
    workers: int = 1,
    runs_per_device: int | str | None = None,
    devices: list[str] | None = None,
    data: str | None = None,
    allow_spec_change: bool = False,
    options: WorkerOptions | None = None,
    csv_path: Path | None = None,
    progress: StudyProgress | None = None,
    report: bool = True,
    before_start: Callable[[StudyEstimate], None] | None = None,
) -> RunSummary:
    """Run ``study`` to completion: check, (show the estimate to ``before_start``, which may
    raise to stop here), enqueue, train with local workers, write the CSV and the report."""
    resolved = check_placement(workers, runs_per_device, devices or ["auto"])
    context = start_worker_server([d.type for d in resolved])  # imports beside the checks below
    folder = study_folder(study.name)
    # The store before the data (reading only): an unreachable store, one of a newer cnnsweep or
    # a changed spec is refused before a download or a decode of tens of thousands of images.
    if (stored := existing_store(study, store_url)) is not None:
        check_stored_spec(stored, study, allow_spec_change)
    data = data or study.spec.data
    # Fail fast on bad data and on runs that cannot start or fit, before anything is written;
    # then cache the decoded data once, so that every worker reads it from there.
    dataset = load_data(data, save_cache=False)
    signature = dataset.signature()
    if stored is not None:
        check_same_data(stored, signature)
    speed = options.speed if options is not None else {}
    check_runs_fit(study, dataset, resolved, speed)
    if runs_per_device is not None:
        per_device = parse_runs_per_device(runs_per_device, study, dataset, resolved)
        workers = per_device * len(resolved)
    if before_start is not None:  # the estimate, after the checks, before anything is written
        before_start(study_estimate(study, stored, dataset, resolved, workers, context, speed))
    store = open_study_store(study, store_url, allow_spec_change)
    save_cached(dataset)
    del dataset
    runs = run_dicts(study, store.identity_version)
    enqueued = store.enqueue_missing(runs)
    base = options or WorkerOptions(store_url=None, study_name=study.name)
    base = replace(base, store_url=store_url, study_name=study.name, data=data)
    store.recover_stale(base.grace, base.max_attempts)  # runs left by a killed earlier session
    total = study.count_runs(len(runs)) if study.spec.search is not None else len(runs)
    before = store.records(epochs=False)
    pending = runs_to_do(before, total, study.spec.search is not None)
    if pending and store.data_signature() is None:  # from now on, every worker is checked
        store.set_data_signature(signature)
    workers = min(workers, pending)

    placements = [str(resolved[i % len(resolved)]) for i in range(workers)]
    on_cpu = max(1, placements.count("cpu"))
    threads = cpu_share(on_cpu)[0]
    worker_options = [
        replace(base, device=device, threads=threads if device == "cpu" else None)
        for device in placements
    ]
    progress = progress or StudyProgress(total=total, workers=workers)
    try:
        progress.update(before)  # what earlier sessions finished, before a worker can add to it
        if worker_options:  # none when every run is done: no process to start
            _supervise(store, worker_options, progress, context)
        progress.update(store.records(epochs=False))
    finally:
        progress.close()

    records = store.records()
    counts = {s: sum(r.state == s for r in records) for s in sorted({r.state for r in records})}
    csv = write_table(results_frame(records), csv_path or folder / "results.csv", "csv")
    if not report:  # e.g. one of several machines' `cnnsweep run`: one report, made once, later
        return RunSummary(study.name, store.display_url, enqueued, counts, csv)
    from cnnsweep.report import build_report  # matplotlib and the rest: only now, once

    built = build_report(study_data(store, records), folder / "report")  # read once
    return RunSummary(study.name, store.display_url, enqueued, counts, csv, built.html,
                      built.summary)  # fmt: skip


def parse_runs_per_device(
    value: int | str, study: Study, data: ImageDataset, devices: list[torch.device]
) -> int:
    """``--runs-per-device``: a count, or ``auto`` (see :func:`auto_runs_per_device`)."""
    if check_runs_per_device(value) == "auto":
        return min(auto_runs_per_device(study, data, d) for d in devices)
    return int(value)


def check_placement(
    workers: int, runs_per_device: str | None, devices: list[str]
) -> list[torch.device]:
    """``--workers``, ``--runs-per-device`` and ``--devices`` checked (absent devices refused),
    before anything is stored or started; the devices, resolved."""
    if not 1 <= workers <= MAX_WORKERS:
        raise ConfigError(f"invalid --workers {workers}: must be between 1 and {MAX_WORKERS}")
    if runs_per_device is not None:
        check_runs_per_device(runs_per_device)
    return [resolve_device(d) for d in devices]


def check_runs_per_device(value: int | str) -> int | str:
    """``--runs-per-device`` as given: ``auto`` or a count from 1 to MAX_WORKERS, checked before
    any data is read (``auto`` is worked out from the data later)."""
    if value == "auto":
        return value
    try:
        count = int(value)
    except (TypeError, ValueError):
        count = 0
    if not 1 <= count <= MAX_WORKERS:
        raise ConfigError(
            f"invalid --runs-per-device {value!r}: a count from 1 to {MAX_WORKERS}, or auto"
        )
    return count


# A worker process's memory besides its run: the CUDA context, cuDNN workspaces, the allocator's
# slack (bytes). A first estimate: bench/gpu.py measures K = 1, 2, 4, 8 to check it on a GPU.
PROCESS_OVERHEAD = {"cuda": 2 * 2**30, "cpu": 1 * 2**30}
MAX_AUTO_RUNS = 8  # concurrent runs per device that `auto` chooses at most


def auto_runs_per_device(study: Study, data: ImageDataset, device: torch.device) -> int:
    """How many of this study's runs fit on ``device`` at once: its free memory over the
    largest run's footprint (preflight.py) plus a process's overhead, at most MAX_AUTO_RUNS.
    On a CPU, also at most one run per core (each run then trains on one thread)."""
    largest = max(footprint(run.config, data).bytes for run in distinct_shapes(study))
    per_run = largest + PROCESS_OVERHEAD[device.type]
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        limit = MAX_AUTO_RUNS
    else:
        free = available_memory()
        limit = min(MAX_AUTO_RUNS, usable_cores())
    return max(1, min(limit, int(0.9 * free // per_run)))


def distinct_shapes(study: Study) -> list[Run]:
    """One run of each distinct shape: runs that differ only in seed or learning rate build the
    same model on the same data, so they start, fit and use memory alike."""
    runs = study.runs()
    if study.spec.search is not None:  # a search: its extremes stand for the runs to come
        runs = [Run(i, "", config, {}) for i, config in enumerate(study.search_probes())]
    shapes: dict[str, Run] = {}
    for run in runs:
        shapes.setdefault(run.config.model_dump_json(exclude={"seed", "lr"}), run)
    return list(shapes.values())


def check_runs_fit(
    study: Study, data: ImageDataset, devices: list[torch.device], speed: dict | None = None
) -> None:
    """Preflight every distinct run shape on the smallest device, with the command's speed
    switches: each must start and fit (and take the switches)."""
    smallest = min(devices, key=device_memory)
    for run in distinct_shapes(study):
        try:
            preflight(with_speed(run.config, speed or {}), data, smallest)
        except ConfigError as exc:
            raise ConfigError(f"run {run.index + 1} ({run.label}): {exc}") from None


def runs_to_do(records: list[RunRecord], total: int, searching: bool) -> int:
    """Runs waiting or running (a live worker's run may still need taking over), plus, in a
    search, the trials not drawn yet: more workers than this would find nothing to do."""
    pending = sum(r.state.pending for r in records)
    return pending + max(0, total - len(records)) if searching else pending


# Seconds between the supervisor's looks at the store: at least PROGRESS_INTERVAL, and at least
# PROGRESS_COST times what the last look took, so a huge study is not read back-to-back.
PROGRESS_INTERVAL, PROGRESS_COST = 1.0, 10


def _start_worker(
    context: multiprocessing.context.BaseContext, options: WorkerOptions, study_done=None
):
    """A worker in this process's folder and environment (a fork server keeps its own), taking
    a Ctrl-C as this process does now (a fork server's workers would take it as the server did
    when it started: ignored, if it was started while this process ignored SIGINT);
    ``study_done``, an event of ``context`` set once nothing is pending, ends its idle waits."""
    takes_ctrl_c = signal.getsignal(signal.SIGINT) is not signal.SIG_IGN
    arguments = (options, os.getcwd(), dict(os.environ), study_done, takes_ctrl_c)
    process = context.Process(target=worker_process, args=arguments, daemon=True)
    process.start()
    return process


# Seconds the workers have to end on their own after `cnnsweep run` gets a SIGTERM: a SIGTERM
# sent to the whole process group (a service manager's stop) reached each of them too.
SIGTERM_HEAD_START_S = 1.0


def _pass_on_sigterm(processes: list) -> None:
    """SIGTERM to the workers still alive SIGTERM_HEAD_START_S after this command got one:
    sent to the whole process group, each got its own and is putting its run back; sent to the
    command alone (``kill PID``), they would train on unsupervised."""
    deadline = time.monotonic() + SIGTERM_HEAD_START_S
    for process in processes:
        process.join(timeout=max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            process.terminate()  # a worker takes SIGTERM as a Ctrl-C (worker.py)


def _supervise(
    store: Store, options: list[WorkerOptions], progress: StudyProgress,
    context: multiprocessing.context.BaseContext,
) -> None:  # fmt: skip
    """Run the workers; replace one that dies while runs remain (a bounded number of times)."""
    # Set once nothing is pending: a worker idle while another trains the study's last run
    # then ends at once, not when it next looks at the queue (up to 2 s later).
    study_done = context.Event()
    processes = [_start_worker(context, o, study_done) for o in options]
    worker_pids = [p.pid for p in processes]  # every worker of this command, replacements too
    restarts_left = len(options) * max(1, options[0].max_attempts)
    interval = PROGRESS_INTERVAL
    try:
        while any(p.is_alive() for p in processes):
            # Woken early by a worker's exit, so that the study ends when its last worker does.
            multiprocessing.connection.wait([p.sentinel for p in processes if p.is_alive()],
                                            timeout=interval)  # fmt: skip
            started = time.monotonic()
            # A store out of reach for a while (its workers wait for it too) is waited out.
            records = patiently(lambda: store.records(epochs=False), "reading the progress")
            interval = max(PROGRESS_INTERVAL, PROGRESS_COST * (time.monotonic() - started))
            progress.update(records)
            unfinished = any(r.state.pending for r in records)
            if not unfinished:
                study_done.set()
            for i, process in enumerate(processes):
                if process.is_alive() or process.exitcode == 0 or not unfinished:
                    continue
                if restarts_left == 0:
                    continue
                restarts_left -= 1
                recover = partial(store.recover_stale, options[i].grace, options[i].max_attempts)
                patiently(recover, "looking for runs of silent workers")
                processes[i] = _start_worker(context, options[i], study_done)
                worker_pids.append(processes[i].pid)
    except KeyboardInterrupt as stop:
        if isinstance(stop, Terminated):  # a SIGTERM to this process alone: passed on
            _pass_on_sigterm(processes)
        for process in processes:  # they got the same Ctrl-C: let them put their runs back
            process.join(timeout=30)
        # What one of them still holds (killed meanwhile, say) goes back too: nothing is left
        # running for the next command to find and wait on.
        try:
            store.put_back_of_exited(worker_pids, "interrupted")
        except Exception as exc:  # the store out of reach: the next command recovers them
            log.warning("cnnsweep: could not put back the runs of exited workers: %s",
                        first_line(exc))  # fmt: skip
        raise
