"""The GPU benchmark: one command, a hard time budget, a table on stdout and the figures as JSON.

(a) Per run: training images/s of the report's own loop vs cnnsweep on the same device (full
    AlexNet, batch norm, Adam, batch 64 and 32), cnnsweep eager, with the whole step in one CUDA
    graph (``cuda_graph``), compiled, and graphed (forward and backward in CUDA graphs through
    ``torch.compile(mode="reduce-overhead")``), each as a ratio to the report's loop.
(b) Several runs per device, with (a)'s fastest step: aggregate training images/s of K = 1, 2,
    4, 8 concurrent runs (separate processes, as ``cnnsweep run --runs-per-device K`` places
    them), and the model FLOP utilisation against a measured matmul peak of the same device.
(b2) P runs of one shape stacked in one process (bench/stacked.py: ``torch.func.vmap`` over the
    runs' own parameters), P = 1, 2, 4, 8, eager and (on a GPU) with the whole step in one CUDA
    graph: aggregate training images/s, to set beside (b)'s K processes. A measurement that
    decides whether such a training mode would pay; cnnsweep does not train so yet.
(c) The report's whole ``seed48`` study at full scale with the best K and (a)'s fastest step
    (``cnnsweep run``'s speed switches):
    wall time, runs finished, test accuracy per run, and the report's claims re-tested. If the
    budget ends first, the runs finished so far and a projected total.

    python bench/gpu.py --data ../shared/data/cifar10-jpeg.tar.xz --json gpu.json
    python bench/gpu.py --smoke        # on CPU in seconds: width 1/8, a few hundred images

Every section checks the budget (``--budget-s``, default 420 s) before it starts and stops
cleanly when it runs out; what was not measured is reported as such, never guessed.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a checkout, uninstalled

from bench.throughput import DEFAULT_DATA, report_loop_images_per_second
from cnnsweep.config import make_config
from cnnsweep.data import load_data
from cnnsweep.data.splits import split_indices
from cnnsweep.devices import bf16_supported, resolve_device
from cnnsweep.flops import matmul_peak_flops, training_flops_per_image
from cnnsweep.launch import adopt, start_worker_server
from cnnsweep.machine import usable_cores
from cnnsweep.spec import builtin_specs
from cnnsweep.train import train

SPLIT = 0.9
REPO = Path(__file__).resolve().parents[1]
# Shares of the budget for (a), (b) and (b2); (c), the whole study, gets what they leave.
SHARE_PER_RUN, SHARE_CONCURRENT, SHARE_STACKED = 0.3, 0.2, 0.12


@dataclass(frozen=True)
class Scale:
    """How big each measurement is: the real one, or the smoke test's."""

    width: float  # AlexNet channel multiplier (1.0: the report's network)
    images: int  # training images per timed epoch in (a) and (b)
    epochs: int  # epochs per measurement; all but the first are timed
    concurrency: tuple[int, ...]  # K values of (b)
    window_s: float  # (b): every one of the K runs trains until this long after their start
    preset: str  # seed48 preset of (c)
    stack_sizes: tuple[int, ...]  # P values of (b2)
    stack_window_s: float  # (b2): timed seconds of each P and mode, after a warm-up
    batch_sizes: tuple[int, ...] = (64, 32)  # of (a)


# (b)'s window: 12 s, so that 4 values of K, each with a warm-up epoch, fit in 20% of 420 s.
# The smoke's 1.5 s: at 0.75 s the K=2 windows overlapped only 39% on the simulated AVX2 CPU,
# where a first epoch and a last one are large parts of so short a window.
# (b2): 4 values of P in 2 modes, 4 s each and a warm-up, in 12% of 420 s.
REAL = Scale(width=1.0, images=20_000, epochs=3, concurrency=(1, 2, 4, 8), window_s=12,
             preset="full", stack_sizes=(1, 2, 4, 8), stack_window_s=4)  # fmt: skip
# Width 1/8 and 512 images, as bench/throughput.py's test: at width 1/16 the network costs so
# little that the eager-to-report-loop ratio came out at 1.0 now and then (1.11-1.95), at 1/8
# it was 1.27-1.98 on the AVX512-BF16 CPU and 1.34-1.56 with oneDNN held to AVX2.
# One batch size and one K: the others are the same code with other numbers (K = 2, so that
# the K runs' barrier, shared window and overlap are exercised).
SMOKE = Scale(width=0.125, images=512, epochs=2, concurrency=(2,), window_s=1.5, preset="smoke",
              stack_sizes=(2,), stack_window_s=0.2, batch_sizes=(64,))  # fmt: skip
# (c) in smoke mode: every seed48 configuration, trained for one short epoch.
SMOKE_PRESET = """
[presets.smoke]
width = 0.0625
max_train_images = 100
max_test_images = 50
max_epochs = 1
train_eval_images = 0
"""


class Budget:
    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()


def _config(scale: Scale, batch_size: int, **settings):
    """The measured run: full AlexNet (or the smoke's width), batch norm, Adam at 1e-3."""
    return make_config(**{
        "batch_norm": True, "optimizer": "adam", "lr": 1e-3, "batch_size": batch_size,
        "width": scale.width, "split": SPLIT, "max_train_images": math.ceil(scale.images / SPLIT),
        "max_test_images": 1000, "max_epochs": scale.epochs, "patience": scale.epochs,
        **settings,
    })  # fmt: skip


def _timed_rate(history) -> float:
    """Images/s over the epochs after the first (the first pays for warm-up and compilation)."""
    timed = history[1:] or history
    return sum(m.images_per_second for m in timed) / len(timed)


# --- (a) one run ---------------------------------------------------------------------------------

MODES = {  # name -> TrainConfig speed settings; the cheap ones first (compiling takes a while)
    "eager": {},
    "step_graph": {"cuda_graph": True},  # the whole step in one CUDA graph (cnnsweep/steps.py)
    "compiled": {"compile": True},
    "graphed": {"compile": True, "compile_mode": "reduce-overhead"},  # forward and backward
}


def per_run(data, device, scale: Scale, modes: list[str], budget: Budget) -> list[dict]:
    """Mode by mode, each batch size in turn: the report's loop, then eager, then the compiled
    modes, so that a budget spent on compiling still leaves every batch size's eager ratio."""
    rows = {batch_size: {"batch_size": batch_size} for batch_size in scale.batch_sizes}
    for batch_size, row in rows.items():
        if budget.left() < 30:
            row["skipped"] = "budget"
            continue
        sample = data.subset(math.ceil(scale.images / SPLIT), 1000, seed=0)
        train_idx, _ = split_indices(len(sample.train_labels), SPLIT, 0)
        reference = report_loop_images_per_second(
            sample.train_images[train_idx], sample.train_labels[train_idx], device, scale.width,
            seed=0, batch_size=batch_size,
        )  # fmt: skip
        row["report_loop"] = round(reference, 1)
    for mode in modes:
        for row in rows.values():
            if "report_loop" not in row:
                continue
            if budget.left() < 20:
                row[mode] = None
                continue
            try:
                result = train(_config(scale, row["batch_size"], **MODES[mode]), data, device)
            except Exception as exc:  # one mode's failure leaves the others' figures
                traceback.print_exc()
                row[mode], row[f"{mode}_error"] = None, f"{type(exc).__name__}: {exc}"
                continue
            rate = _timed_rate(result.history)
            row[mode] = round(rate, 1)
            row[f"{mode}_ratio"] = round(rate / row["report_loop"], 2)
    return list(rows.values())


def fastest_mode(rows: list[dict]) -> str:
    """The mode of (a) that trained fastest at the first batch size (64); eager if none did."""
    measured = {mode: rows[0][mode] for mode in MODES if rows and rows[0].get(mode)}
    return max(measured, key=measured.get) if measured else "eager"


# --- (b) K concurrent runs -----------------------------------------------------------------------


def _one_of_k(args: tuple) -> list[tuple[float, float, int]]:
    """In a pool process: train one run until the shared window closes; return each timed
    epoch's (start, end, images)."""
    data_path, device_name, scale, batch_size, speed, threads, barrier = args
    if threads:
        torch.set_num_threads(threads)
    data = load_data(data_path, progress=False)
    device = resolve_device(device_name)
    epochs: list[tuple[float, float, int]] = []

    def on_epoch(metrics) -> None:
        end = time.time()
        images = round(metrics.images_per_second * metrics.epoch_time)
        epochs.append((end - metrics.epoch_time, end, images))

    barrier.wait()  # all K start together, and train over the same window
    closes = time.time() + scale.window_s
    # At least two epochs: the first warms up. The window, not the epoch count, ends the run,
    # so that the K runs train at the same time and their rates may be added up.
    config = _config(scale, batch_size, max_epochs=50, patience=50, **speed)
    train(config, data, device, on_epoch=on_epoch,
          should_stop=lambda m: m.epoch >= 2 and time.time() >= closes)  # fmt: skip
    if device.type == "cuda":
        torch.cuda.empty_cache()  # leave the memory to the next K
    return epochs[1:]


def concurrent(data_path, device, scale: Scale, mode: str, flops_per_image: float, peak: float,
               budget: Budget) -> list[dict]:  # fmt: skip
    """Aggregate images/s of K runs at once, for each K; one pool of processes serves every K
    (each process starts once: reading the data costs seconds). Processes start as cnnsweep's
    workers do: spawned for a GPU, forked from a server with torch imported on a CPU."""
    if budget.left() < 30:  # no K can run: start no processes either
        return [{"k": k, "skipped": "budget"} for k in scale.concurrency]
    rows = []
    context = start_worker_server([device.type])  # on a CPU: started by main(), already up
    largest = max(scale.concurrency)
    # In this process's folder and environment, not the fork server's: a $CNNSWEEP_CACHE set
    # since the server started (as a test sets its own) would otherwise miss the decode cache
    # that main() filled, and each process would decode the whole data set again (16 s here).
    start = (os.getcwd(), dict(os.environ))
    with context.Manager() as manager, context.Pool(largest, adopt, start) as pool:
        for k in scale.concurrency:
            if budget.left() < 2 * scale.window_s + 10:
                rows.append({"k": k, "skipped": "budget"})
                continue
            threads = max(1, usable_cores() // k) if device.type == "cpu" else None
            barrier = manager.Barrier(k)
            jobs = [(data_path, str(device), scale, 64, MODES[mode], threads, barrier)] * k
            # chunksize 1: a process blocked at the barrier takes no second job, so the K jobs
            # run in K different processes.
            runs = pool.map(_one_of_k, jobs, chunksize=1)
            rows.append({**_aggregate(k, runs, flops_per_image, peak), "mode": mode})
    return rows


def _aggregate(k: int, runs: list[list[tuple[float, float, int]]], flops_per_image: float,
               peak: float) -> dict:  # fmt: skip
    """Each run's steady rate over its timed epochs, summed: the K trained at once. How much
    their timed windows overlapped says how true that sum is; all timed images over the span
    from the first timed epoch's start to the last one's end is a lower bound."""
    rates = [sum(e[2] for e in run) / sum(e[1] - e[0] for e in run) for run in runs]
    starts, ends = [run[0][0] for run in runs], [run[-1][1] for run in runs]
    span = max(ends) - min(starts)
    overlap = max(0.0, min(ends) - max(starts)) / span
    rate = sum(rates)
    return {
        "k": k, "aggregate_img_per_s": round(rate, 1),
        "aggregate_lower_img_per_s": round(sum(e[2] for run in runs for e in run) / span, 1),
        "per_run_img_per_s": round(rate / k, 1), "overlap": round(overlap, 2),
        "mfu": round(rate * flops_per_image / peak, 4) if peak else None,
    }  # fmt: skip


# --- (b2) P runs stacked in one process --------------------------------------------------------

STACK_MODES = {"eager": False, "step_graph": True}  # mode -> whole step in a CUDA graph


def stacked(data, device, scale: Scale, flops_per_image: float, peak: float,
            budget: Budget) -> list[dict]:  # fmt: skip
    """Aggregate training images/s of P runs stacked into one model (bench/stacked.py), batch 64,
    Adam with a learning rate per run, for each P and mode (step_graph on a GPU only)."""
    from bench.stacked import stacked_images_per_second
    from cnnsweep.models import build_model

    sample = data.subset(1024, 0, seed=0)  # each run draws its batches from these, on the device
    images = torch.from_numpy(sample.train_images).to(device).float() / 255  # (N, C, H, W)
    images = ((images - 0.5) / 0.25).contiguous()  # about zero mean and unit spread
    labels = torch.from_numpy(sample.train_labels).to(device).long()
    config = _config(scale, 64)
    modes = list(STACK_MODES) if device.type == "cuda" else ["eager"]
    rows = []
    for mode in modes:
        for p in scale.stack_sizes:
            row = {"p": p, "mode": mode}
            rows.append(row)
            if budget.left() < scale.stack_window_s + 5:
                row["skipped"] = "budget"
                continue
            try:  # one P's failure (memory, a capture) leaves the others' figures
                rate = stacked_images_per_second(
                    lambda: build_model(config, data), [1e-3 * 0.5**i for i in range(p)],
                    images, labels, 64, bf16_supported(device), STACK_MODES[mode],
                    scale.stack_window_s,
                )  # fmt: skip
            except Exception as exc:
                traceback.print_exc()
                row["error"] = f"{type(exc).__name__}: {exc}"
                continue
            finally:
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            row.update(img_per_s=round(rate, 1), per_run_img_per_s=round(rate / p, 1),
                       mfu=round(rate * flops_per_image / peak, 4) if peak else None)  # fmt: skip
    return rows


# --- (c) the whole study -------------------------------------------------------------------------


def whole_study(data_path, device, scale: Scale, k: int, mode: str, budget: Budget) -> dict:
    """``cnnsweep run seed48`` at the scale's preset with K runs on the device and (a)'s fastest
    step, within the budget."""
    with tempfile.TemporaryDirectory(prefix="cnnsweep-gpu-bench-") as folder:
        return _run_study(Path(folder), data_path, device, scale, k, mode, budget)


def speed_flags(speed: dict) -> list[str]:
    """A mode's speed settings as ``cnnsweep run``'s options (--cuda-graph, --compile-mode M)."""
    flags = []
    for name, value in speed.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        else:
            flags += [flag, str(value)]
    return flags


def _run_study(folder: Path, data_path, device, scale: Scale, k: int, mode: str,
               budget: Budget) -> dict:  # fmt: skip
    from cnnsweep.frame import study_data
    from cnnsweep.report.findings import judge_claims, load_claims
    from cnnsweep.report.tidy import tidy_frame
    from cnnsweep.spec import load_spec
    from cnnsweep.store import Store

    spec = folder / "seed48.toml"
    spec.write_text(builtin_specs()["seed48"] + SMOKE_PRESET)
    preset = scale.preset
    command = [
        sys.executable,
        "-m",
        "cnnsweep",
        "run",
        str(spec),
        "--preset",
        preset,
        "--data",
        str(data_path),
        "--devices",
        str(device),
        "--runs-per-device",
        str(k),
        *speed_flags(MODES[mode]),  # speed switches: the same runs, trained with (a)'s fastest step
        *(["--no-report"] if scale is SMOKE else []),  # the report has tests of its own
    ]
    seconds = max(1.0, budget.left() - 15)  # leave time to read the store and write the JSON
    start = time.monotonic()
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    process = subprocess.Popen(
        command, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True, env={**os.environ, "PYTHONPATH": path},
        # Its Ctrl-C at the budget must work even when this bench runs as a background job,
        # which inherits SIGINT ignored (Python then installs no KeyboardInterrupt handler).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        _, stderr = process.communicate(timeout=seconds)
        finished_in_budget = process.returncode in (0, 1)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: runs in flight go back to the queue
        _, stderr = process.communicate(timeout=60)
        finished_in_budget = False
    wall = time.monotonic() - start
    name = f"seed48-{preset}"
    journal = folder / "runs" / name / "journal.log"
    if not journal.exists():
        return {"error": stderr.strip().splitlines()[-1] if stderr.strip() else "no store"}
    store = Store.open(str(journal), name)
    records = store.records()
    done = [r for r in records if r.state.finished]
    accuracies = {r.label: round(r.result["test_accuracy"], 2) for r in done if r.result}
    figures = {
        "preset": preset, "mode": mode, "runs_per_device": k, "wall_s": round(wall, 1),
        "runs_finished": len(done), "runs_total": len(records),
        "finished_in_budget": finished_in_budget, "test_accuracy": accuracies,
        "projected_total_s": round(wall * len(records) / len(done), 1) if done else None,
    }  # fmt: skip
    if process.returncode != 0:  # what the command said last, to read what went wrong
        figures["stderr_tail"] = [line[:300] for line in stderr.strip().splitlines()[-10:]]
    if done:
        factors = list(load_spec("seed48").grid)
        frame = tidy_frame(study_data(store).results, factors)
        findings = judge_claims(load_claims("seed-report"), frame, factors)
        figures["claims"] = {f.claim.id: f.verdict for f in findings}
        best = max(done, key=lambda r: r.result["test_accuracy"])
        figures["best_run"] = best.label
        dropout = [r.result["test_accuracy"] for r in done if r.config.get("dropout")]
        figures["dropout_max_test_accuracy"] = round(max(dropout), 2) if dropout else None
        figures["bn_adam_lr1e-3_test_accuracy"] = [
            round(r.result["test_accuracy"], 2) for r in done
            if r.config.get("batch_norm") and r.config["optimizer"] == "adam"
            and r.config["lr"] == 1e-3
        ]  # fmt: skip
    return figures


# --- the command ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--budget-s", type=float, default=420.0, help="hard limit (420 s)")
    parser.add_argument("--smoke", action="store_true", help="tiny and quick, for CPU and CI")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    budget = Budget(args.budget_s)
    scale = SMOKE if args.smoke else REAL
    device = resolve_device(args.device)
    # Graphs need CUDA; on a CPU torch.compile measured slower than eager (DESIGN.md).
    modes = list(MODES) if device.type == "cuda" else ["eager"]
    # The study's command runs in a folder of its own: a relative path would not be found there.
    args.data = os.path.abspath(args.data)
    data = load_data(args.data, progress=False)
    flops = training_flops_per_image(_config(scale, 64), data)
    # The smoke's MFU only shows the arithmetic works: a quarter second of matmuls is enough.
    # MFU against the peak of the precision the runs train in: bf16 where it is native (AMP).
    peak = matmul_peak_flops(device, bf16=bf16_supported(device), seconds=0.25 if args.smoke else 1)
    figures: dict = {
        "device": str(device), "device_name": _device_name(device), "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"), "smoke": args.smoke, "width": scale.width,
        "budget_s": args.budget_s, "train_flops_per_image": flops, "matmul_peak_flops": peak,
    }  # fmt: skip
    if args.smoke and budget.left() >= 30:
        # (b)'s fork server (on a CPU) imports while (a) runs, after the peak's measurement: the
        # smoke's figures of (a) only show that the code works, a real run keeps (a) to itself.
        start_worker_server([device.type])
    share = lambda fraction: Budget(min(budget.left(), fraction * args.budget_s))  # noqa: E731
    sections = figures["section_s"] = {"setup": round(args.budget_s - budget.left(), 1)}

    def section(name: str, measure) -> None:
        """One section, timed. A section that fails is reported as such and the others still
        run: on a lent GPU there may be no second try. The JSON is written after each one, so
        a run killed at its time limit still leaves what it measured."""
        start = time.monotonic()
        try:
            figures[name] = measure()
        except Exception as exc:  # recorded and printed, never hidden
            traceback.print_exc()
            figures[name] = {"error": f"{type(exc).__name__}: {exc}"}
        sections[name] = round(time.monotonic() - start, 1)
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=2))

    section("per_run", lambda: per_run(data, device, scale, modes, share(SHARE_PER_RUN)))
    # (b) and (c) train with the step that (a) measured fastest at batch 64.
    mode = figures["mode"] = fastest_mode(_rows(figures["per_run"]))
    section(
        "concurrent",
        lambda: concurrent(args.data, device, scale, mode, flops, peak, share(SHARE_CONCURRENT)),
    )
    section(
        "stacked",
        lambda: stacked(data, device, scale, flops, peak, share(SHARE_STACKED)),
    )
    measured = [r for r in _rows(figures["concurrent"]) if "aggregate_img_per_s" in r]
    best_k = max(measured, key=lambda r: r["aggregate_img_per_s"])["k"] if measured else 1

    def study() -> dict:
        if budget.left() <= 30:
            return {"skipped": "budget"}
        return whole_study(args.data, device, scale, best_k, mode, budget)

    section("study", study)
    figures["elapsed_s"] = round(args.budget_s - budget.left(), 1)
    print_table(figures)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return figures


def _rows(section: list[dict] | dict) -> list[dict]:
    """A section's rows; none where it failed (then it is ``{"error": ...}``)."""
    return section if isinstance(section, list) else []


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def print_table(figures: dict) -> None:
    print(f"device   {figures['device']} ({figures['device_name']}), torch {figures['torch']}, "
          f"{figures['date']}{'  [smoke]' if figures['smoke'] else ''}")  # fmt: skip
    print(
        f"model    AlexNet width {figures['width']}, batch norm, Adam lr 1e-3; "
        f"{figures['train_flops_per_image'] / 1e9:.3f} GFLOP per training image"
    )
    print("\n(a) one run, training images/s (ratio to the report's loop)")
    _print_error(figures["per_run"])
    for row in _rows(figures["per_run"]):
        if "skipped" in row:
            print(f"  batch {row['batch_size']}: skipped ({row['skipped']})")
            continue
        cells = [f"report loop {row['report_loop']:.1f}"]
        for mode in MODES:
            if row.get(mode) is not None:
                cells.append(f"{mode} {row[mode]:.1f} ({row[f'{mode}_ratio']:.2f}x)")
            elif f"{mode}_error" in row:
                cells.append(f"{mode} failed ({row[f'{mode}_error']})")
            elif mode in row:
                cells.append(f"{mode} skipped (budget)")
        print(f"  batch {row['batch_size']}: " + ", ".join(cells))
    print(f"\n(b) K concurrent runs, batch 64, {figures['mode']}")
    _print_error(figures["concurrent"])
    for row in _rows(figures["concurrent"]):
        if "skipped" in row:
            print(f"  K={row['k']}: skipped ({row['skipped']})")
        else:
            mfu = f", MFU {100 * row['mfu']:.1f}%" if row["mfu"] is not None else ""
            print(f"  K={row['k']}: {row['aggregate_img_per_s']:.1f} img/s in all "
                  f"(at least {row['aggregate_lower_img_per_s']:.1f}), "
                  f"{row['per_run_img_per_s']:.1f} per run{mfu} "
                  f"(timed windows {100 * row['overlap']:.0f}% overlapping)")  # fmt: skip
    print("\n(b2) P runs stacked in one process (bench/stacked.py), batch 64")
    _print_error(figures.get("stacked", []))
    for row in _rows(figures.get("stacked", [])):
        if "img_per_s" in row:
            mfu = f", MFU {100 * row['mfu']:.1f}%" if row["mfu"] is not None else ""
            print(f"  P={row['p']} {row['mode']}: {row['img_per_s']:.1f} img/s in all, "
                  f"{row['per_run_img_per_s']:.1f} per run{mfu}")  # fmt: skip
        else:
            print(f"  P={row['p']} {row['mode']}: {row.get('error') or row.get('skipped')}")
    study = figures["study"]
    print("\n(c) seed48 study")
    if "runs_finished" in study:
        state = "finished" if study["finished_in_budget"] else "budget ended"
        print(f"  preset {study['preset']} ({study['mode']}), K={study['runs_per_device']}: "
              f"{study['runs_finished']}/{study['runs_total']} runs in {study['wall_s']:.0f} s "
              f"({state}; projected total {study['projected_total_s']} s)")  # fmt: skip
        if "claims" in study:
            print("  claims: " + ", ".join(f"({k}) {v}" for k, v in study["claims"].items()))
    else:
        print(f"  {study}")
    if "section_s" in figures:
        spent = ", ".join(f"{name} {s:.1f} s" for name, s in figures["section_s"].items())
        print(f"\ntime     {figures['elapsed_s']:.1f} s of {figures['budget_s']:.0f}: {spent}")


def _print_error(section: list[dict] | dict) -> None:
    if isinstance(section, dict) and "error" in section:
        print(f"  failed: {section['error']}")


if __name__ == "__main__":
    main()
    gc.freeze()  # the exit then skips a last collection of all torch loaded (about 1 s)
