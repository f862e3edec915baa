"""How `cnnsweep run` starts its worker processes.

On CPUs, workers are forked from a server process that has made a worker's imports once
(cnnsweep/worker_server.py: about 1.8 s on these 2-core machines), so that a worker, and a
replacement for a dead one, starts in a fraction of a second. The server starts before the
command's own imports when ``--devices`` surely means CPUs (else once torch has resolved them),
and imports beside them. With a GPU, workers are spawned: each one's CUDA starts in a fresh
process, never in a fork.

This module imports no torch: the command can start the server before its own imports.
"""

from __future__ import annotations

import contextlib
import glob
import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
import os
import sys
from collections.abc import Mapping, Sequence

WORKER_IMPORTS = ["cnnsweep.worker_server"]


def worker_context(device_types: Sequence[str]) -> multiprocessing.context.BaseContext:
    """The start method for workers on devices of these types ("cpu", "cuda")."""
    # Linux only: macOS's system libraries are not safe to use after fork() (Python spawns there).
    if sys.platform.startswith("linux") and all(kind == "cpu" for kind in device_types):
        with contextlib.suppress(ValueError):  # no forkserver in this Python
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(WORKER_IMPORTS)
            return context
    return multiprocessing.get_context("spawn")


def start_worker_server(device_types: Sequence[str]) -> multiprocessing.context.BaseContext:
    """The workers' start method; a fork server, if that is it, starts importing now."""
    context = worker_context(device_types)
    if context.get_start_method() == "forkserver":
        multiprocessing.forkserver.ensure_running()
    return context


def adopt(folder: str | None, environment: Mapping[str, str] | None) -> None:
    """In a process forked from the fork server: the working folder and environment of the
    process that asked for it, as they are now. The server keeps those of the moment it started,
    so a child would otherwise read, say, a ``$CNNSWEEP_CACHE`` changed since then, miss the
    decode cache its parent filled, and decode the data set again."""
    if folder is not None:
        os.chdir(folder)
    if environment is not None:
        os.environ.clear()
        os.environ.update(environment)


# A machine where none of these exists has no GPU that torch could use (NVIDIA's, ROCm's).
GPU_DEVICE_FILES = ("/dev/nvidia[0-9]*", "/dev/kfd")


def surely_cpus(device_names: Sequence[str]) -> bool:
    """Whether ``--devices`` names only CPUs, judged without importing torch: ``cpu``, or
    ``auto`` on a machine with no GPU device files."""
    gpus = any(glob.glob(pattern) for pattern in GPU_DEVICE_FILES)
    return all(name == "cpu" or (name == "auto" and not gpus) for name in device_names)
