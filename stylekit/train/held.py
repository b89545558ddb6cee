"""Training photos held whole on the device, for a run on one machine without Ray (the GPU
run's train part, tools/gpu_run/gpu_run.py): a small set (train-mini: 148 photos) is decoded and
cropped once, then every epoch is a fresh seeded shuffle of it. The job streams its photos
with Ray Data instead (train/data.py), which never holds a corpus on one machine.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from stylekit.errors import StylekitError
from stylekit.files import images

log = logging.getLogger(__name__)

EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")  # as the job's (train/data.py)


def load_crops(folder: str, size: int, limit: int = 20_000) -> np.ndarray:
    """The first `limit` images below a local `folder`, in name order, each resized and
    centre-cropped to `size` x `size` as the job's decode stage does: (N, size, size, 3) uint8.
    An unreadable image is logged and left out."""
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in EXTENSIONS)
    crops = []
    for path in files[:limit]:
        try:
            crops.append(images.resize_crop(images.decode(path.read_bytes()), size))
        except (StylekitError, OSError) as e:
            log.warning("skipping unreadable training image %s: %s", path, e)
    if not crops:
        raise StylekitError(f"no readable training images (jpg, jpeg, png, webp) under {folder}")
    return np.stack(crops)


@dataclass
class HeldBatches:
    """The epochs of a held set: called with an epoch's number, the batches of that epoch
    (`train/loop.py`'s `EpochBatches`), each {"image": (batch_size, S, S, 3) uint8} on the
    data's device. An epoch is one permutation of the set, seeded by `seed` and the epoch,
    cut into `steps_per_epoch` whole batches; a set smaller than a batch gives one batch an
    epoch, drawn with replacement."""

    data: torch.Tensor  # (N, S, S, 3) uint8
    batch_size: int
    seed: int = 0
    steps_per_epoch: int = field(init=False)

    def __post_init__(self) -> None:
        if self.data.dim() != 4 or self.data.shape[-1] != 3 or self.data.dtype != torch.uint8:
            raise ValueError(
                f"data must be (N, S, S, 3) uint8 (got {tuple(self.data.shape)} {self.data.dtype})"
            )
        if len(self.data) == 0:
            raise ValueError("data holds no images")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 (got {self.batch_size})")
        self.steps_per_epoch = max(1, len(self.data) // self.batch_size)

    def __call__(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        # Seeded per epoch, as the job's shuffle is: a resumed run draws the epochs it would have.
        gen = torch.Generator().manual_seed(self.seed + 1000 * epoch)
        n, b = len(self.data), self.batch_size
        if n < b:
            yield {"image": self.data[torch.randint(n, (b,), generator=gen).to(self.data.device)]}
            return
        order = torch.randperm(n, generator=gen).to(self.data.device)
        for start in range(0, self.steps_per_epoch * b, b):
            yield {"image": self.data[order[start : start + b]]}
