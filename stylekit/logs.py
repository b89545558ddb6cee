"""Logging setup shared by the jobs and the CLI (the library itself only uses `logging`)."""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
import traceback
from collections import deque
from typing import Any

from stylekit.redact import RedactingFormatter, redact

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATEFMT = "%H:%M:%S"


def setup_logging(level: str | int | None = None) -> None:
    """Configure the root logger once; STYLEKIT_LOG_LEVEL overrides the default INFO. Every
    line its handlers write, and every traceback Python prints, is redacted and every log
    message one line (stylekit/redact.py)."""
    level = level or os.environ.get("STYLEKIT_LOG_LEVEL", "INFO")
    logging.basicConfig(level=level, format=FORMAT, datefmt=DATEFMT)
    for handler in logging.getLogger().handlers:
        formatter = handler.formatter
        if formatter is None or (type(formatter) is logging.Formatter and formatter._fmt == FORMAT):
            handler.setFormatter(RedactingFormatter(FORMAT, DATEFMT))
    redact_tracebacks()
    # Third-party chatter that drowns our progress lines.
    for noisy in ("botocore", "s3fs", "aiobotocore", "urllib3", "fsspec", "gcsfs", "adlfs", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def redact_tracebacks() -> None:
    """Tracebacks Python prints itself (an uncaught error, in any thread, and the "Exception
    ignored in" of a failed finaliser) go through the redaction too. Idempotent."""
    if getattr(sys.excepthook, "stylekit_redacts", False):
        return

    def excepthook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        sys.stderr.write(redact("".join(traceback.format_exception(kind, value, tb))))

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread is not None else "?"
        text = "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback))
        sys.stderr.write(redact(f"Exception in thread {name}:\n{text}"))

    def unraisable_hook(u: Any) -> None:
        text = "".join(traceback.format_exception(u.exc_type, u.exc_value, u.exc_traceback))
        where = f"{u.err_msg or 'Exception ignored in'}: {u.object!r}"
        sys.stderr.write(redact(f"{where}\n{text}"))

    excepthook.stylekit_redacts = True  # type: ignore[attr-defined]
    sys.excepthook = excepthook
    threading.excepthook = thread_hook
    sys.unraisablehook = unraisable_hook


def format_duration(seconds: float) -> str:
    """A time left for progress lines: "4m05s", "2h13m", or "?" when unknown."""
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class Every:
    """True once every `seconds` (for progress lines)."""

    def __init__(self, seconds: float):
        self.seconds, self.last = seconds, time.monotonic()

    def due(self) -> bool:
        now = time.monotonic()
        if now - self.last < self.seconds:
            return False
        self.last = now
        return True


class Progress:
    """Work done out of a total, how fast it goes and how long is left: the one meter behind
    the bulk job's, the video path's and training's progress lines (each words its own line).

    The rate is measured since the start, or with `window` over the last `window` updates
    (training: the current speed, not one dragged down by a slow first step). `due()` is true
    once every `every` seconds."""

    def __init__(self, total: int | None = None, every: float = 0.0, window: int = 0):
        self.total, self.done = total, 0
        self.started = time.monotonic()
        self.marks: deque[tuple[float, int]] | None = (
            deque([(self.started, 0)], maxlen=window + 1) if window else None
        )
        self.every = Every(every)

    def add(self, n: int = 1) -> None:
        self.done += n
        if self.marks is not None:
            self.marks.append((time.monotonic(), self.done))

    def due(self) -> bool:
        return self.every.due()

    def rate(self) -> float:
        """Units per second (0 before any time has passed)."""
        if self.marks is not None:
            (t0, d0), (t1, d1) = self.marks[0], self.marks[-1]
            return (d1 - d0) / (t1 - t0) if t1 > t0 else 0.0
        return self.done / max(time.monotonic() - self.started, 1e-9)

    def left(self) -> float:
        """Seconds left at the current rate (inf when the total or the rate is unknown)."""
        rate = self.rate()
        if self.total is None or rate <= 0:
            return float("inf")
        return max(self.total - self.done, 0) / rate
