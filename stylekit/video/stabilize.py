"""The stabiliser: each stylized frame blended with the previous output carried along the flow.

Stylizing frames one by one makes the strokes shimmer: a small change in the photo moves them.
Ruder et al. (2016) keep a video consistent by asking each output to match the previous output
warped by the optical flow, wherever the flow is reliable. A feed-forward network cannot
optimise per frame, so this applies that idea as a blend after the network:

    out_t = s_t + w * (warp(out_{t-1}) - s_t),   w = strength * reliable * photometric

- s_t: the stylized frame t; warp(out_{t-1}): the previous output pulled along the input frames'
  backward flow (flow.py), so strokes move with the scene instead of being repainted.
- reliable: the forward-backward consistency mask: occluded and disoccluded pixels, motion
  boundaries and pixels that come from outside the frame take the fresh stylized pixels, which is
  what keeps a moving object from leaving a ghost trail.
- photometric: where the previous input frame, warped the same way, does not match the current
  input (the flow is wrong, or the light changed), the blend fades out too.

The price is texture: averaging each frame's strokes with the carried ones softens them (at
0.8 about two thirds of the frame-by-frame output's fine detail remains, by mean gradient).

Strength 0 is frame-by-frame stylization; 1 follows the flow fully wherever it is trusted (the
style then changes only where something new appears). Each output depends on the previous one,
so frames are stabilised in order, after the batched network.
"""

from __future__ import annotations

import numpy as np

from stylekit.video.flow import FlowEstimator, warp

# Input mismatch (mean absolute difference per channel, 0-255) where the blend starts to fade,
# and where it is gone.
PHOTOMETRIC_START, PHOTOMETRIC_END = 8.0, 24.0


class Stabilizer:
    """Call with each (input frame, stylized frame) pair in order; returns the output frame."""

    def __init__(self, strength: float, estimator: FlowEstimator | None = None):
        if not 0 <= strength <= 1:
            raise ValueError(f"stabiliser strength must be between 0 and 1 (got {strength})")
        self.strength = strength
        self.estimator = estimator or FlowEstimator("fast")
        self._previous: tuple[np.ndarray, np.ndarray] | None = None

    def __call__(self, photo: np.ndarray, stylized: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 input frame and its (H, W, 3) uint8 stylized frame -> output frame."""
        if self.strength == 0:
            return stylized
        out = stylized
        if self._previous is not None and self._previous[0].shape == photo.shape:
            previous_photo, previous_out = self._previous
            flow = self.estimator.backward(previous_photo, photo)
            mismatch = np.abs(warp(previous_photo, flow.field).astype(np.float32) - photo).mean(-1)
            photometric = np.clip(
                (PHOTOMETRIC_END - mismatch) / (PHOTOMETRIC_END - PHOTOMETRIC_START), 0.0, 1.0
            )
            weight = (self.strength * flow.reliable * photometric)[..., None]  # (H, W, 1)
            # Bicubic: the carried output is resampled once per frame, again and again, and
            # bilinear blurs it away (measured: 57% of frame-by-frame sharpness kept at 0.8,
            # bicubic 66%, the same flicker; benchmarks/RESULTS.md).
            carried = warp(previous_out, flow.field, cubic=True).astype(np.float32)
            fresh = stylized.astype(np.float32)
            out = np.clip(np.rint(fresh + weight * (carried - fresh)), 0, 255).astype(np.uint8)
        self._previous = (photo, out)
        return out
