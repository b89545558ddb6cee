"""Logging setup shared by the jobs and the CLI (the library itself only uses `logging`)."""

from __future__ import annotations

import logging
import math
import os
import time

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: str | int | None = None) -> None:
    """Configure the root logger once; STYLEKIT_LOG_LEVEL overrides the default INFO."""
    level = level or os.environ.get("STYLEKIT_LOG_LEVEL", "INFO")
    logging.basicConfig(level=level, format=FORMAT, datefmt="%H:%M:%S")
    # Third-party chatter that drowns our progress lines.
    for noisy in ("botocore", "s3fs", "aiobotocore", "urllib3", "fsspec", "gcsfs", "adlfs", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


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
