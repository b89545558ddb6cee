"""How a stylized picture compares with its photo and its painting, in three numbers.

These are the figures the shipped models are held to beside the paper's own 2016 models
(`jobs/ship_models.py --measure`, stylekit/train/ship.py):

- grain: mean |Laplacian| of the luminance (0-255), 4-neighbour kernel, interior pixels. Fine
  hatching and grid texture raise it; large smooth strokes do not (a photo has ~10-15).
- content: relu2_2 distance to the photo under the paper's loss network (Caffe VGG-16),
  RMS(phi(out) - phi(photo)) / RMS(phi(photo)). Lower keeps more of the photo's structure.
- style: Gram distance to the painting at relu1_2, relu2_2, relu3_3, relu4_3, relative to the
  photo's own: sum_j |G_j(out) - G_j(paint)|^2 / sum_j |G_j(photo) - G_j(paint)|^2. 0 is the
  painting's statistics, 1 the untouched photo's. Lower carries more of the painting.

The painting is taken at `PAINTING_SIDE` px on its longer side for every model: one yardstick.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from stylekit.nn.loss import CONTENT_TAP, gram_matrix
from stylekit.nn.vgg import VGGFeatures, load_vgg

PAINTING_SIDE = 512
# BT.601 luma weights.
_LUMA = np.array([0.299, 0.587, 0.114])


@dataclass(frozen=True)
class Figures:
    """One stylized picture's three measures (see the module docstring)."""

    grain: float
    content: float
    style: float

    def ratios(self, other: Figures) -> Figures:
        """Each figure divided by `other`'s: "x" times the other picture's."""
        return Figures(self.grain / other.grain, self.content / other.content, self.style / other.style)

    def as_dict(self) -> dict[str, float]:
        return {"grain": self.grain, "content": self.content, "style": self.style}


def grain(rgb: np.ndarray) -> float:
    """Mean |4-neighbour Laplacian| of the luminance of an (H, W, 3) RGB image, interior pixels."""
    y = rgb.astype(np.float64) @ _LUMA
    lap = 4 * y[1:-1, 1:-1] - y[:-2, 1:-1] - y[2:, 1:-1] - y[1:-1, :-2] - y[1:-1, 2:]
    return float(np.abs(lap).mean())


def fit_longest(rgb: np.ndarray, longest: int) -> np.ndarray:
    """An (H, W, 3) uint8 image resized (Lanczos) so its longer side is `longest`."""
    h, w = rgb.shape[:2]
    scale = longest / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size == (w, h):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS))


class Yardstick:
    """The loss network's view of one photo and one painting, to measure stylizations of
    that photo with. (H, W, 3) uint8 RGB arrays in; the painting is resized to
    `PAINTING_SIDE` on its longer side."""

    def __init__(self, photo: np.ndarray, painting: np.ndarray, vgg: VGGFeatures | None = None):
        self.vgg = vgg if vgg is not None else load_vgg("caffe")
        self.photo = self._features(photo)
        self.paint_grams = [gram_matrix(f) for f in self._features(fit_longest(painting, PAINTING_SIDE))]
        self.photo_style = self._gram_distance(self.photo)

    @torch.no_grad()
    def _features(self, rgb: np.ndarray) -> list[torch.Tensor]:
        x = torch.from_numpy(np.array(rgb)).permute(2, 0, 1)[None].float()  # (1, 3, H, W), 0-255
        return self.vgg(x)

    def _gram_distance(self, feats: list[torch.Tensor]) -> float:
        return sum(
            float(F.mse_loss(gram_matrix(f), g, reduction="sum"))
            for f, g in zip(feats, self.paint_grams, strict=True)
        )

    def measure(self, rgb: np.ndarray) -> Figures:
        """The figures of a stylization of the photo, (H, W, 3) uint8 at the photo's size."""
        feats = self._features(rgb)
        out, photo = feats[CONTENT_TAP], self.photo[CONTENT_TAP]
        content = float((out - photo).pow(2).mean().sqrt() / photo.pow(2).mean().sqrt())
        return Figures(grain(rgb), content, self._gram_distance(feats) / self.photo_style)
