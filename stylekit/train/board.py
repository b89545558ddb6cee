"""TensorBoard event files for a training run, in `<run_dir>/tensorboard/` wherever the run lives.

tensorboardX writes to a local folder: the run's own `tensorboard/` folder when the run folder
is local, else a temporary folder whose files `sync()` copies to `<run_dir>/tensorboard/`
(whole files, overwritten: an event file only grows). A resumed run adds a new event file to
the same folder, as TensorBoard expects, and marks the step it resumed from so TensorBoard
drops the older file's events after it.

Nothing here may stop training: a failure to write or upload is logged as a warning.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Mapping

import numpy as np

from stylekit.files import storage

log = logging.getLogger(__name__)

FOLDER = "tensorboard"


class Board:
    """One tensorboardX SummaryWriter for rank 0 of a run."""

    def __init__(
        self,
        run_dir: str,
        options: storage.StorageOptions = storage.StorageOptions(),
        *,
        local_dir: str | None = None,
        purge_step: int | None = None,
    ):
        """Events for `run_dir` go to `<run_dir>/tensorboard/`; `local_dir` is where they are
        written first (default: that folder itself when local, else a temporary folder).
        `purge_step`: on resume, the first step this run logs again."""
        self.target = storage.join(run_dir, FOLDER)
        self.options = options
        self._temporary = False
        self._uploaded: dict[str, tuple[int, int]] = {}
        self.writer = None
        self.local_dir, self.remote = local_dir or "", False
        try:
            from tensorboardX import SummaryWriter

            if local_dir is None:
                if storage.is_local(self.target):
                    local_dir = storage.local_path(self.target)
                else:
                    local_dir, self._temporary = tempfile.mkdtemp(prefix="stylekit-tensorboard-"), True
            self.local_dir = os.path.abspath(local_dir)
            self.remote = not _same_local_folder(self.local_dir, self.target)
            os.makedirs(self.local_dir, exist_ok=True)
            # The suffix keeps two writers started in the same second (a quick restart) apart.
            self.writer = SummaryWriter(
                logdir=self.local_dir,
                purge_step=purge_step,
                flush_secs=30,
                filename_suffix=f".{os.getpid()}.{uuid.uuid4().hex[:6]}",
            )
        except Exception as e:
            log.warning("no TensorBoard events for this run: %s: %s", type(e).__name__, e)

    def log_scalars(self, step: int, values: Mapping[str, float]) -> None:
        if self.writer is None:
            return
        try:
            for name, value in values.items():
                self.writer.add_scalar(name, float(value), step)
        except Exception as e:
            log.warning("TensorBoard scalars at step %d not written: %s", step, e)

    def log_image(self, step: int, name: str, pixels: np.ndarray) -> None:
        """An (H, W, 3) uint8 image."""
        if self.writer is None:
            return
        try:
            self.writer.add_image(name, np.ascontiguousarray(pixels), step, dataformats="HWC")
        except Exception as e:
            log.warning("TensorBoard image %s at step %d not written: %s", name, step, e)

    def flush(self) -> None:
        if self.writer is not None:
            try:
                self.writer.flush()
            except Exception as e:
                log.warning("TensorBoard events not flushed: %s", e)

    def sync(self) -> None:
        """Flush, then (remote run folder) copy new or grown event files to it."""
        self.flush()
        if not self.remote or self.writer is None:
            return
        try:
            self._uploaded = upload_folder(self.local_dir, self.target, self.options, self._uploaded)
        except Exception as e:
            log.warning("TensorBoard events not copied to %s: %s", self.target, e)

    def close(self) -> None:
        """Flush, upload, close the writer and remove a temporary local folder."""
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception as e:
                log.warning("TensorBoard writer not closed cleanly: %s", e)
            self.sync()
            self.writer = None
        if self._temporary:
            shutil.rmtree(self.local_dir, ignore_errors=True)
            self._temporary = False


def upload_folder(
    local_dir: str,
    target: str,
    options: storage.StorageOptions = storage.StorageOptions(),
    done: Mapping[str, tuple[int, int]] | None = None,
) -> dict[str, tuple[int, int]]:
    """Copy every file under `local_dir` to the same relative key under `target` (a folder or
    s3:// prefix), skipping those whose (size, mtime_ns) is in `done` unchanged. Returns the
    updated `done`."""
    done = dict(done or {})
    for root, _, files in os.walk(local_dir):
        for name in sorted(files):
            path = os.path.join(root, name)
            st = os.stat(path)
            key = os.path.relpath(path, local_dir).replace(os.sep, "/")
            if done.get(key) == (st.st_size, st.st_mtime_ns):
                continue
            with open(path, "rb") as f:
                storage.write_bytes(storage.join(target, *key.split("/")), f.read(), options)
            done[key] = (st.st_size, st.st_mtime_ns)
    return done


def _same_local_folder(local_dir: str, target: str) -> bool:
    if not storage.is_local(target):
        return False
    return storage.local_path(target) == os.path.abspath(local_dir)


def loss_scalars(values: Mapping[str, float], images_per_second: float) -> dict[str, float]:
    """TensorBoard tags for a step's loss terms (LossTerms.as_floats()) and throughput."""
    out = {f"loss/{'total' if k == 'loss' else k}": float(v) for k, v in values.items()}
    out["images_per_second"] = float(images_per_second)
    return out


def painting_scalars(name: str, values: Mapping[str, float]) -> dict[str, float]:
    """TensorBoard tags for a step's loss terms in a run of several paintings, one group per
    painting (`painting_<name>/total`, ...): each step trains one painting."""
    return {f"painting_{name}/{'total' if k == 'loss' else k}": float(v) for k, v in values.items()}
