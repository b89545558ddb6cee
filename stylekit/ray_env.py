"""Joining Ray, the same way for every job."""

from __future__ import annotations

import logging

import ray


def init_ray() -> None:
    """Join the cluster we were submitted to (RAY_ADDRESS, or a `ray start` on this machine);
    with neither, start a local Ray for this process."""
    if not ray.is_initialized():
        ray.init(logging_level=logging.WARNING, log_to_driver=True)
    # Our own progress lines replace Ray Data's bars, which flood a log that is not a terminal
    # (and Ray's notice that they are off would only confuse).
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


def shutdown_ray() -> None:
    """Leave the cluster (stopping a local Ray we started), so that no late worker output
    follows a job's last line."""
    ray.shutdown()
