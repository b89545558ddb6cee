"""Decode any photo robustly to RGB uint8, encode results, and move pixels to and from tensors.

Decoding applies the EXIF orientation, turns grey, palette, RGBA/LA (over white), CMYK, YCbCr
and 16-bit/float images into 8-bit RGB, refuses images over a pixel limit before decoding them
(decompression bombs), and can downscale to a maximum side (JPEG decodes straight to a reduced
size via the decoder's DCT scaling, so a huge photo never fully materialises).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from stylekit.errors import ConfigError, StylekitError
from stylekit.options_meta import flag

if TYPE_CHECKING:
    import torch  # imported where used: decode/encode workers and --help stay free of torch

# The decoder limit is ours (DecodeOptions.max_pixels); Pillow's global one would fire first.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False

EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}
DEFAULT_MAX_PIXELS = 100_000_000  # 100 MP: larger than any camera, far below a bomb


@dataclass(frozen=True)
class EncodeOptions:
    """How a result is encoded: the JPEG/WebP quality every command writes with (PNG ignores it)."""

    quality: int = field(default=95, metadata={"help": "JPEG/WebP quality, 1-100"})

    def __post_init__(self) -> None:
        if not 1 <= self.quality <= 100:
            raise ConfigError(f"--quality must be 1-100 (got {self.quality})")


class ImageError(StylekitError):
    """This one image cannot be used (bad bytes, too large, unsupported)."""


@dataclass(frozen=True)
class DecodeOptions:
    """How inputs are decoded: the pixel limit every command refuses bombs with, and the
    longest side they are scaled down to (commands that size images themselves, such as
    optimize's --size, leave --max-side out and set it)."""

    max_pixels: int = field(
        default=DEFAULT_MAX_PIXELS,
        metadata=flag("refuse images with more pixels than this (decompression bombs)"),
    )
    max_side: int | None = field(
        default=None, metadata=flag("downscale inputs so the longest side is at most this")
    )

    def __post_init__(self) -> None:
        if self.max_pixels < 1:
            raise ConfigError(f"--max-pixels must be >= 1 (got {self.max_pixels})")
        if self.max_side is not None and self.max_side < 1:
            raise ConfigError(f"--max-side must be >= 1 (got {self.max_side})")


def decode(data: bytes, options: DecodeOptions = DecodeOptions()) -> np.ndarray:
    """Image file bytes -> (H, W, 3) uint8 RGB, oriented as the camera meant it."""
    if not data:
        raise ImageError("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > options.max_pixels:
                raise ImageError(
                    f"image is {w}x{h} = {w * h:,} pixels, over the limit of "
                    f"{options.max_pixels:,} (raise --max-pixels if it is genuine)"
                )
            if options.max_side and img.format == "JPEG":
                img.draft("RGB", _scaled(img.size, options.max_side))
            img.load()
            img = ImageOps.exif_transpose(img)
            img = to_rgb(img)
            if options.max_side and max(img.size) > options.max_side:
                img = img.resize(_scaled(img.size, options.max_side), Image.Resampling.LANCZOS)
            return np.asarray(img, dtype=np.uint8)
    except ImageError:
        raise
    except UnidentifiedImageError:  # PIL's words name its buffer ("<_io.BytesIO object at 0x..>")
        raise ImageError(
            "cannot decode image: not a format stylekit reads (jpg, png, webp, bmp, tif), or damaged"
        ) from None
    except Exception as e:
        raise ImageError(f"cannot decode image: {type(e).__name__}: {e}") from None


def _scaled(size: tuple[int, int], side: int, upscale: bool = False) -> tuple[int, int]:
    """(w, h) scaled so the longest side is `side`; unchanged if smaller, unless `upscale`."""
    w, h = size
    s = side / max(w, h)
    if s >= 1 and not upscale:
        return w, h
    return max(1, round(w * s)), max(1, round(h * s))


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB. Alpha is composited over white (what viewers show)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr, mode="L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB") if img.mode != "RGB" else img


def load_image(path: str, options: DecodeOptions = DecodeOptions()) -> np.ndarray:
    """Read and decode a local file (see `storage.read_bytes` for URIs)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ImageError(f"cannot read {path}: {e.strerror}") from None
    return decode(data, options)


def encode(pixels: np.ndarray, fmt: str, quality: int = 95) -> bytes:
    """(H, W, 3) uint8 -> file bytes in `fmt` (png, jpg, webp)."""
    name = FORMATS.get(fmt.lower().lstrip("."))
    if name is None:
        raise StylekitError(f"unsupported output format {fmt!r}; use png, jpg or webp")
    buf = io.BytesIO()
    img = Image.fromarray(pixels, mode="RGB")
    if name == "JPEG":
        img.save(buf, format=name, quality=quality, subsampling=0 if quality >= 90 else 2)
    elif name == "WEBP":
        img.save(buf, format=name, quality=quality)
    else:
        img.save(buf, format=name, compress_level=1)  # fast; PNG is lossless at any level
    return buf.getvalue()


def format_of(path: str) -> str:
    """The output format an input's own extension implies (tif/bmp -> png)."""
    ext = path.rsplit(".", 1)[-1].lower() if "." in path else ""
    return {"jpeg": "jpg", "jpg": "jpg", "png": "png", "webp": "webp"}.get(ext, "png")


def extension(fmt: str) -> str:
    return {"jpeg": ".jpg"}.get(fmt, "." + fmt)


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in [0, 255] (the network's input range)."""
    import torch

    return torch.from_numpy(np.array(pixels, dtype=np.uint8)).permute(2, 0, 1).unsqueeze(0).float()


def to_pixels(y: torch.Tensor) -> np.ndarray:
    """(3, H, W) network output -> (H, W, 3) uint8: clamp, then truncate as the reference does."""
    import torch

    y = y.detach().float().clamp(0, 255).to(torch.uint8)
    return y.permute(1, 2, 0).cpu().numpy()


def is_image_key(key: str) -> bool:
    return key.lower().endswith(EXTENSIONS)


def resize_crop(pixels: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) -> (size, size, 3): scale the shorter side to `size` (bilinear, antialiased),
    then take the centre square, pixel for pixel as the reference's torchvision Resize(size) +
    CenterCrop(size) do on a PIL image: the longer side truncated (481x321 -> 191x128, not
    192), the crop offset rounded half to even. The training data must be the reference's for
    the training to be (benchmarks/bench_quality.py, parity)."""
    img = Image.fromarray(pixels)
    w, h = img.size
    if w <= h:
        nw, nh = size, int(size * h / w)
    else:
        nw, nh = int(size * w / h), size
    img = img.resize((nw, nh), Image.Resampling.BILINEAR)
    left, top = round((nw - size) / 2.0), round((nh - size) / 2.0)
    return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)


def resize_shorter(pixels: np.ndarray, side: int) -> np.ndarray:
    """Scale (aspect kept, bilinear, antialiased as resize_crop) so the shorter side is `side`."""
    img = Image.fromarray(pixels)
    w, h = img.size
    k = side / min(w, h)
    size = (max(side, round(w * k)), max(side, round(h * k)))
    return np.asarray(img.resize(size, Image.Resampling.BILINEAR), dtype=np.uint8)


def resize_longest(pixels: np.ndarray, side: int) -> np.ndarray:
    """Scale (aspect kept) so the longest side is `side`."""
    img = Image.fromarray(pixels)
    return np.asarray(img.resize(_scaled(img.size, side, upscale=True), Image.Resampling.LANCZOS))
