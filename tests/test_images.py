"""The training crop is the reference's, pixel for pixel: torchvision's Resize(size) +
CenterCrop(size) on a PIL image (what pytorch/examples' fast_neural_style trains on)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from torchvision import transforms

from stylekit.files import images


@pytest.mark.parametrize(
    ("width", "height", "size"),
    [(481, 321, 128), (321, 481, 128), (640, 480, 256), (1000, 333, 96), (97, 101, 64), (50, 40, 64)],
)
def test_resize_crop_is_torchvisions_resize_and_center_crop(width: int, height: int, size: int) -> None:
    rng = np.random.default_rng(width * height)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    reference = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size)])
    want = np.asarray(reference(Image.fromarray(pixels)))
    got = images.resize_crop(pixels, size)
    assert got.shape == (size, size, 3) and got.dtype == np.uint8
    assert np.array_equal(got, want)
