"""Graceful stop on SIGTERM/SIGINT, for hpsearch's long-running processes (worker, storage proxy).

Kubernetes, Slurm and `docker stop` send SIGTERM and wait a grace period; a person presses
Ctrl-C. The first signal asks the process to stop after what it is doing; a second one exits at
once with 143 (128 + SIGTERM, what a shell reports for a killed process).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

_log = logging.getLogger(__name__)

FORCED_EXIT_CODE = 143
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class GracefulStop:
    """What the handler knows: the first signal's name; `event` is set when it arrives."""

    def __init__(self, on_first: Callable[[str], None] | None = None) -> None:
        self.by: str | None = None
        self.event = threading.Event()
        self._on_first = on_first

    @property
    def requested(self) -> bool:
        return self.by is not None

    def handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested:
            _log.warning("second %s: exiting now", name)
            os._exit(FORCED_EXIT_CODE)
        self.by = name
        self.event.set()
        if self._on_first is not None:
            self._on_first(name)  # may raise, into the code the signal interrupted


@contextmanager
def stop_on_signals(on_first: Callable[[str], None] | None = None) -> Iterator[GracefulStop]:
    """Handle SIGTERM and SIGINT as a graceful stop while inside the block."""
    stop = GracefulStop(on_first)
    if threading.current_thread() is not threading.main_thread():
        yield stop  # only the main thread may handle signals (a notebook's worker thread)
        return
    previous = {s: signal.signal(s, stop.handle) for s in STOP_SIGNALS}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
