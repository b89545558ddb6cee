"""Optical flow between input frames (OpenCV's DIS), where it can be trusted, and warping by it.

Both the stabiliser and the flicker figure ask the same question of two consecutive input
frames: for each pixel of the current frame, where was it in the previous one, and is that
answer reliable? `FlowEstimator.backward` answers with a flow field and a reliability mask:

- flow: DIS flow (Kroeger et al. 2016) from the current frame to the previous one, computed on
  grey frames downscaled so the longest side is at most `max_side` (flow is smooth; this keeps
  1080p cheap), then scaled back to full size.
- reliable: the forward-backward consistency check of Sundaram et al. (2010), as Ruder et al.
  (2016) use it for video style transfer: following the backward flow and then the forward flow
  must come back to the start (else the pixel was occluded or the flow is wrong), pixels on
  motion boundaries are dropped, and so are pixels whose source lies outside the previous frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stylekit.video import deps

PRESETS = ("ultrafast", "fast", "medium")
# Sundaram et al.'s thresholds, in pixels of the flow's own resolution.
CONSISTENCY_REL, CONSISTENCY_ABS = 0.01, 0.5
BOUNDARY_REL, BOUNDARY_ABS = 0.01, 0.002


@dataclass(frozen=True)
class Flow:
    """Where each pixel of an (H, W) frame came from in the previous frame, and how far to trust it."""

    field: np.ndarray  # (H, W, 2) float32: (dx, dy) from the pixel to its source in the previous frame
    reliable: np.ndarray  # (H, W) float32 in [0, 1]: 1 where the consistency check passes


class FlowEstimator:
    """DIS optical flow at a bounded resolution, with the consistency check (one per thread:
    the OpenCV object keeps state)."""

    def __init__(self, preset: str = "fast", max_side: int = 640):
        if preset not in PRESETS:
            raise ValueError(f"flow preset must be one of {', '.join(PRESETS)} (got {preset!r})")
        cv2 = deps.cv2()
        self._cv2 = cv2
        code = {
            "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
            "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
            "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
        }[preset]
        self._dis = cv2.DISOpticalFlow_create(code)
        self.max_side = max_side

    def grey(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (h, w) uint8 luma, the longest side at most `max_side`."""
        cv2 = self._cv2
        g = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
        h, w = g.shape
        scale = min(1.0, self.max_side / max(h, w))
        if scale < 1:
            g = cv2.resize(
                g, (max(8, round(w * scale)), max(8, round(h * scale))), interpolation=cv2.INTER_AREA
            )
        return g

    def backward(self, previous: np.ndarray, current: np.ndarray) -> Flow:
        """Flow from `current` to `previous` ((H, W, 3) uint8 frames of one size) at full size."""
        a, b = self.grey(previous), self.grey(current)
        bw = self._dis.calc(b, a, None)  # current pixel x came from previous x + bw(x)
        fw = self._dis.calc(a, b, None)  # previous pixel y went to current y + fw(y)
        reliable = consistent(bw, fw)
        return _full_size(bw, reliable, current.shape[:2])


def consistent(bw: np.ndarray, fw: np.ndarray) -> np.ndarray:
    """(h, w, 2) backward and forward flows -> (h, w) float32 mask: 1 where going back along
    `bw` and forward along `fw` returns to the start, away from motion boundaries, with the
    source inside the frame."""
    h, w = bw.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    sx, sy = xs + bw[..., 0], ys + bw[..., 1]
    inside = (sx >= 0) & (sx <= w - 1) & (sy >= 0) & (sy <= h - 1)
    fw_at = _sample(fw, sx, sy)
    round_trip = np.square(fw_at + bw).sum(-1)
    magnitude = np.square(fw_at).sum(-1) + np.square(bw).sum(-1)
    ok = round_trip <= CONSISTENCY_REL * magnitude + CONSISTENCY_ABS
    gy_u, gx_u = np.gradient(bw[..., 0])
    gy_v, gx_v = np.gradient(bw[..., 1])
    gradient = gx_u**2 + gy_u**2 + gx_v**2 + gy_v**2
    ok &= gradient <= BOUNDARY_REL * np.square(bw).sum(-1) + BOUNDARY_ABS
    return (ok & inside).astype(np.float32)


def _sample(field: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Bilinear samples of an (h, w, C) array at float coordinates (edges replicated)."""
    cv2 = deps.cv2()
    return cv2.remap(field, xs, ys, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _full_size(bw: np.ndarray, reliable: np.ndarray, shape: tuple[int, ...]) -> Flow:
    """Scale a low-resolution flow and mask up to (H, W); the mask is eroded one low-res pixel
    first, so the blend never reaches across an occlusion edge after upsampling."""
    cv2 = deps.cv2()
    h, w = shape[0], shape[1]
    reliable = cv2.erode(reliable, np.ones((3, 3), np.uint8))
    if bw.shape[:2] != (h, w):
        sx, sy = w / bw.shape[1], h / bw.shape[0]
        bw = cv2.resize(bw, (w, h), interpolation=cv2.INTER_LINEAR)
        bw[..., 0] *= sx
        bw[..., 1] *= sy
        reliable = cv2.resize(reliable, (w, h), interpolation=cv2.INTER_LINEAR)
    return Flow(np.ascontiguousarray(bw, dtype=np.float32), np.clip(reliable, 0, 1))


def warp(image: np.ndarray, flow: np.ndarray, *, cubic: bool = False) -> np.ndarray:
    """Pull an (H, W, C) image of the previous frame along an (H, W, 2) backward flow into the
    current frame: out(x) = image(x + flow(x)), bilinear (bicubic with `cubic`: sharper when an
    image is resampled again and again), same dtype (uint8 saturates)."""
    cv2 = deps.cv2()
    h, w = flow.shape[:2]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    interpolation = cv2.INTER_CUBIC if cubic else cv2.INTER_LINEAR
    return cv2.remap(
        image, xs + flow[..., 0], ys + flow[..., 1], interpolation, borderMode=cv2.BORDER_REPLICATE
    )
