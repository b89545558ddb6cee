"""Ending a bulk run from a watchdog thread, at once and with one line: its output's lease
taken by another run (bulk/plan/lease.py), or its Ray cluster gone (ray_env.ClusterWatch).

The run's main thread may be anywhere: waiting on Ray's pipeline, inside a native call. So the
watchdog (1) closes the manifest: its rows so far are written, and adding more raises the
reason (the next run finds and records outputs written without a row); (2) raises the reason
in the main thread (a signal only it handles), which unwinds as from any failure: the lease
released if it is still this run's, one line printed, the reason's exit status; and (3) if
the main thread has not left the run `GRACE` seconds later (stuck in a native call, or in
waiting for a read that hangs), or by the reason's `time_left` (a lost Ray head: Ray's driver
ends the process on its own soon after), releases the lease itself, prints the line and ends the
process with that status. Off the main thread (a library caller's own thread) only (1) happens.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from typing import Any, Protocol

from stylekit.errors import StylekitError
from stylekit.redact import shown

log = logging.getLogger(__name__)

GRACE = 20.0  # seconds the main thread has to take the reason, and again to leave the run
SIGNAL = signal.SIGUSR2  # handled by the main thread during a run, only to deliver a stop


class _Closable(Protocol):
    def close(self, reason: StylekitError | None = None) -> None: ...


class _Releasable(Protocol):
    def release(self) -> None: ...


class RunStopper:
    """`with RunStopper():` around a run; `stop(reason)` from any thread ends it (see the
    module's docstring). `manifest` and `lease`, once set, are closed and released."""

    def __init__(self, grace: float = GRACE):
        self.grace = grace
        self.manifest: _Closable | None = None
        self.lease: _Releasable | None = None
        self.reason: StylekitError | None = None
        self.raised = threading.Event()  # the main thread has the reason
        self.finished = threading.Event()  # ... and has left the run: it prints the line
        self._once = threading.Lock()
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> RunStopper:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(SIGNAL, self._raise)
            self._installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            signal.signal(SIGNAL, self._previous)
            self._installed = False
        self.finished.set()

    def _raise(self, signum: int, frame: object) -> None:
        if self.reason is not None and not self.raised.is_set():
            self.raised.set()
            raise self.reason

    def stop(self, reason: StylekitError) -> None:
        """End the run with `reason` (its message is the line, its exit_code the status)."""
        if not self._once.acquire(blocking=False):
            return  # already stopping
        self.reason = reason
        if self.manifest is not None:
            with contextlib.suppress(Exception):  # a store that does not answer: those rows are lost
                self.manifest.close(reason)
        if self._installed and not self.finished.is_set():
            threading.Thread(target=self._end_anyway, name="stylekit-stop", daemon=True).start()
            signal.pthread_kill(threading.main_thread().ident or 0, SIGNAL)

    def _end_anyway(self) -> None:
        assert self.reason is not None
        # A reason with a time limit (a lost Ray head: Ray ends the process soon) shares it
        # between the two waits; past it, this thread ends the run itself.
        limit = self.reason.time_left
        deadline = time.monotonic() + (2 * self.grace if limit is None else min(limit, 2 * self.grace))
        raised = self.raised.wait(min(self.grace, max(0.0, deadline - time.monotonic())))
        if raised and self.finished.wait(max(0.0, deadline - time.monotonic())):
            return  # the main thread has left the run with the reason: it says it and exits
        if self.lease is not None:
            with contextlib.suppress(Exception):
                self.lease.release()
        with contextlib.suppress(Exception):
            if not self.finished.is_set():  # the main thread has not printed it, and will not
                sys.stderr.write(f"error: {shown(str(self.reason))}\n")
            sys.stderr.flush()
            sys.stdout.flush()
        os._exit(self.reason.exit_code)
