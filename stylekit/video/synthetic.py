"""Clips made from pictures, for tests and benchmarks: a camera panning and zooming over a photo,
a disc crossing it, and a tone on an audio track, written with PyAV.

A known motion makes the flicker figure and the stabiliser checkable without shipping any video
file: every frame is a crop of the same photo, so frame-to-frame changes are motion only."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from fractions import Fraction

import numpy as np
from PIL import Image, ImageDraw

from stylekit.video import deps


def moving_scene(
    photo: np.ndarray, width: int, height: int, frames: int, *, pan: float = 0.25, zoom: float = 1.15
) -> Iterator[np.ndarray]:
    """(H, W, 3) uint8 photo -> `frames` (height, width, 3) uint8 frames: a window sliding
    `pan` of the photo's width to the right while zooming in by `zoom` overall, plus a red disc
    (a moving object, a sixth of the frame's height across) crossing the frame left to right
    on its own path."""
    src = Image.fromarray(photo)
    pw, ph = src.size
    aspect = width / height
    for i in range(frames):
        t = i / max(1, frames - 1)
        # Window: as tall as the photo allows at the start, shrinking by `zoom` over the clip.
        win_h = min(ph, pw * (1 - pan) / aspect) / (1 + (zoom - 1) * t)
        win_w = win_h * aspect
        left = (pw - win_w) * (0.5 - pan / 2 + pan * t)
        top = (ph - win_h) / 2
        frame = src.resize(
            (width, height), Image.Resampling.BILINEAR, box=(left, top, left + win_w, top + win_h)
        )
        draw = ImageDraw.Draw(frame)
        cx, cy, r = disc(i, frames, width, height)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(220, 30, 30), outline=(255, 255, 255))
        yield np.asarray(frame)


def disc(i: int, frames: int, width: int, height: int) -> tuple[float, float, float]:
    """(centre x, centre y, radius) in pixels of `moving_scene`'s disc in frame i."""
    t = i / max(1, frames - 1)
    return width * (0.1 + 0.8 * t), height * (0.5 + 0.2 * math.sin(2 * math.pi * t)), height / 12


def disc_mask(i: int, frames: int, width: int, height: int) -> np.ndarray:
    """(height, width) bool: the pixels `moving_scene`'s disc covers in frame i."""
    cx, cy, r = disc(i, frames, width, height)
    ys, xs = np.mgrid[0:height, 0:width]
    return (xs + 0.5 - cx) ** 2 + (ys + 0.5 - cy) ** 2 <= r * r


def write_clip(
    path: str,
    frames: Iterable[np.ndarray],
    fps: int = 24,
    *,
    audio: bool = True,
    sample_rate: int = 16000,
    rotation: int = 0,
    codec: str = "libx264",
) -> None:
    """Write (H, W, 3) uint8 frames at `fps` to `path` (container from its extension), with a
    440 Hz AAC tone as long as the video when `audio`, and a display matrix rotating the
    picture `rotation` degrees counter-clockwise when non-zero."""
    av = deps.av()
    with av.open(path, "w") as out:
        video = None
        sound = out.add_stream("aac", rate=sample_rate, layout="mono") if audio else None
        count = 0
        for count, pixels in enumerate(frames, start=1):
            if video is None:
                video = out.add_stream(codec, rate=fps)
                video.width, video.height = pixels.shape[1], pixels.shape[0]
                video.pix_fmt = "yuv420p"
                if rotation:
                    video.set_display_rotation(rotation)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
            frame.pts = count - 1
            frame.time_base = Fraction(1, fps)
            out.mux(video.encode(frame))
        if video is None:
            raise ValueError("write_clip needs at least one frame")
        out.mux(video.encode(None))
        if sound is not None:
            _write_tone(av, out, sound, count / fps, sample_rate)


def _write_tone(av: object, out: object, stream: object, seconds: float, rate: int) -> None:
    """A 440 Hz tone of `seconds`, in chunks of 1024 samples (AAC's frame size)."""
    total = round(seconds * rate)
    for start in range(0, total, 1024):
        n = min(1024, total - start)
        t = (np.arange(start, start + n) / rate).astype(np.float32)
        samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")  # type: ignore[attr-defined]
        frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
        out.mux(stream.encode(frame))  # type: ignore[attr-defined]
    out.mux(stream.encode(None))  # type: ignore[attr-defined]
