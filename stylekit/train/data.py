"""Streaming training data with Ray Data: list, read, decode, resize and crop in CPU tasks.

The training workers receive ready (B, S, S, 3) uint8 batches; nothing is ever held whole on
one machine. An unreadable image is logged, counted and dropped, never fatal.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import ray

from stylekit.errors import StylekitError
from stylekit.files import images, storage

log = logging.getLogger(__name__)

TRAIN_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


@ray.remote(num_cpus=0)
class SkipCounter:
    """Counts images the decode tasks dropped, so the driver can report them."""

    def __init__(self) -> None:
        self.count = 0
        self.examples: list[str] = []

    def add(self, paths: list[str]) -> None:
        self.count += len(paths)
        self.examples.extend(paths[: max(0, 10 - len(self.examples))])

    def summary(self) -> tuple[int, list[str]]:
        return self.count, self.examples


def count_training_images(location: str, options: storage.StorageOptions) -> int:
    """Number of candidate images below `location` (a streamed listing; nothing is read)."""
    suffixes = tuple("." + e for e in TRAIN_EXTENSIONS)
    n = sum(1 for key in storage.list_files(location, options) if key.lower().endswith(suffixes))
    if n == 0:
        raise StylekitError(f"no training images (jpg, jpeg, png, webp) found under {location}; check --data")
    return n


def decode_batch(batch: dict[str, np.ndarray], size: int, counter: Any) -> dict[str, np.ndarray]:
    """Ray Data map_batches fn: {"bytes", "path"} -> {"image": (N, size, size, 3) uint8}."""
    crops, bad = [], []
    for data, path in zip(batch["bytes"], batch["path"], strict=True):
        try:
            crops.append(images.resize_crop(images.decode(bytes(data)), size))
        except StylekitError as e:
            logging.getLogger(__name__).warning("skipping unreadable training image %s: %s", path, e)
            bad.append(str(path))
    if bad and counter is not None:
        counter.add.remote(bad)
    stacked = np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8)
    return {"image": stacked}


def training_dataset(
    location: str, size: int, options: storage.StorageOptions, counter: Any = None, seed: int = 0
) -> ray.data.Dataset:
    """A lazy Ray Dataset of {"image": (size, size, 3) uint8} crops from every image below
    `location` (any fsspec URL but memory://), files in an order seeded by `seed`."""
    fs, path = storage.arrow_filesystem(location, options)
    ds = ray.data.read_binary_files(
        path,
        filesystem=fs,
        include_paths=True,
        file_extensions=list(TRAIN_EXTENSIONS) + [e.upper() for e in TRAIN_EXTENSIONS],
        # Seeded: the same --seed reads the files in the same order.
        shuffle=ray.data.FileShuffleConfig(seed=seed),
    )
    return ds.map_batches(
        decode_batch,
        fn_kwargs={"size": size, "counter": counter},
        batch_size=16,
        batch_format="numpy",
        udf_modifying_row_count=True,  # unreadable images are dropped: no limit pushdown past it
    )
