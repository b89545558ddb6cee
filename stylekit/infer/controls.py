"""Stylization controls: how much style, whose colours, how large the brush strokes.

Pure functions on (H, W, 3) uint8 RGB images, applied by `inference.Stylizer.stylize` around the
network (so `python -m stylekit stylize` and the bulk job's actors give the same pixels):

1. Stroke size. By default (`style_scale` None) a model that records the photo size it paints
   for (`paint_side`, the shorter side) paints every photo at that size first
   (`pyramid_sides`, `compose_levels`): a photo of another size is resized so its shorter side
   is `paint_side`, painted, and, when the photo is larger, painted again at twice that, ... up
   to full size, each finer level adding a share (`DETAIL_WEIGHT`) of the detail the level
   below could not hold. The painting's strokes then come from a run at the model's own scale,
   so a thumbnail, a 1,000 px and a 4,000 px photo show the same painting when looked at the
   same size, and a large result keeps sharp edges instead of being an enlarged small one.
   With an explicit `style_scale` (`working_size` / `resize`) the network sees the photo
   resized by 1/style_scale, and its result is resized back.
2. `preserve_color`: the stylized image's luminance with the photo's own colours.
3. `blend`: `strength` mixes the photo back in.

Each step is skipped at its neutral value (style_scale 1, preserve_color off, strength 1), so the
defaults give exactly the network's own pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

# style_scale range: 0.25 runs the network on 16x the photo's pixels, 8 on 1/64 of them.
MIN_STYLE_SCALE = 0.25
MAX_STYLE_SCALE = 8.0
# How much of each finer pyramid level's own detail band joins the painting below it. The finer
# runs paint the network's fine hatching at the photo's full resolution: all of it (1) brings
# back the grain the coarse run avoids, none (0) leaves an enlarged, soft painting. Measured on
# chicago at 510x338 against the 2016 models (RESULTS, shipped pictures): grain 1.20x the
# originals' at 0.5 against 1.4x at 1, with the edges of the buildings kept.
DETAIL_WEIGHT = 0.5
# A photo whose shorter side is within this factor of `paint_side` is painted at its own size.
PAINT_SIDE_SLACK = 1.1
# `finish` and `compose_levels` work on this many pixels at a time.
CHUNK_PIXELS = 1 << 20

# BT.601 full range (JPEG/JFIF, PIL's "YCbCr"): rows give Y, Cb, Cr from R, G, B
# (Cb and Cr offset by 128).
_RGB_TO_YCBCR = np.array(
    [
        [0.299, 0.587, 0.114],
        [-0.168736, -0.331264, 0.5],
        [0.5, -0.418688, -0.081312],
    ],
    dtype=np.float32,
)
_YCBCR_TO_RGB = np.array(
    [
        [1.0, 0.0, 1.402],
        [1.0, -0.344136, -0.714136],
        [1.0, 1.772, 0.0],
    ],
    dtype=np.float32,
)
_CHROMA_OFFSET = np.array([0.0, 128.0, 128.0], dtype=np.float32)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Float pixels -> uint8: round to nearest, clip to [0, 255]."""
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB in [0, 255] (any dtype) -> (H, W, 3) float32 Y, Cb, Cr (BT.601 full range)."""
    return rgb.astype(np.float32) @ _RGB_TO_YCBCR.T + _CHROMA_OFFSET


def ycbcr_to_rgb(ycbcr: np.ndarray) -> np.ndarray:
    """(H, W, 3) float Y, Cb, Cr -> (H, W, 3) float32 RGB, unclipped (see `to_uint8`)."""
    return (ycbcr.astype(np.float32) - _CHROMA_OFFSET) @ _YCBCR_TO_RGB.T


def preserve_color(stylized: np.ndarray, photo: np.ndarray) -> np.ndarray:
    """Luminance-only style transfer (Gatys et al. 2016, "Preserving colour in neural artistic
    style transfer"): Y from `stylized`, Cb and Cr from `photo`, back to RGB.

    (H, W, 3) uint8 twice, same shape -> (H, W, 3) uint8. Where the mix falls outside the RGB
    cube (a dark stroke on a saturated colour) clipping shifts the colour a little there."""
    ycbcr = rgb_to_ycbcr(photo)
    ycbcr[..., 0] = rgb_to_ycbcr(stylized)[..., 0]
    return to_uint8(ycbcr_to_rgb(ycbcr))


def blend(stylized: np.ndarray, photo: np.ndarray, strength: float) -> np.ndarray:
    """strength * stylized + (1 - strength) * photo, in float32, rounded back to uint8.

    (H, W, 3) uint8 twice, same shape -> (H, W, 3) uint8. Strength 1 returns `stylized` and
    0 returns `photo` exactly (the float sum is then exact)."""
    if strength == 1:
        return stylized
    if strength == 0:
        return photo
    mixed = np.float32(strength) * stylized.astype(np.float32)
    mixed += np.float32(1 - strength) * photo.astype(np.float32)
    return to_uint8(mixed)


def working_size(height: int, width: int, style_scale: float, min_side: int) -> tuple[int, int]:
    """The (height, width) the network runs at for a `height` x `width` photo.

    The network paints strokes of a fixed size in its own pixels, so running it on the photo
    shrunk by 1/style_scale and enlarging the result back makes the strokes style_scale times
    larger relative to the photo (2: strokes twice as large, coarser; 0.5: half as large,
    finer, at 4x the pixels to compute). The aspect ratio is kept; the shorter side is not
    shrunk below `min_side` (the network's minimum), nor below its own length if it is already
    shorter than that."""
    factor = 1.0 / style_scale
    shortest = min(height, width)
    factor = max(factor, min(1.0, min_side / shortest))
    return max(1, round(height * factor)), max(1, round(width * factor))


def pyramid_sides(height: int, width: int, paint_side: int) -> list[tuple[int, int]]:
    """The (height, width) of each pyramid level for a `height` x `width` photo, coarsest first.

    The first level's shorter side is `paint_side` (the photo enlarged when it is smaller: a
    thumbnail is painted with the strokes of the full-size photo, then shrunk back); then levels
    an octave apart while they stay below the photo's size; the last is the photo's own size.
    One level, the photo itself, when its shorter side is within PAINT_SIDE_SLACK of
    `paint_side`; one level, enlarged, when it is smaller than that."""
    shortest = min(height, width)
    if paint_side / PAINT_SIDE_SLACK <= shortest <= paint_side * PAINT_SIDE_SLACK:
        return [(height, width)]

    def at(side: float) -> tuple[int, int]:
        return max(1, round(height * side / shortest)), max(1, round(width * side / shortest))

    levels = [at(paint_side)]
    if shortest < paint_side:
        return levels
    side = 2 * paint_side
    while side * PAINT_SIDE_SLACK < shortest:
        levels.append(at(side))
        side *= 2
    return [*levels, (height, width)]


def compose_levels(levels: Sequence[np.ndarray], detail: float = DETAIL_WEIGHT) -> np.ndarray:
    """Stylized pyramid levels, (h_k, w_k, 3) uint8 coarsest first -> the (H, W, 3) uint8 result
    at the last level's size.

    A Laplacian-pyramid blend: going up one level, the result so far is enlarged (Lanczos) and
    the new level contributes `detail` times its own detail band, the level minus itself taken
    down to the size below and back up. Bands below that come from the coarser runs, where the
    network's strokes had the size it was trained to paint."""
    result = levels[0]
    for level in levels[1:]:
        h, w = level.shape[:2]
        blurred = resize(resize(level, *result.shape[:2]), h, w)  # the level without its own band
        enlarged = resize(result, h, w)
        result = np.empty_like(level)
        # Row chunks in float32: a 4,000 px photo's top level whole would take hundreds of MB
        # per float copy, beyond the memory budget the network's tiled run was sized to.
        step = max(1, CHUNK_PIXELS // max(1, w))
        for r in range(0, h, step):
            band = level[r : r + step].astype(np.float32) - blurred[r : r + step]
            band *= np.float32(detail)
            band += enlarged[r : r + step]
            result[r : r + step] = to_uint8(band)
        del blurred, enlarged
    return np.ascontiguousarray(result)


def resize(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (height, width, 3) uint8 with a Lanczos filter (antialiased when
    shrinking); the array itself when the size already matches."""
    if pixels.shape[:2] == (height, width):
        return pixels
    img = Image.fromarray(np.ascontiguousarray(pixels))
    return np.asarray(img.resize((width, height), Image.Resampling.LANCZOS))


def finish(
    stylized: np.ndarray, photo: np.ndarray, *, strength: float = 1.0, keep_color: bool = False
) -> np.ndarray:
    """The network's (h, w, 3) uint8 output for the (H, W, 3) uint8 `photo` -> the (H, W, 3)
    uint8 result: resized to the photo's size (after a style_scale run), then `preserve_color`
    (if `keep_color`), then `blend` with `strength`."""
    out = resize(stylized, *photo.shape[:2])
    if not keep_color and strength == 1:
        return out
    # Row by row in chunks: the float32 intermediates of a whole 8000x8000 photo would take
    # gigabytes; every step is per pixel, so chunks give the same pixels.
    result = np.empty(photo.shape, dtype=np.uint8)
    step = max(1, CHUNK_PIXELS // max(1, photo.shape[1]))
    for r in range(0, photo.shape[0], step):
        part, base = out[r : r + step], photo[r : r + step]
        if keep_color:
            part = preserve_color(part, base)
        result[r : r + step] = blend(part, base, strength)
    return result
