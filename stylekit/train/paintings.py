"""The paintings a style run trains: `--style` files and folders, their names, and which one each
step trains.

One network can hold many paintings (nn/styles.py): `--style a.jpg --style b.jpg` or `--style
paintings/` (a folder or fsspec prefix: every image below it) gives one style slot per painting,
in the order given (a folder's in key order), each named after its file's stem.

Each step trains one painting, the same on every worker: the all-reduced gradient of a step is
then one painting's, as in Dumoulin et al. (a batch per style), and the painting of step t
depends only on the seed and t, never on the worker count, so an elastic or resumed run draws
what an uninterrupted one would. Steps go round the paintings in a fresh seeded order each
round: after R rounds every painting has had exactly R steps, so N paintings trained for N x S
steps get S steps each, the compute of N single-style runs of S steps.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
import torch

from stylekit.errors import StylekitError
from stylekit.files import images, storage

# Characters that separate styles and weights in a --style selection (infer/options.py).
RESERVED = (",", "+", ":", "=")
EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class Painting:
    """One style image: its slot's name and where it is."""

    name: str
    location: str


def name_of(location: str) -> str:
    """A painting's name: its file's stem (`starry_night` for .../starry_night.jpg)."""
    return PurePosixPath(location.rstrip("/")).stem or "style"


def is_folder(location: str) -> bool:
    """Whether a --style entry names a folder or prefix of paintings rather than one image:
    a trailing '/', a local folder, or a name with no image extension."""
    if location.endswith("/"):
        return True
    if storage.is_local(location):
        return os.path.isdir(storage.local_path(location))
    return not location.lower().endswith(EXTENSIONS)


def list_paintings(entries: Sequence[str], options: storage.StorageOptions) -> tuple[Painting, ...]:
    """Every painting the --style entries name, in order: a file as itself, a folder or prefix
    as every image below it in key order. Names must be distinct (they name the styles)."""
    paintings: list[Painting] = []
    for entry in entries:
        if not is_folder(entry):
            paintings.append(Painting(name_of(entry), entry))
            continue
        keys = sorted(k for k in storage.list_files(entry, options) if k.lower().endswith(EXTENSIONS))
        if not keys:
            raise StylekitError(
                f"--style {entry}: no paintings ({', '.join(e[1:] for e in EXTENSIONS)}) found there"
            )
        paintings.extend(Painting(name_of(k), storage.join(entry, *k.split("/"))) for k in keys)
    check_names([p.name for p in paintings], [p.location for p in paintings])
    return tuple(paintings)


def check_names(names: Sequence[str], locations: Sequence[str]) -> None:
    """One style per name: two paintings with one stem would make two slots of one name."""
    seen: dict[str, str] = {}
    for name, location in zip(names, locations, strict=True):
        if any(c in name for c in RESERVED):
            raise StylekitError(
                f"--style {location}: rename it without {' '.join(RESERVED)} (a style is known by its "
                "file's stem, and these join styles in --style selections)"
            )
        if name in seen:
            raise StylekitError(
                f"--style: two paintings are named {name!r} ({seen[name]}, {location}); rename one "
                "(a style is known by its file's stem)"
            )
        seen[name] = location


def read_painting(
    painting: Painting, style_size: int | None, options: storage.StorageOptions = storage.StorageOptions()
) -> tuple[torch.Tensor, str]:
    """The painting as (1, 3, H, W) float in [0, 255] (longest side `style_size` if given) and
    its digest: sha256 of its file's bytes, first 16 hex digits."""
    data = storage.read_bytes(painting.location, options)
    try:
        pixels = images.decode(data)
    except images.ImageError as e:
        raise StylekitError(f"--style {painting.location}: {e}") from None
    if style_size:
        pixels = images.resize_longest(pixels, style_size)
    return images.to_tensor(pixels), hashlib.sha256(data).hexdigest()[:16]


def painting_for_step(step: int, paintings: int, seed: int) -> int:
    """The painting step `step` (0-based) trains: round step // N goes through the N paintings
    in its own seeded order."""
    if paintings == 1:
        return 0
    round_, place = divmod(step, paintings)
    order = np.random.default_rng([seed, round_]).permutation(paintings)
    return int(order[place])


def steps_each(total_steps: int, paintings: int, seed: int) -> list[int]:
    """How many of the first `total_steps` steps each painting had."""
    counts = [total_steps // paintings] * paintings
    done = total_steps - total_steps % paintings
    for step in range(done, total_steps):
        counts[painting_for_step(step, paintings, seed)] += 1
    return counts
