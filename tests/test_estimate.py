"""The estimate `cnnsweep run` prints before the first run: measured against a real study's wall
time, the warning for the report's full scale on a CPU, and the question only a terminal asks."""

import io
import os
import re
import subprocess
import sys
import time

import pytest
import torch

from cnnsweep import cli, runner
from cnnsweep import estimate as estimate_module
from cnnsweep.cli import NotStarted, _show_estimate, main
from cnnsweep.data import load_data
from cnnsweep.estimate import STUDY_OVERHEAD_S, StudyEstimate, cpu_share, duration
from cnnsweep.machine import physical_cores, usable_cores
from cnnsweep.runner import existing_store, run_study, study_estimate
from cnnsweep.spec import load_study
from tests.conftest import SHARED_ARCHIVE


def test_the_estimate_is_within_2x_of_a_real_studys_wall_time(tiny_spec, tmp_path, monkeypatch):
    """`cnnsweep run` as a user runs it: the estimate it prints before the first run, against the
    wall time from that moment to its end (the workers' start and the report included)."""
    monkeypatch.chdir(tmp_path)
    spec = tiny_spec(name="timed", epochs=3, seeds=1)
    command = [sys.executable, "-m", "cnnsweep", "run", str(spec), "--workers", "2",
               "--devices", "cpu"]  # fmt: skip
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    lines = []
    for line in process.stderr:  # the estimate's lines, then the study's
        lines.append(line)
        if line.startswith("  at "):
            break
    printed_at = time.perf_counter()
    _, rest = process.communicate(timeout=300)
    wall = time.perf_counter() - printed_at
    assert process.returncode == 0, "".join(lines) + rest
    assert lines[-2].startswith("estimate: 4 runs x 3 epochs") and "(measured by a probe)" in line
    seconds = int(re.search(r": (\d+) s$", line.strip()).group(1))  # under a minute: "N s"
    assert seconds / 2 <= wall <= 2 * seconds, (line, wall)
    study = load_study(str(spec))
    # Run again: nothing left to train, and the estimate says so.
    again = []
    run_study(study, workers=2, devices=["cpu"], before_start=again.append, report=False)
    assert again[0].runs == 0 and again[0].lines() == [
        "estimate: nothing to train (every run is finished)"
    ]
    # A second seed: four runs to do, at the speed the four finished ones trained (no probe).
    grown = load_study(str(tiny_spec(name="timed", epochs=3, seeds=2)))
    store = existing_store(grown, None)
    data, cpu = load_data(grown.spec.data), [torch.device("cpu")]
    estimate = study_estimate(grown, store, data, cpu, 2)
    assert estimate.runs == 4 and estimate.speed_source == "as 4 finished runs trained"
    # Each stored rate is one worker's: two workers on two cores train at twice it (the share of
    # each run's overhead halves too), one worker at it.
    alone = study_estimate(grown, store, data, cpu, 1)
    for low_or_high in (0, 1) if physical_cores(os.sched_getaffinity(0)) >= 2 else ():
        training = [e.seconds[low_or_high] - STUDY_OVERHEAD_S for e in (alone, estimate)]
        assert training[0] == pytest.approx(2 * training[1], rel=1e-9)


def test_the_cpus_shared_are_those_the_command_may_run_on():
    """Held to one CPU (taskset, a container's cpuset), two workers take turns on it: each
    trains on one thread and the estimate counts one training at a time, whatever the machine's
    os.cpu_count() says. Held so, the lite main job's estimate said 2 min 52 s and it took 5 min
    48 s."""
    allowed = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(allowed)})  # this thread only, as taskset -c N would
        assert usable_cores() == 1
        assert cpu_share(2) == (1, 1) and cpu_share(1) == (1, 1)
    finally:
        os.sched_setaffinity(0, allowed)
    assert usable_cores() == len(allowed)
    if len(allowed) >= 2 and physical_cores(allowed) >= 2:
        assert cpu_share(2) == (len(allowed) // 2, 2) and cpu_share(1) == (len(allowed), 1)


def write_topology(sysfs, siblings: dict[int, str]) -> None:
    """A Linux sysfs CPU tree: each CPU's hyperthread siblings, as the kernel lists them."""
    for cpu, listed in siblings.items():
        topology = sysfs / f"cpu{cpu}" / "topology"
        topology.mkdir(parents=True)
        (topology / "thread_siblings_list").write_text(f"{listed}\n")


def test_hyperthreads_of_one_core_count_as_one_training_at_a_time(tmp_path):
    """Two workers on the two hyperthreads of one core take turns at its arithmetic: each still
    trains on a thread of its own, but the estimate counts one training at a time."""
    assert physical_cores({0, 1, 2, 3}, tmp_path / "absent") == 4  # no topology: a CPU a core
    write_topology(tmp_path / "smt", {0: "0,2", 1: "1,3", 2: "0,2", 3: "1,3"})
    assert physical_cores({0, 1, 2, 3}, tmp_path / "smt") == 2
    assert physical_cores({0, 2}, tmp_path / "smt") == 1
    allowed = os.sched_getaffinity(0)
    one_core = ",".join(str(cpu) for cpu in sorted(allowed))  # every CPU a thread of one core
    write_topology(tmp_path / "one-core", {cpu: one_core for cpu in allowed})
    assert cpu_share(2, tmp_path / "one-core") == (max(1, len(allowed) // 2), 1)
    write_topology(tmp_path / "cores", {cpu: str(cpu) for cpu in allowed})
    assert cpu_share(2, tmp_path / "cores") == (max(1, len(allowed) // 2), min(2, len(allowed)))
    # This machine's own topology: never more cores than CPUs.
    assert 1 <= physical_cores(allowed) <= len(allowed)


def test_a_probe_forked_from_the_workers_server_measures_what_one_in_process_does(bars_folder):
    """The probe of `cnnsweep run` on a CPU runs in a process forked from the workers' server;
    elsewhere (a dry run, a GPU's spawned workers) in the command's own process."""
    from cnnsweep.config import make_config
    from cnnsweep.launch import start_worker_server

    config, data, cpu = make_config(width=0.0625), load_data(bars_folder), torch.device("cpu")
    forked = estimate_module.probe_speed(config, data, cpu, start_worker_server(["cpu"]))
    threads = torch.get_num_threads()
    here = estimate_module.probe_speed(config, data, cpu, threads=1)  # one worker's share of 2
    assert torch.get_num_threads() == threads  # given back
    assert forked > 0 and here > 0 and 0.2 < forked / here < 5  # one speed, give or take noise


def test_the_reports_full_scale_on_a_cpu_is_flagged_before_it_starts(
    real_cifar, session_cache, capsys, monkeypatch
):
    """--dry-run: the runs, then the estimate (a probe of a few steps; no run is trained)."""
    monkeypatch.setenv("CNNSWEEP_CACHE", str(session_cache))
    # One step a probe is enough for the verdict (the full AlexNet's steps cost most on an
    # AVX2-only CPU); the probe's own accuracy is tested above.
    monkeypatch.setattr(estimate_module, "PROBE_BATCHES", 1)
    args = ["run", "seed48", "--preset", "full", "--dry-run", "--data", str(SHARED_ARCHIVE),
            "--devices", "cpu"]  # fmt: skip
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "48 runs in study 'seed48-full'" in err
    # 48 runs x 50 epochs x 40,000 images (35,000 or 45,000: splits 70/30 and 90/10) at most.
    assert re.search(r"estimate: 48 runs x \d+-50 epochs: [\d.]+ M to 96\.0 M training images", err)
    assert re.search(r"at [\d,]+ images/s \(measured by a probe\): .* to [\d.]+ days", err)
    assert "this is over an hour on this CPU" in err
    assert "faster: --preset quick" in err and "--devices cuda:0" in err


@pytest.mark.parametrize(("options", "workers"), [
    (["--workers", "3"], 3), (["--runs-per-device", "2"], 4), ([], 1),
])  # fmt: skip
def test_a_dry_run_estimates_for_the_workers_the_run_would_start(
    options, workers, tiny_spec, tmp_path, monkeypatch
):
    """--dry-run's estimate counts the workers `cnnsweep run` would start with these options: K
    runs on each of two devices are 2K workers (before 0.7.5 it took one, whatever K was)."""
    monkeypatch.chdir(tmp_path)
    seen = []

    def estimate(study, store, data, devices, count, *rest):
        seen.append(count)
        return StudyEstimate(0, (0, 0), (0, 0), 0.0, "", (0.0, 0.0), True)

    monkeypatch.setattr(runner, "study_estimate", estimate)
    args = ["run", str(tiny_spec()), "--dry-run", "--devices", "cpu,cpu", *options]
    assert main(args) == 0 and seen == [workers]


def long_estimate(on_cpu: bool = True) -> StudyEstimate:
    return StudyEstimate(48, (6, 50), (10**6, 10**7), 100.0, "measured by a probe",
                         (3 * 3600.0, 30 * 3600.0), on_cpu)  # fmt: skip


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Pipe(io.StringIO):
    def readline(self, *args):
        raise AssertionError("a non-interactive run read its input")


@pytest.mark.parametrize("stdin", [Pipe(), None], ids=["pipe", "closed"])
def test_a_pipe_or_no_input_never_waits_for_an_answer(stdin, monkeypatch, capsys):
    study = load_study("seed48", "full")
    monkeypatch.setattr(cli.sys, "stdin", stdin)  # None: standard input closed, as CI may run it
    _show_estimate(long_estimate(), study, assume_yes=False)  # goes on
    err = capsys.readouterr().err
    assert "over an hour on this CPU (up to 30 h 00 min)" in err and "start it?" not in err


@pytest.mark.parametrize(("answer", "starts"), [("y\n", True), ("\n", False), ("no\n", False)])
def test_a_terminal_is_asked_once(monkeypatch, capsys, answer, starts):
    study = load_study("seed48", "full")
    monkeypatch.setattr(cli.sys, "stdin", Terminal(answer))
    monkeypatch.setattr(cli.sys, "stderr", Terminal())
    if starts:
        _show_estimate(long_estimate(), study, assume_yes=False)
    else:
        with pytest.raises(NotStarted):
            _show_estimate(long_estimate(), study, assume_yes=False)
    assert cli.sys.stderr.getvalue().count("start it? [y/N]") == 1
    # --yes, or a short study: no question at all.
    monkeypatch.setattr(cli.sys, "stdin", Pipe())
    _show_estimate(long_estimate(), study, assume_yes=True)
    short = StudyEstimate(4, (2, 2), (800, 800), 100.0, "probe", (30.0, 30.0), True)
    _show_estimate(short, study, assume_yes=False)


def test_durations_read_as_a_person_reads_them():
    assert [duration(s) for s in (40, 750, 3900, 30 * 3600, 60 * 3600)] == [
        "40 s", "12 min 30 s", "1 h 05 min", "30 h 00 min", "2.5 days",
    ]  # fmt: skip
