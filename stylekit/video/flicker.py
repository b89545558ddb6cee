"""The flicker figure: warping error between consecutive stylized frames.

For each pair of consecutive frames, the previous *output* frame is warped into the current one
by the optical flow of the *input* frames (what moved where in the scene), and compared with the
current output: mean absolute difference per channel, 0-255 units, over the pixels where the
flow is reliable (forward-backward consistent, see flow.py). Frame-by-frame stylization that
shimmers scores high; a video whose style moves with the scene scores near the input's own
figure (what flow and resampling leave unexplained). This is the short-term temporal error of
Ruder et al. (2016) and of later video style transfer papers, with DIS flow instead of
DeepFlow/EpicFlow.

The figure uses DIS's "medium" preset, the stabiliser its "fast" one: the stabiliser is not
scored with the very flow it followed.
"""

from __future__ import annotations

import numpy as np

from stylekit.video.flow import FlowEstimator, warp

RELIABLE = 0.5  # a pixel counts where its reliability is at least this


class FlickerMeter:
    """Feed (input, output) frame pairs in order; `value` is the mean warping error per pair."""

    def __init__(self, estimator: FlowEstimator | None = None):
        self.estimator = estimator or FlowEstimator("medium")
        self._previous: tuple[np.ndarray, np.ndarray] | None = None
        self.errors: list[float] = []  # one per consecutive pair, 0-255 units
        self.coverage: list[float] = []  # fraction of pixels counted, per pair

    def update(self, photo: np.ndarray, output: np.ndarray) -> None:
        """(H, W, 3) uint8 input frame and its (H, W, 3) uint8 output frame, in order."""
        if self._previous is not None:
            previous_photo, previous_output = self._previous
            flow = self.estimator.backward(previous_photo, photo)
            counted = flow.reliable >= RELIABLE
            warped = warp(previous_output, flow.field)
            if counted.any():
                diff = np.abs(output.astype(np.float32) - warped.astype(np.float32))
                self.errors.append(float(diff[counted].mean()))
                self.coverage.append(float(counted.mean()))
        self._previous = (photo, output)

    @property
    def value(self) -> float:
        """Mean warping error over the pairs measured (NaN before two frames)."""
        return float(np.mean(self.errors)) if self.errors else float("nan")

    @property
    def mean_coverage(self) -> float:
        return float(np.mean(self.coverage)) if self.coverage else float("nan")


def warping_error(photos: list[np.ndarray], outputs: list[np.ndarray]) -> float:
    """The flicker figure of a short sequence held in memory (tests, benchmarks)."""
    meter = FlickerMeter()
    for photo, output in zip(photos, outputs, strict=True):
        meter.update(photo, output)
    return meter.value
