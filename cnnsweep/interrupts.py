"""Ctrl-C held back while a lock is taken or given up, or a run's state changes; then delivered.

A Ctrl-C (SIGINT; SIGTERM, where a worker turns it into one) raises KeyboardInterrupt between
any two bytecodes. Arriving just after a journal lock's file is made and before the code that
would remove it is reached, it leaves the lock behind: every other process then waits out the
lock's grace (10 s; the enqueue lock's 60 s) before breaking it. Arriving between two writes of
one change of a run's state (failed, then its retry enqueued), it leaves the change half made.
Inside :func:`interrupts_deferred` the signal is only noted; it is delivered, by the handler
that was in place, when the block ends.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import Protocol

DEFERRED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Lock(Protocol):
    def acquire(self) -> bool: ...  # waits until taken

    def release(self) -> None: ...


WAIT_BETWEEN_ATTEMPTS_S = 0.25  # the longest pause between two attempts at a lock


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Python's handlers of SIGINT and SIGTERM postponed to the end of the block; signals whose
    handling is the OS's own (default or ignored) are left as they are."""
    if threading.current_thread() is not threading.main_thread():
        yield  # Python runs signal handlers in the main thread only: this one is not interrupted
        return
    caught: list[tuple[int, FrameType | None]] = []
    postponed = {}
    for number in DEFERRED_SIGNALS:
        handler = signal.getsignal(number)
        if callable(handler):
            postponed[number] = signal.signal(number, lambda n, frame: caught.append((n, frame)))
    try:
        yield
    finally:
        for number, handler in postponed.items():
            signal.signal(number, handler)
        if caught:
            number, frame = caught[0]
            postponed[number](number, frame)  # e.g. KeyboardInterrupt, raised here and now


class Terminated(KeyboardInterrupt):
    """A SIGTERM to a command, raised as a Ctrl-C is, for the same clean stop; told apart so
    that the command can pass it on to its workers (a SIGTERM, unlike a terminal's Ctrl-C,
    reaches one process only) and exit as terminated."""


@contextlib.contextmanager
def sigterm_stops_as_ctrl_c() -> Iterator[None]:
    """Within the block a SIGTERM (``kill PID``, a scheduler or service manager stopping the
    command) raises :class:`Terminated`; the handler before it is restored after the block."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def raise_terminated(number: int, frame: FrameType | None) -> None:
    """A SIGTERM handler: the signal raised as :class:`Terminated`."""
    raise Terminated


@contextlib.contextmanager
def held(lock: Lock) -> Iterator[None]:
    """``lock`` held for the block, taken and given up whole: a Ctrl-C as it is taken is
    delivered once it is (inside the block, which then gives it up), one as it is given up once
    that is done. A lock with ``attempts()`` (a generator of attempts, True once taken) is waited
    for between attempts, where a Ctrl-C is delivered at once: nothing is held then, and a lock
    left by a killed holder can take its whole grace to be broken. The block may be interrupted
    as usual."""
    taken = [False]  # set inside the deferral: a Ctrl-C delivered at its end finds it set
    try:
        _take(lock, taken)
        yield
    finally:
        if taken[0]:
            with interrupts_deferred():
                lock.release()


def _take(lock: Lock, taken: list[bool]) -> None:
    if not hasattr(lock, "attempts"):  # a lock that only waits for itself: not interruptible
        with interrupts_deferred():
            taken[0] = lock.acquire()
        return
    wait = lock.attempts()
    pause = 0.001
    while True:
        with interrupts_deferred():
            taken[0] = next(wait)
        if taken[0]:
            return
        time.sleep(pause)  # a Ctrl-C here is raised at once
        pause = min(2 * pause, WAIT_BETWEEN_ATTEMPTS_S)
