"""Stopping the processes we started: by process group, never by name."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable


def stop_groups(procs: Iterable[subprocess.Popen | None], timeout: float = 10.0) -> None:
    """SIGTERM each still-running process's group, wait up to `timeout` in all, then SIGKILL the rest.

    The processes must have been started with `start_new_session=True` (their pid is their group)."""
    live = [p for p in procs if p is not None and p.poll() is None]
    for p in live:
        _signal_group(p, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in live:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(p, signal.SIGKILL)
            p.wait()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def stop_on_signals(stop: asyncio.Event | None = None) -> asyncio.Event:
    """An event that SIGINT or SIGTERM sets (Ctrl-C, `docker stop`, the supervisor): a server awaits it, then
    shuts down cleanly. Call from the running event loop."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
            loop.add_signal_handler(sig, stop.set)
    return stop
