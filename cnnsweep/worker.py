"""A worker: claim a run -> train it -> record it, until no run is waiting or running.

Several workers (processes, or machines sharing a PostgreSQL store) work on one study at once.
A worker that dies leaves its run ``running``; any other worker (or the next ``cnnsweep run``)
sees its process gone or its heartbeat silent, fails that attempt and enqueues the run again, a
bounded number of times. Ctrl-C or SIGTERM puts the current run back in the queue.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import signal
import subprocess
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from optuna.exceptions import UpdateFinishedTrialError

from cnnsweep import __version__
from cnnsweep.checkpoint import RunCheckpoint
from cnnsweep.config import TrainConfig, with_speed
from cnnsweep.data import ImageDataset, load_data
from cnnsweep.data.dataset import signature_difference
from cnnsweep.devices import resolve_device
from cnnsweep.errors import ConfigError, DataError, first_line, unreachable
from cnnsweep.interrupts import raise_terminated
from cnnsweep.launch import adopt
from cnnsweep.paths import file_in_the_way
from cnnsweep.schema import intermediate_value
from cnnsweep.spec import Study, study_from_document
from cnnsweep.store import ClaimedRun, Store, patiently, this_worker
from cnnsweep.train import train

log = logging.getLogger("cnnsweep.worker")


class Waitable(Protocol):
    """An event a worker can wait on (multiprocessing's, threading's)."""

    def wait(self, timeout: float | None = None) -> bool: ...

    def is_set(self) -> bool: ...


MIN_HEARTBEAT = 1.0  # seconds
GRACE_HEARTBEATS = 3  # a run is taken over only after this many heartbeats were missed


# An idle worker's first wait (seconds) before it looks at the queue again; each wait doubles up
# to poll_interval, so a study's last run is noticed at once, a long one is not polled hard.
FIRST_IDLE_WAIT = 0.1


@dataclass(frozen=True)
class WorkerOptions:
    store_url: str | None
    study_name: str
    device: str = "auto"
    data: str | None = None  # None: the study spec's data (CIFAR-10 download if it has none)
    threads: int | None = None  # torch CPU threads; None leaves torch's default
    heartbeat_interval: float = 10.0  # seconds between "still alive" marks during a run
    grace: float = 120.0  # seconds of silence after which another worker takes a run over
    max_attempts: int = 3  # a run whose worker is lost this many times stays failed
    # Epoch checkpoints (a retried run resumes): their folder (None: beside a journal store, none
    # for a database store) and the least seconds between two saves of one run.
    checkpoints: str | None = None
    checkpoint_every: float = 30.0
    poll_interval: float = 2.0  # most seconds between looks at the queue while others run
    # Speed switches for every run this worker trains (identity.SPEED_SETTINGS: compile, ...):
    # how fast, not what, so the runs and their ids stay the study's; each result's config
    # records what was used.
    speed: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        beat, grace = self.heartbeat_interval, self.grace
        if not (math.isfinite(beat) and beat >= MIN_HEARTBEAT):
            raise ConfigError(
                f"invalid --heartbeat {beat:g}: must be at least {MIN_HEARTBEAT:g} second "
                "(each beat is a write to the store)"
            )
        if not (math.isfinite(grace) and grace >= GRACE_HEARTBEATS * beat):
            raise ConfigError(
                f"invalid --grace {grace:g}: must be at least {GRACE_HEARTBEATS} x --heartbeat "
                f"({GRACE_HEARTBEATS * beat:g} s), or live workers would be taken for dead"
            )
        if self.max_attempts < 1:
            raise ConfigError(f"invalid --max-attempts {self.max_attempts}: must be at least 1")
        if not (math.isfinite(self.checkpoint_every) and self.checkpoint_every >= 0):
            raise ConfigError(
                f"invalid --checkpoint-every {self.checkpoint_every:g}: seconds, 0 or more"
            )
        if self.checkpoints is not None:
            check_folder_path(self.checkpoints, "--checkpoints")

    def checkpoint_folder(self, store: Store) -> Path | None:
        """Where this study's checkpoints live: --checkpoints, else beside a journal store."""
        if self.checkpoints:
            return Path(self.checkpoints) / store.study_name
        if "://" in store.url:
            return None  # a database store: no shared folder is known; --checkpoints gives one
        return Path(store.url).parent / "checkpoints"


def check_folder_path(path: str, option: str) -> None:
    """``path`` names a folder that is, or can be made: not empty, neither itself nor a parent
    an existing file (such as ``/dev/null``). Nothing is created here."""
    if not path.strip():
        raise ConfigError(f"invalid {option} {path!r}: name a folder")
    folder = Path(path)
    if (blocking := file_in_the_way(folder)) is not None:
        what = "is" if blocking == folder else f"is under {str(blocking)!r}, which is"
        raise ConfigError(f"invalid {option} {path!r}: it {what} not a folder")


def git_commit() -> str | None:
    """The project's git commit (with ``-dirty`` if modified), when running from a checkout."""
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty", "--abbrev=40"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return commit or None


def environment(device: torch.device) -> dict:
    """What produced a result: versions, device and host."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    return {
        "cnnsweep": __version__,
        "git_commit": git_commit(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "host": platform.node(),
        "device": str(device),
        "device_name": name or platform.machine(),
        "threads": torch.get_num_threads(),
    }


@contextmanager
def heartbeat(store: Store, trial_id: int, interval: float):
    """Mark the run alive every ``interval`` seconds from a background thread."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            try:
                store.heartbeat(trial_id)
            except UpdateFinishedTrialError:
                return  # the run ended (stored, or taken over): nothing left to keep alive
            except Exception as exc:  # a store hiccup must not kill the training
                log.warning("heartbeat failed: %s", first_line(exc))

    thread = threading.Thread(target=beat, name="heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _interrupt_on_sigterm() -> None:
    """A SIGTERM (one passed on by `cnnsweep run`, or a preemption notice) stops this worker as
    a Ctrl-C does: its run goes back to the queue."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, raise_terminated)


def check_same_data(store: Store, signature: dict[str, Any]) -> bool:
    """Refuse data that differs from what the study's runs train on (its signature, recorded
    when it first trained): results trained on other data would be mixed in unseen, as when
    one machine reads CIFAR-10's JPEG copy and another downloads the official batches.
    Returns whether there was a signature to check against."""
    stored = store.data_signature()
    if stored is not None and (difference := signature_difference(stored, signature)):
        raise DataError(
            f"the data here is not the data study {store.study_name!r} trains on: {difference}; "
            "give --data the same data set, or run it as a study of another name"
        )
    return stored is not None


def run_worker(
    options: WorkerOptions, data: ImageDataset | None = None, study_done: Waitable | None = None
) -> int:
    """Work until the study has nothing waiting or running; returns the number of runs done.
    ``study_done``: an event `cnnsweep run` sets once it sees nothing pending, which ends this
    worker's wait between looks at the queue (else it notices when it next looks)."""
    _interrupt_on_sigterm()
    store = Store.open(options.store_url, options.study_name)
    device = resolve_device(options.device)
    if options.threads:
        torch.set_num_threads(options.threads)
    document = store.document() or {}
    check_speed(document, options.speed)
    if data is None:
        data = load_data(options.data or document.get("spec", {}).get("data"), progress=False)
    signature, checked = data.signature(), False
    searching = bool(document.get("spec", {}).get("search"))
    study = study_from_document(document) if searching else None
    env = environment(device)
    me = this_worker()
    folder = options.checkpoint_folder(store)
    done = 0
    idle = FIRST_IDLE_WAIT
    while True:
        # Before any run is claimed; until the study has a signature (a worker may join one
        # that has not trained yet), before each claim.
        checked = checked or patiently(lambda: check_same_data(store, signature),
                                       "reading the study's data signature")  # fmt: skip
        try:
            patiently(lambda: store.recover_stale(options.grace, options.max_attempts),
                      "looking for runs of silent workers")  # fmt: skip
            claim = _next_run(store, study, me)
            if claim is not None:
                checkpoint = _checkpoint(folder, claim, options)
                stop = _pruning(store, study, claim) if study is not None else None
                _run_one(store, claim, data, device, env, options, checkpoint, stop)
        except KeyboardInterrupt:
            # _run_one puts its run back; this covers every moment from the claim to its
            # training (and a claim made just as the Ctrl-C came): no line in between is bare.
            store.put_back(me, "interrupted")
            raise
        if claim is None:
            if not patiently(store.has_pending, "reading the queue"):
                return done
            # Others still run, and one of them may die: look again soon, then less often.
            # Once set, the event no longer cuts a wait: were the study to grow again (runs a
            # changed spec enqueued elsewhere), this would otherwise poll without a pause.
            if study_done is None or study_done.is_set():
                time.sleep(idle)
            else:
                study_done.wait(idle)
            idle = min(options.poll_interval, 2 * idle)
            continue
        idle = FIRST_IDLE_WAIT
        done += 1


def _checkpoint(
    folder: Path | None, claim: ClaimedRun, options: WorkerOptions
) -> RunCheckpoint | None:
    """The run's epoch checkpoint, in ``folder`` (None: no checkpoints)."""
    if folder is None:
        return None
    key = json.dumps(claim.config, sort_keys=True)
    return RunCheckpoint(folder / f"{claim.run_id}.pt", key, options.checkpoint_every)


def check_speed(document: dict, speed: dict[str, Any]) -> None:
    """The speed switches against every run's own settings, before a run is claimed: a clash
    (the spec compiles, the command asks for a CUDA graph) is one error, not a failed run each."""
    if not speed or not document:
        return
    study = study_from_document(document)
    searching = study.spec.search is not None
    configs = study.search_probes() if searching else [run.config for run in study.runs()]
    for config in configs:
        with_speed(config, speed)


def _next_run(store: Store, study: Study | None, me: dict) -> ClaimedRun | None:
    """The next run for this worker: the first waiting one or, in a search, a new draw; None
    when there is none. Tried again while the store is unreachable. A claim whose reply was
    lost may still have been committed: a retry first takes up the run this worker then holds
    (it holds none between runs), rather than leave it to wait out the grace."""
    tries = 0

    def attempt() -> ClaimedRun | None:
        nonlocal tries
        tries += 1
        if tries > 1 and (held := store.held_run(me)) is not None:
            return held
        claim = store.claim(me)
        if claim is None and study is not None:
            claim = _draw(store, study, me)
        return claim

    return patiently(attempt, "claiming a run")


def _draw(store: Store, study: Study, me: dict) -> ClaimedRun | None:
    """A new run of a search study, sampled now (None when its trials are all drawn)."""
    from cnnsweep import search

    version = store.identity_version
    return store.ask(
        search.sampler(study, draw=len(store.trial_states())),
        search.distributions(study),
        lambda params, number: search.run_of(study, params, number, version),
        me,
        study.spec.search.trials,
    )


def _pruning(store: Store, study: Study, claim: ClaimedRun):
    """A search's pruner as a stop check (None without one): after each epoch it compares the
    run's validation accuracy so far with the other runs' at the same epoch."""
    import optuna

    from cnnsweep import search

    if study.spec.search.pruner is None:
        return None
    loaded = optuna.load_study(study_name=store.study_name, storage=store.storage,
                               pruner=search.pruner(study))  # fmt: skip
    # A Trial reads its trial once, when made: made anew each epoch, it sees the epoch's
    # intermediate value, which store.record_epoch has just written.
    return lambda _metrics: optuna.trial.Trial(loaded, claim.trial_id).should_prune()


def _run_one(
    store: Store,
    claim: ClaimedRun,
    data,
    device,
    env: dict,
    options: WorkerOptions,
    checkpoint: RunCheckpoint | None,
    should_stop=None,
) -> None:
    patiently(lambda: store.set_environment(claim.trial_id, env), "recording the environment")

    def on_epoch(metrics) -> None:
        epoch = metrics.model_dump(mode="json")
        patiently(lambda: store.record_epoch(claim.trial_id, epoch, intermediate_value(epoch)),
                  f"recording epoch {metrics.epoch} of {claim.label}")  # fmt: skip

    log.info("start %s (attempt %d)", claim.label, claim.attempt)
    with heartbeat(store, claim.trial_id, options.heartbeat_interval):
        try:
            # Validated here too: a config stored by another version may no longer be valid.
            config = with_speed(TrainConfig(**claim.config), options.speed)
            result = train(config, data, device, on_epoch=on_epoch, checkpoint=checkpoint,
                           should_stop=should_stop)  # fmt: skip
        except KeyboardInterrupt:  # the checkpoint stays: the retry resumes from it
            store.fail(claim.trial_id, "interrupted", retry=True)
            raise
        except Exception as exc:  # recorded as the run's failure; the worker goes on
            if unreachable(exc):  # the store, lost past the patience: not the run's fault
                raise  # the run stays running, its checkpoint kept: a takeover resumes it
            log.warning("run %s failed: %s: %s", claim.label, type(exc).__name__, first_line(exc))
            error = f"{type(exc).__name__}: {exc}"
            trace = "".join(traceback.format_exception(exc))
            patiently(lambda: store.fail(claim.trial_id, error, traceback=trace),
                      f"recording the failure of {claim.label}")  # fmt: skip
            if checkpoint is not None:
                checkpoint.remove()  # a failed run starts over when run again
            return
        diverged, pruned = result.stop_reason == "diverged", result.stop_reason == "pruned"
        # Still beating while the store is waited for: a long outage is no sign of death.
        stored = patiently(lambda: store.finish(claim.trial_id, result.model_dump(mode="json"),
                                                diverged, pruned),
                           f"storing the result of {claim.label}")  # fmt: skip
    if checkpoint is not None:  # only now: had the result been lost, the retry would resume
        checkpoint.remove()
    if not stored:
        log.warning("run %s was taken over by another worker; result discarded", claim.label)


def worker_process(
    options: WorkerOptions,
    folder: str | None = None,
    environment: dict[str, str] | None = None,
    study_done: Waitable | None = None,
    takes_ctrl_c: bool = True,
) -> None:
    """A local worker process started by `cnnsweep run`: spawned, or forked from a server that
    imported this module before (runner.worker_context). Either way it imports what training
    needs, never the report's plotting and statistics, and works in the folder and environment
    of the command that started it (a server keeps those of the moment it started), and takes
    a Ctrl-C as that command does (``takes_ctrl_c``; ignored where it ignores SIGINT, as a
    script's background job does)."""
    signal.signal(signal.SIGINT, signal.default_int_handler if takes_ctrl_c else signal.SIG_IGN)
    adopt(folder, environment)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        run_worker(options, study_done=study_done)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except Exception as exc:  # the store lost past the patience: one line, not a traceback
        if not unreachable(exc):
            raise
        log.error("cnnsweep: worker %d: the store cannot be reached: %s", os.getpid(),
                  first_line(exc))  # fmt: skip
        raise SystemExit(1) from None
