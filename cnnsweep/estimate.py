"""Before a study starts: how long it will take on this machine, as a range.

Training images = runs still to do x epochs x training images per epoch, the epochs between the
earliest stop early stopping allows (``patience + 1``; or the mean of the runs this store has
already finished) and ``max_epochs``. Each epoch also evaluates (the validation split and the
eval-mode probe; the test set once per run), counted at EVAL_SPEEDUP x the training speed.

The speed, per run shape (model, width, batch size, amp, compile, cuda_graph): what this
store's finished runs of that shape trained at, else a short timed probe on the device:
PROBE_BATCHES training steps, timed after one untimed epoch of warm-up. On a CPU the probe
trains with one worker's share of the cores (``cpu_share``: W workers get cores / W torch threads
each, as `cnnsweep run` gives them), and W workers, one a core at most, train at once: two
one-thread workers train a small model about twice as fast as one run with two threads does.
The cores are those the command may run on (its affinity), hyperthreads of one core counted once.
Each GPU listed adds one probe's speed (a lower bound: runs that share a GPU overlap). Where the
workers are forked from a server (on a CPU), the probe runs in a process forked from it too: the
server has imported what a first training step imports (TorchDynamo, about 1 s), so the command
need not.
"""

from __future__ import annotations

import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing.context import BaseContext
from pathlib import Path

import torch

from cnnsweep.config import TrainConfig, with_speed
from cnnsweep.data.dataset import ImageDataset
from cnnsweep.machine import SYSFS_CPUS, physical_cores, usable_cpus
from cnnsweep.preflight import split_counts
from cnnsweep.spec import Study
from cnnsweep.store import RunRecord

PROBE_BATCHES = 3  # timed training steps of the speed probe
EVAL_SPEEDUP = 3.0  # evaluation is a forward pass only, at a larger batch: ~3x training's speed
RUN_OVERHEAD_S = 0.5  # per run: building the model, preflight, the store's writes (seconds)
STUDY_OVERHEAD_S = 3.0  # per study: starting the workers, writing the report (seconds)
LONG_ON_CPU_S = 3600.0  # above this on a CPU, say so and name the faster options


@dataclass(frozen=True)
class StudyEstimate:
    runs: int  # still to do
    epochs: tuple[float, float]  # mean epochs per run: (early stopping at its earliest, or as
    # this store's finished runs did; max_epochs)
    train_images: tuple[int, int]  # training images to process, low and high
    images_per_second: float  # the whole study's training speed (all workers)
    speed_source: str  # where the speed comes from
    seconds: tuple[float, float]  # wall time, low and high
    on_cpu: bool

    @property
    def long_on_cpu(self) -> bool:
        return self.on_cpu and self.seconds[1] > LONG_ON_CPU_S  # False when unknown (NaN)

    def lines(self) -> list[str]:
        """The estimate, for the terminal."""
        if self.runs == 0:
            return ["estimate: nothing to train (every run is finished)"]
        low, high = self.train_images
        epochs = f"{self.epochs[0]:.0f}" if self.epochs[0] == self.epochs[1] else (
            f"{self.epochs[0]:.0f}-{self.epochs[1]:.0f}")  # fmt: skip
        upto = "" if low == high else f" to {_count(high)}"
        images = f"estimate: {self.runs} runs x {epochs} epochs: {_count(low)}{upto}"
        images += " training images"
        if math.isnan(self.seconds[1]):
            return [images, f"  no time estimate ({self.speed_source})"]
        return [
            images,
            f"  at {self.images_per_second:,.0f} images/s ({self.speed_source}): "
            f"{duration(self.seconds[0])}" + ("" if self.seconds[0] == self.seconds[1]
                                              else f" to {duration(self.seconds[1])}"),
        ]  # fmt: skip


def duration(seconds: float) -> str:
    """``1 h 05 min``, ``12 min 30 s``, ``40 s``: as a person reads it."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    if hours >= 48:
        return f"{hours / 24:.1f} days"
    if hours:
        return f"{hours} h {rest // 60:02d} min"
    if rest >= 60:
        return f"{rest // 60} min {rest % 60:02d} s"
    return f"{rest} s"


def _count(images: int) -> str:
    return f"{images / 1e6:,.1f} M" if images >= 1e6 else f"{images:,}"


def shape_of(config: TrainConfig) -> tuple:
    """Runs of one shape train at one speed: the same network, batch size and precision."""
    return (config.model, config.width, config.batch_size, config.amp, config.compile,
            config.cuda_graph)  # fmt: skip


def cpu_share(workers: int, sysfs: Path = SYSFS_CPUS) -> tuple[int, int]:
    """How `cnnsweep run` shares the CPUs it may use among ``workers`` CPU workers: (torch
    threads each, workers training at once). Workers on two hyperthreads of one core take turns
    at its arithmetic: they count as one training at a time."""
    cpus = usable_cpus()
    threads = max(1, len(cpus) // max(1, workers))
    return threads, max(1, min(workers, physical_cores(cpus, sysfs)))


def estimate_study(
    study: Study,
    stored: list[RunRecord],
    data: ImageDataset,
    devices: list[torch.device],
    workers: int,
    identity_version: int,
    context: BaseContext | None = None,
    speed: dict | None = None,
) -> StudyEstimate:
    """The estimate for the runs of ``study`` that ``stored`` (its records so far) has not
    finished. A search counts its trials still to draw as runs like its extremes. ``context``:
    how the workers start (a fork server's: the probes run in processes forked from it);
    ``speed``: the command's speed switches, applied to every run as its worker will."""
    ended = {r.run_id for r in stored if r.state.ended}
    runs = [run for run in study.runs(identity_version) if run.run_id not in ended]
    if study.spec.search is not None:
        probes = study.search_probes()
        left = max(0, study.spec.search.trials - sum(r.state.ended for r in stored))
        configs = [probes[i % len(probes)] for i in range(left)]
    else:
        configs = [run.config for run in runs]
    configs = [with_speed(config, speed or {}) for config in configs]  # as the workers train
    on_cpu = all(d.type == "cpu" for d in devices)
    if not configs:
        return StudyEstimate(0, (0, 0), (0, 0), 0.0, "", (0.0, 0.0), on_cpu)
    finished = [r for r in stored if r.state.finished and r.result]
    stored_epochs = [r.result["epochs_trained"] for r in finished]
    stored_rates = _stored_rates(finished)
    speeds, sources = {}, set()
    low_images = high_images = 0.0
    low_seconds = high_seconds = 0.0
    # On a CPU, as `cnnsweep run` starts them: no more workers than runs to do.
    threads, parallel = (cpu_share(min(workers, len(configs))) if on_cpu
                         else (None, len({str(d) for d in devices})))  # fmt: skip
    for config in configs:
        key = shape_of(config)
        if key not in speeds:
            rates = stored_rates.get(key, [])
            speeds[key], source = _speed(config, rates, data, devices[0], context, threads)
            sources.add(source)
        if speeds[key] is None:  # the probe failed: a run of this shape will fail the same way
            continue
        train, val, test = split_counts(config, data)
        probe = min(config.train_eval_images, train)
        epochs_low = (sum(stored_epochs) / len(stored_epochs) if stored_epochs
                      else min(config.max_epochs, config.patience + 1))  # fmt: skip
        for epochs, bound in ((epochs_low, "low"), (config.max_epochs, "high")):
            work = epochs * (train + (val + probe) / EVAL_SPEEDUP) + test / EVAL_SPEEDUP
            seconds = work / (speeds[key] * parallel) + RUN_OVERHEAD_S / max(1, workers)
            if bound == "low":
                low_images += epochs * train
                low_seconds += seconds
            else:
                high_images += epochs * train
                high_seconds += seconds
    if None in speeds.values():  # no time for runs that cannot train: no time at all
        low_seconds = high_seconds = math.nan
    mean_speed = high_images / max(1e-9, high_seconds)  # whole-study training speed
    per_epoch = max(1, sum(split_counts(c, data)[0] for c in configs))  # one epoch of each run
    epochs_low, epochs_high = low_images / per_epoch, high_images / per_epoch
    return StudyEstimate(
        runs=len(configs),
        epochs=(round(epochs_low, 1), round(epochs_high, 1)),
        train_images=(int(low_images), int(high_images)),
        images_per_second=mean_speed,
        speed_source=" and ".join(sorted(sources)),
        seconds=(low_seconds + STUDY_OVERHEAD_S, high_seconds + STUDY_OVERHEAD_S),
        on_cpu=on_cpu,
    )


def _stored_rates(finished: list[RunRecord]) -> dict[tuple, list[float]]:
    """Each finished run's training images/s (its mean over its epochs), by the shape it trained
    in: its result's config, which holds the speed switches it ran with (the stored config does
    not; a result of an early release may lack it). A config this version no longer accepts is
    left out (its run is not this study's to estimate)."""
    rates: dict[tuple, list[float]] = {}
    for record in finished:
        try:
            key = shape_of(TrainConfig(**record.result.get("config", record.config)))
        except ValueError:  # pydantic's ValidationError
            continue
        if "images_per_second" in record.result:
            rates.setdefault(key, []).append(record.result["images_per_second"])
    return rates


def _speed(
    config: TrainConfig, rates: list[float], data: ImageDataset, device: torch.device,
    context: BaseContext | None, threads: int | None,
) -> tuple[float | None, str]:  # fmt: skip
    """Training images/s of one run of this shape: as this store's finished runs of that shape
    trained (``rates``), else probed with ``threads`` torch threads (None: as they are)."""
    if rates:
        return sum(rates) / len(rates), f"as {len(rates)} finished runs trained"
    try:
        return probe_speed(config, data, device, context, threads), "measured by a probe"
    except Exception as exc:  # such a run fails in the study too, and is recorded there
        return None, f"the probe failed: {type(exc).__name__}: {exc}"


def probe_speed(
    config: TrainConfig, data: ImageDataset, device: torch.device,
    context: BaseContext | None = None, threads: int | None = None,
) -> float:  # fmt: skip
    """Images/s of a few training steps of this run's model at its batch size: two epochs of
    PROBE_BATCHES batches on a small subset, the second timed, with ``threads`` torch threads
    (None: as they are); in a process forked from the workers' server where ``context`` is one."""
    # A 90/10 holdout of PROBE_BATCHES batches' worth of images, or of all there are.
    images = min(len(data.train_labels), math.ceil(PROBE_BATCHES * config.batch_size / 0.9))
    tests = min(len(data.test_labels), config.batch_size)
    probe = TrainConfig(**config.model_dump() | {
        "protocol": "holdout", "split": 0.9, "max_train_images": images,
        "max_test_images": tests, "max_epochs": 2, "patience": 2, "train_eval_images": 0,
        "restore_best": False,
    })  # fmt: skip
    if context is None or context.get_start_method() != "forkserver":
        return _probe(probe, data, str(device), threads)
    sample = data.subset(images, tests)  # what the probe trains on: all it needs sent
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(_probe, probe, sample, str(device), threads).result()


def _probe(probe: TrainConfig, data: ImageDataset, device: str, threads: int | None) -> float:
    from cnnsweep.train import train

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)  # a worker's share; given back below when run in process
    try:
        result = train(probe, data, torch.device(device))
    finally:
        torch.set_num_threads(before)
    return result.history[-1].images_per_second
