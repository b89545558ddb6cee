"""Streaming training data with Ray Data: list, read, decode, resize and crop in CPU tasks.

The training workers receive ready (B, S, S, 3) uint8 batches; nothing is ever held whole on
one machine. An unreadable image is logged, counted and dropped, never fatal.

For super-resolution (`factor` given) the crops are random S x S windows of the photo at its own
resolution (resizing it would throw away the detail the network must learn to restore), and a
second CPU stage adds the paper's low-resolution input, "lowres": (S/f, S/f, 3) uint8, Gaussian
blur sigma 1.0 then bicubic downsampling (stylekit/infer/degrade.py).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import ray

from stylekit.errors import StylekitError
from stylekit.files import images, storage
from stylekit.infer.degrade import degrade

log = logging.getLogger(__name__)

TRAIN_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
# Super-resolution: random windows taken from each decoded photo per epoch. Several per decode
# make an epoch of a small corpus (train-mini: 148 photos) long enough that the pause at each
# epoch's start stays small, and share one decode among them.
SR_CROPS_PER_IMAGE = 4


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


def decode_batch(
    batch: dict[str, np.ndarray],
    size: int,
    counter: Any,
    random_crop: bool = False,
    crop_scale: float = 1.0,
) -> dict[str, np.ndarray]:
    """Ray Data map_batches fn: {"bytes", "path"} -> {"image": (N, size, size, 3) uint8}:
    resized and centre-cropped (crop_scale 1), a random window of the photo resized to a random
    shorter side from size to crop_scale x size (crop_scale > 1), or (random_crop)
    SR_CROPS_PER_IMAGE random windows each at full resolution."""
    crops, bad = [], []
    rng = np.random.default_rng()  # a fresh window every epoch (Ray re-runs the stage)
    for data, path in zip(batch["bytes"], batch["path"], strict=True):
        try:
            pixels = images.decode(bytes(data))
            if random_crop:
                crops.extend(_random_window(pixels, size, rng) for _ in range(SR_CROPS_PER_IMAGE))
            elif crop_scale > 1:
                crops.append(_scaled_window(pixels, size, crop_scale, rng))
            else:
                crops.append(images.resize_crop(pixels, size))
        except StylekitError as e:
            logging.getLogger(__name__).warning("skipping unreadable training image %s: %s", path, e)
            bad.append(str(path))
    if bad and counter is not None:
        counter.add.remote(bad)
    stacked = np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8)
    return {"image": stacked}


def _random_window(pixels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random size x size window; a photo smaller than that is first resized up to cover it."""
    h, w = pixels.shape[:2]
    if min(h, w) < size:
        return images.resize_crop(pixels, size)
    top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    return np.ascontiguousarray(pixels[top : top + size, left : left + size])


def _scaled_window(pixels: np.ndarray, size: int, crop_scale: float, rng: np.random.Generator) -> np.ndarray:
    """A random size x size window of the photo with its shorter side resized to a random length
    from size to crop_scale x size, log-uniform (each octave of zoom as likely): from the whole
    photo's centre square, as the paper's crop, to a detail crop_scale times closer."""
    side = round(size * float(np.exp(rng.uniform(0.0, np.log(crop_scale)))))
    return _random_window(images.resize_shorter(pixels, max(size, side)), size, rng)


def degrade_batch(batch: dict[str, np.ndarray], factor: int) -> dict[str, np.ndarray]:
    """Ray Data map_batches fn: adds "lowres", (N, S/f, S/f, 3) uint8, the paper's degradation
    (blur sigma 1.0, bicubic downsampling by f) of each (S, S, 3) "image"."""
    hr = batch["image"]
    small = hr.shape[1] // factor
    low = [degrade(img, factor) for img in hr]
    stacked = np.stack(low) if low else np.zeros((0, small, small, 3), np.uint8)
    return {"image": hr, "lowres": stacked}


def training_dataset(
    location: str,
    size: int,
    options: storage.StorageOptions,
    counter: Any = None,
    seed: int = 0,
    factor: int | None = None,
    crop_scale: float = 1.0,
) -> ray.data.Dataset:
    """A lazy Ray Dataset of {"image": (size, size, 3) uint8} crops from every image below
    `location` (any fsspec URL but memory://), files in an order seeded by `seed`; centre
    crops, or random windows at a random zoom up to `crop_scale`; with `factor`
    (super-resolution), random full-resolution crops plus their "lowres" inputs."""
    fs, path = storage.arrow_filesystem(location, options)
    ds = ray.data.read_binary_files(
        path,
        filesystem=fs,
        include_paths=True,
        file_extensions=list(TRAIN_EXTENSIONS) + [e.upper() for e in TRAIN_EXTENSIONS],
        # Seeded: the same --seed reads the files in the same order.
        shuffle=ray.data.FileShuffleConfig(seed=seed),
    )
    ds = ds.map_batches(
        decode_batch,
        fn_kwargs={
            "size": size,
            "counter": counter,
            "random_crop": factor is not None,
            "crop_scale": crop_scale,
        },
        batch_size=16,
        batch_format="numpy",
        udf_modifying_row_count=True,  # unreadable images are dropped: no limit pushdown past it
    )
    if factor is None:
        return ds
    return ds.map_batches(degrade_batch, fn_kwargs={"factor": factor}, batch_size=16, batch_format="numpy")
