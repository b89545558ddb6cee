"""Watch a style emerge: at every checkpoint, the current model on a few fixed photos.

Each checkpoint adds a strip, `<run_dir>/previews/step_<step:06d>.jpg` (the bundled chelsea,
astronaut and coffee photos, longest side 192 px, stylized by the model at that step), and
rebuilds `<run_dir>/previews.jpg`: every saved strip, one row per step in step order, each
labelled with its step. A resumed run keeps adding rows to the same grid.

A network of several paintings (nn/styles.py) shows one row per painting in each step's strip,
behind the painting's name. A super-resolution network is shown each photo degraded by its
factor (`network_input`), so its strip shows photo-sized reconstructions.

Rank 0 calls `record`; it never raises (a preview is not worth a failed run).
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Sequence
from importlib import resources

import numpy as np
import torch

from stylekit.files import images, storage
from stylekit.infer import sheet
from stylekit.infer.degrade import degrade, modcrop
from stylekit.nn.sr import output_scale
from stylekit.train.config import PREVIEW_IMAGE, PREVIEW_SIDE

log = logging.getLogger(__name__)

PHOTOS = ("chelsea.jpg", "astronaut.jpg", "coffee.jpg")
SIDE = 192
FOLDER = "previews"
GRID = "previews.jpg"
QUALITY = 90
MAX_ROWS = 100  # a longer run's grid shows this many strips, evenly spread, first and last kept
_STRIP = re.compile(r"^step_(\d+)\.jpg$")


def strip_name(step: int) -> str:
    return f"step_{step:06d}.jpg"


def step_of(key: str) -> int | None:
    """The step of a strip's file name, None for any other file."""
    m = _STRIP.match(key)
    return int(m.group(1)) if m else None


@functools.lru_cache(maxsize=1)
def preview_photos() -> tuple[np.ndarray, ...]:
    """The bundled preview photos, (H, W, 3) uint8 with longest side SIDE."""
    content = resources.files("stylekit") / "examples" / "content"
    return tuple(images.resize_longest(images.decode((content / n).read_bytes()), SIDE) for n in PHOTOS)


def network_input(model: torch.nn.Module, pixels: np.ndarray) -> np.ndarray:
    """What a network is shown of a (H, W, 3) preview photo: the photo itself for a style
    network; for a super-resolution network, the photo degraded by its factor (blur, bicubic
    downsampling), so the result is (about) photo-sized."""
    factor = output_scale(model)
    return pixels if factor == 1 else degrade(modcrop(pixels, factor), factor)


def preview_pixels(model: torch.nn.Module) -> np.ndarray:
    """The current stylization of the fixed preview photo, (H, W, 3) uint8; with several
    styles, the photo in each side by side."""
    pixels = images.resize_longest(images.load_image(PREVIEW_IMAGE), PREVIEW_SIDE)
    styles = getattr(model, "styles", 1)
    if styles == 1:
        return stylize(model, [pixels])[0]
    return np.concatenate([stylize(model, [pixels], k)[0] for k in range(styles)], axis=1)


def stylize(
    model: torch.nn.Module, photos: Sequence[np.ndarray], style: int | None = None
) -> list[np.ndarray]:
    """Each photo through `model` (in its style number `style` when it has several) in fp32 on
    the model's device (its train/eval mode kept)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()

    def run(x: torch.Tensor) -> torch.Tensor:
        return model(x) if style is None else model(x, style)

    try:
        with torch.no_grad():
            return [
                images.to_pixels(run(images.to_tensor(network_input(model, p)).to(device))[0]) for p in photos
            ]
    finally:
        model.train(was_training)


def render_styles(model: torch.nn.Module, names: Sequence[str] = ()) -> np.ndarray:
    """A step's strip: the preview photos through the model; for a model of several styles,
    one row per style, each behind its name (`names`, in slot order)."""
    styles = getattr(model, "styles", 1)
    if styles == 1:
        return render_strip(stylize(model, preview_photos()))
    rows = []
    for k in range(styles):
        strip = render_strip(stylize(model, preview_photos(), k))
        name = names[k] if k < len(names) else f"style {k}"
        rows.append([sheet.label_cell(name, None, strip.shape[0], width=_label_width(strip.shape[0])), strip])
    return _trimmed(sheet.grid(rows))


def render_strip(pictures: Sequence[np.ndarray], side: int = SIDE) -> np.ndarray:
    """The pictures side by side, each centred in a `side` x `side` cell, sheet.GAP apart."""
    return _trimmed(sheet.grid([[sheet.fit_cell(p, side) for p in pictures]]))


def _trimmed(grid: np.ndarray) -> np.ndarray:
    """A sheet.grid without its outer margin."""
    return np.ascontiguousarray(grid[sheet.GAP : -sheet.GAP, sheet.GAP : -sheet.GAP])


def _label_width(height: int) -> int:
    return max(96, height // 2 + 32)


def render_grid(strips: Sequence[tuple[int, np.ndarray]], originals: np.ndarray | None = None) -> np.ndarray:
    """One row per (step, strip), in step order, each behind a "step N" label cell; the
    photos themselves first, when given, so a reader sees what each column started from."""
    rows = []
    if originals is not None:
        h = originals.shape[0]
        rows.append([sheet.label_cell("photo", None, h, width=_label_width(h)), originals])
    for step, strip in sorted(strips, key=lambda s: s[0]):
        if originals is not None and strip.shape[1] > originals.shape[1]:
            # A strip of several styles has their names in front: the photos go above theirs.
            blank = sheet.label_cell(
                "", None, originals.shape[0], width=strip.shape[1] - originals.shape[1] - sheet.GAP
            )
            rows[0] = [rows[0][0], blank, originals]
        h = strip.shape[0]
        rows.append([sheet.label_cell(f"step {step}", None, h, width=_label_width(h)), strip])
    return sheet.grid(rows)


def choose_steps(steps: Sequence[int], limit: int = MAX_ROWS) -> list[int]:
    """`steps` sorted; at most `limit` of them, evenly spread, first and last kept."""
    steps = sorted(set(steps))
    if len(steps) <= limit:
        return steps
    picks = np.unique(np.linspace(0, len(steps) - 1, limit).round().astype(int))
    return [steps[i] for i in picks]


def record(
    run_dir: str,
    step: int,
    model: torch.nn.Module,
    options: storage.StorageOptions = storage.StorageOptions(),
    names: Sequence[str] = (),
) -> bool:
    """Save this step's strip (one row per style for several, named by `names`) and rebuild
    the grid; False (and a warning) if that failed."""
    try:
        folder = storage.join(run_dir, FOLDER)
        strip = render_styles(model, names)
        storage.write_bytes(
            storage.join(folder, strip_name(step)), images.encode(strip, "jpg", QUALITY), options
        )
        saved = {step_of(key): key for key in storage.list_files(folder, options)}
        saved.pop(None, None)
        strips = {step: strip}
        rows_each = max(1, getattr(model, "styles", 1))  # a step's strip has a row per style
        for s in choose_steps([*saved, step], max(2, MAX_ROWS // rows_each)):  # type: ignore[list-item]
            if s in strips:
                continue
            try:
                strips[s] = images.decode(storage.read_bytes(storage.join(folder, saved[s]), options))
            except Exception as e:
                log.warning("preview strip for step %d left out of %s: %s", s, GRID, e)
        grid = render_grid(list(strips.items()), render_strip(preview_photos()))
        storage.write_bytes(storage.join(run_dir, GRID), images.encode(grid, "jpg", QUALITY), options)
        return True
    except Exception as e:
        log.warning("previews for step %d not written: %s: %s", step, type(e).__name__, e)
        return False
