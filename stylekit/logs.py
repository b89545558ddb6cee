"""Logging setup shared by the jobs and the CLI (the library itself only uses `logging`)."""

from __future__ import annotations

import logging
import os

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: str | int | None = None) -> None:
    """Configure the root logger once; STYLEKIT_LOG_LEVEL overrides the default INFO."""
    level = level or os.environ.get("STYLEKIT_LOG_LEVEL", "INFO")
    logging.basicConfig(level=level, format=FORMAT, datefmt="%H:%M:%S")
    # Third-party chatter that drowns our progress lines.
    for noisy in ("botocore", "s3fs", "aiobotocore", "urllib3", "fsspec", "gcsfs", "adlfs", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
