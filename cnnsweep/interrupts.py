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
from collections.abc import Iterator
from types import FrameType
from typing import Protocol

DEFERRED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Lock(Protocol):
    def acquire(self) -> bool: ...

    def release(self) -> None: ...


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


@contextlib.contextmanager
def held(lock: Lock) -> Iterator[None]:
    """``lock`` held for the block, taken and given up whole: a Ctrl-C meanwhile is delivered
    once the lock is taken (inside the block, which then gives it up) or once it is given up. The
    block itself may be interrupted as usual."""
    taken = False
    try:
        with interrupts_deferred():
            taken = lock.acquire()
        yield
    finally:
        if taken:
            with interrupts_deferred():
                lock.release()
