"""Contact sheets: several models side by side on the same photos, in one image.

The first row holds the original photos; below it, one row per model with its stylization of
each photo. The first column labels each row: the model's name, above the style image's
thumbnail when one can be found (see `style_thumbnail`). Every cell is a `cell` x `cell` square
holding the photo resized so its longest side is `cell` (stylized at that size), centred.

No Ray here: `python -m stylekit sheet` and the training previews (`stylekit.train.previews`)
both draw with these helpers.
"""

from __future__ import annotations

import functools
import logging
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from stylekit.errors import StylekitError
from stylekit.files import images, storage
from stylekit.infer.inference import InferenceOptions, Stylizer
from stylekit.nn.model import TransformerNet

log = logging.getLogger(__name__)

BACKGROUND = (24, 24, 24)
LABEL_COLOUR = (235, 235, 235)
DEFAULT_CELL = 256
MIN_CELL = 32
MAX_LABEL_LINES = 3
GAP = 4  # pixels between cells and around the sheet
BUNDLED_STYLES = resources.files("stylekit") / "examples" / "styles"


@dataclass(frozen=True)
class SheetModel:
    """One row of a contact sheet: a label, the network, and optionally its style image."""

    name: str
    model: TransformerNet
    style: np.ndarray | None = None  # (H, W, 3) uint8, any size: shown as a thumbnail


def contact_sheet(
    photos: Sequence[np.ndarray],
    models: Sequence[SheetModel],
    cell: int = DEFAULT_CELL,
    options: InferenceOptions = InferenceOptions(),
    header: str = "original",
) -> np.ndarray:
    """(H, W, 3) uint8 sheet: 1 + len(models) rows and 1 + len(photos) columns of `cell`-pixel
    squares, GAP pixels apart and from the edges."""
    if not photos:
        raise StylekitError("a contact sheet needs at least one photo")
    if cell < MIN_CELL:
        raise StylekitError(f"cells must be at least {MIN_CELL} px (got {cell})")
    resized = [images.resize_longest(np.ascontiguousarray(p), cell) for p in photos]
    rows: list[tuple[np.ndarray, list[np.ndarray]]] = [(label_cell(header, None, cell), resized)]
    for entry in models:
        stylized = Stylizer(entry.model, options).stylize(resized)
        rows.append((label_cell(entry.name, entry.style, cell), stylized))
    return grid([[label, *(fit_cell(p, cell) for p in row)] for label, row in rows])


def grid(rows: Sequence[Sequence[np.ndarray]], gap: int = GAP) -> np.ndarray:
    """Lay out rows of (h, w, 3) cells: cells of a row top-aligned, rows left-aligned, `gap`
    pixels between them and around, on the background colour."""
    heights = [max(c.shape[0] for c in row) for row in rows]
    widths = [sum(c.shape[1] for c in row) + gap * (len(row) - 1) for row in rows]
    out = np.empty((sum(heights) + gap * (len(rows) + 1), max(widths) + 2 * gap, 3), np.uint8)
    out[:] = BACKGROUND
    y = gap
    for row, h in zip(rows, heights, strict=True):
        x = gap
        for c in row:
            out[y : y + c.shape[0], x : x + c.shape[1]] = c
            x += c.shape[1] + gap
        y += h + gap
    return out


def fit_cell(pixels: np.ndarray, cell: int) -> np.ndarray:
    """`pixels` centred on a `cell` x `cell` square of background (shrunk first if larger)."""
    if max(pixels.shape[:2]) > cell:
        pixels = images.resize_longest(pixels, cell)
    out = np.empty((cell, cell, 3), np.uint8)
    out[:] = BACKGROUND
    h, w = pixels.shape[:2]
    top, left = (cell - h) // 2, (cell - w) // 2
    out[top : top + h, left : left + w] = pixels
    return out


def label_cell(text: str, thumbnail: np.ndarray | None, cell: int, width: int | None = None) -> np.ndarray:
    """A `cell`-high label: `text` at the top (wrapped after a space or '+' onto at most
    MAX_LABEL_LINES lines, the last shortened with an ellipsis to fit) and, below it,
    `thumbnail` fitted into the space left."""
    width = width or cell
    font_size = max(10, cell // 14)
    margin = max(2, font_size // 3)
    img = Image.new("RGB", (width, cell), BACKGROUND)
    draw = ImageDraw.Draw(img)
    font = label_font(font_size)
    lines = wrap_text(draw, text, font, width - 2 * margin)
    for i, line in enumerate(lines):
        draw.text((margin, margin + i * (font_size + margin)), line, fill=LABEL_COLOUR, font=font)
    text_bottom = margin + len(lines) * (font_size + margin)
    if thumbnail is not None:
        room = min(width - 2 * margin, cell - text_bottom - margin)
        if room >= 8:
            thumb = Image.fromarray(np.ascontiguousarray(thumbnail))
            thumb.thumbnail((room, room), Image.Resampling.LANCZOS)
            img.paste(
                thumb, ((width - thumb.width) // 2, text_bottom + (cell - text_bottom - thumb.height) // 2)
            )
    return np.asarray(img, dtype=np.uint8)


@functools.lru_cache(maxsize=16)
def label_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's default font at `size` px (Pillow >= 10.1); its fixed bitmap font before that."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: no size argument
        return ImageFont.load_default()


def wrap_text(draw: ImageDraw.ImageDraw, text: str, font: object, width: int) -> list[str]:
    """`text` as lines at most `width` px wide, broken after a space or '+' (a blend's parts);
    at most MAX_LABEL_LINES, the last shortened with an ellipsis if the text goes on."""
    pieces = [p for p in re.split(r"(?<=[ +])", text) if p]
    lines: list[str] = []
    while pieces and len(lines) < MAX_LABEL_LINES - 1:
        line = pieces.pop(0)
        while pieces and draw.textlength(line + pieces[0], font=font) <= width:  # type: ignore[arg-type]
            line += pieces.pop(0)
        if draw.textlength(line, font=font) > width:  # type: ignore[arg-type]
            pieces.insert(0, line)  # one piece too wide for a line: the ellipsis line takes it
            break
        lines.append(line.rstrip())
    if pieces:
        lines.append(fit_text(draw, "".join(pieces), font, width))
    return lines


def fit_text(draw: ImageDraw.ImageDraw, text: str, font: object, width: int) -> str:
    """`text`, shortened with a trailing ellipsis until it is at most `width` px wide."""
    if draw.textlength(text, font=font) <= width:  # type: ignore[arg-type]
        return text
    while text and draw.textlength(text + "…", font=font) > width:  # type: ignore[arg-type]
        text = text[:-1]
    return text + "…" if text else ""


def style_thumbnail(
    metadata: dict[str, str],
    options: storage.StorageOptions = storage.StorageOptions(),
    max_side: int = 512,
) -> np.ndarray | None:
    """The style image a model was trained on, (H, W, 3) uint8 at most `max_side` px, or None.

    Tries metadata["style"] as a path or URI (it may name a file on the training machine), then
    the bundled style `stylekit/examples/styles/<stem>.jpg` by metadata["style_name"]'s stem or
    else the style path's stem."""
    decode = images.DecodeOptions(max_side=max_side)
    style = metadata.get("style", "").strip()
    if style:
        try:
            return images.decode(storage.read_bytes(style, options), decode)
        except (StylekitError, OSError) as e:
            log.debug("style image %s not readable here (%s)", style, e)
    for source in (metadata.get("style_name", ""), style):
        stem = _stem(source)
        if not stem:
            continue
        bundled = BUNDLED_STYLES / f"{stem}.jpg"
        if bundled.is_file():
            try:
                return images.decode(bundled.read_bytes(), decode)
            except StylekitError as e:  # pragma: no cover - the bundled files decode
                log.debug("bundled style %s: %s", stem, e)
    return None


def _stem(location: str) -> str:
    """File name without extension of a local path (either separator) or URI."""
    name = posixpath.basename(location.strip().replace("\\", "/").rstrip("/"))
    return posixpath.splitext(name)[0]


def model_label(location: str) -> str:
    """A short row label for a model file: its stem, or its folder's name for a run folder's
    `model.safetensors` (runs/wave/model.safetensors -> wave)."""
    parts = [p for p in location.replace("\\", "/").rstrip("/").split("/") if p]
    if not parts:
        return location
    stem = posixpath.splitext(parts[-1])[0]
    if stem == "model" and len(parts) > 1 and not parts[-2].endswith(":"):
        return parts[-2]
    return stem or parts[-1]
