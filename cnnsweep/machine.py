"""The CPUs this process may use, without importing torch: the data layer sizes its decoding
pool by them, the estimate and the runner share them among CPU workers."""

from __future__ import annotations

import os
from pathlib import Path

SYSFS_CPUS = Path("/sys/devices/system/cpu")  # Linux: each CPU's topology (its hyperthreads)


def usable_cpus() -> set[int]:
    """The CPUs this process may run on: its affinity (taskset, a container's cpuset), which may
    be fewer than the machine's ``os.cpu_count()``."""
    if hasattr(os, "sched_getaffinity"):
        return os.sched_getaffinity(0)
    return set(range(os.cpu_count() or 1))


def usable_cores() -> int:
    """How many CPUs this process may run on (logical ones: each hyperthread counts)."""
    return len(usable_cpus())


def physical_cores(cpus: set[int], sysfs: Path = SYSFS_CPUS) -> int:
    """The distinct cores among ``cpus``: two hyperthreads of one core share its arithmetic
    units, and training is bound by them. Where the topology cannot be read, every CPU counts
    as a core."""
    cores = set()
    for cpu in cpus:
        try:
            cores.add((sysfs / f"cpu{cpu}/topology/thread_siblings_list").read_text().strip())
        except OSError:
            return len(cpus)
    return len(cores)
