"""The evaluation protocol (stylekit/infer/srmetrics.py) and the degradation
(stylekit/infer/degrade.py) against naive references and the literature's bicubic figures."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from conftest import SHARED
from stylekit.infer import srmetrics
from stylekit.infer.degrade import cubic, degrade, gaussian_blur, gaussian_kernel, imresize, modcrop

SR_DATA = SHARED / "sr"


def naive_imresize(img: np.ndarray, scale: float) -> np.ndarray:
    """MATLAB's imresize written out pixel by pixel in 2-D (slow; small images only)."""

    def taps(n_in: int, n_out: int) -> list[list[tuple[int, float]]]:
        width = 4 / scale if scale < 1 else 4
        out = []
        for x in range(1, n_out + 1):
            u = x / scale + 0.5 * (1 - 1 / scale)
            pairs = []
            for j in range(math.floor(u - width / 2), math.floor(u - width / 2) + math.ceil(width) + 2):
                d = u - j
                w = scale * cubic(np.array(d * scale)) if scale < 1 else cubic(np.array(d))
                k = j
                while k < 1 or k > n_in:  # symmetric mirror, edge repeated
                    k = 1 - k if k < 1 else 2 * n_in + 1 - k
                pairs.append((k - 1, float(w)))
            total = sum(w for _, w in pairs)
            out.append([(k, w / total) for k, w in pairs])
        return out

    h, w = img.shape[:2]
    oh, ow = math.ceil(h * scale), math.ceil(w * scale)
    rows, cols = taps(h, oh), taps(w, ow)
    x = img.astype(np.float64)
    out = np.zeros((oh, ow, *img.shape[2:]))
    for i in range(oh):
        for j in range(ow):
            out[i, j] = sum(wr * wc * x[r, c] for r, wr in rows[i] for c, wc in cols[j])
    return out


def naive_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """A 2-D Gaussian (outer product of the 1-D kernel) with symmetric borders, pixel by pixel."""
    k = gaussian_kernel(sigma)
    r = len(k) // 2
    k2 = np.outer(k, k)
    h, w = img.shape[:2]
    padded = np.pad(img.astype(np.float64), ((r, r), (r, r)) + ((0, 0),) * (img.ndim - 2), mode="symmetric")
    out = np.zeros(img.shape)
    for i in range(h):
        for j in range(w):
            window = padded[i : i + 2 * r + 1, j : j + 2 * r + 1]
            out[i, j] = np.tensordot(k2, window, axes=([0, 1], [0, 1]))
    return out


@pytest.mark.parametrize("scale", [1 / 4, 1 / 8, 4.0, 0.5])
def test_imresize_matches_the_naive_reference(scale: float) -> None:
    img = np.random.default_rng(0).uniform(0, 255, (16, 24, 3))
    if scale > 1:
        img = img[:5, :6]
    np.testing.assert_allclose(imresize(img, scale), naive_imresize(img, scale), atol=1e-9)


def test_imresize_keeps_flat_images_and_rounds_uint8() -> None:
    flat = np.full((20, 12, 3), 77, np.uint8)
    assert (imresize(flat, 0.25) == 77).all() and imresize(flat, 0.25).shape == (5, 3, 3)
    assert imresize(flat, 4).dtype == np.uint8 and (imresize(flat, 4) == 77).all()


def test_degradation_is_blur_then_bicubic_against_the_naive_reference() -> None:
    hr = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    expected = naive_imresize(naive_blur(hr, 1.0), 1 / 4)
    got = degrade(hr, 4)
    assert got.shape == (4, 4, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, np.clip(np.round(expected), 0, 255).astype(np.uint8))
    np.testing.assert_allclose(gaussian_blur(hr, 1.0), naive_blur(hr, 1.0), atol=1e-9)
    assert modcrop(np.zeros((10, 13)), 4).shape == (8, 12)


def test_psnr_and_luminance_known_values() -> None:
    a = np.zeros((8, 8))
    assert srmetrics.psnr(a, a + 1) == pytest.approx(10 * math.log10(255**2), abs=1e-9)  # 48.13 dB
    assert srmetrics.psnr(a, a + 255) == pytest.approx(0.0)
    assert srmetrics.psnr(a, a) == math.inf
    white = np.full((2, 2, 3), 255, np.uint8)
    assert srmetrics.luminance(white) == pytest.approx(np.full((2, 2), 235.0))  # BT.601 16-235
    assert srmetrics.luminance(np.zeros((2, 2, 3), np.uint8)) == pytest.approx(np.full((2, 2), 16.0))


def test_ssim_known_values() -> None:
    rng = np.random.default_rng(2)
    img = rng.uniform(0, 255, (32, 32))
    assert srmetrics.ssim(img, img) == pytest.approx(1.0)
    # Two flat images: every window gives (2ab + C1) / (a^2 + b^2 + C1).
    c1 = (0.01 * 255) ** 2
    a, b = 100.0, 120.0
    assert srmetrics.ssim(np.full((20, 20), a), np.full((20, 20), b)) == pytest.approx(
        (2 * a * b + c1) / (a * a + b * b + c1)
    )
    # An image against its negative is anti-correlated; more noise, lower SSIM.
    assert srmetrics.ssim(img, 255 - img) < 0
    noise = rng.normal(0, 1, img.shape)
    assert 1 > srmetrics.ssim(img, img + 20 * noise) > srmetrics.ssim(img, img + 60 * noise) > 0


@pytest.mark.skipif(not (SR_DATA / "Set5").is_dir(), reason="shared/data/sr not present")
@pytest.mark.parametrize(("dataset", "expected"), [("Set5", 28.42), ("Set14", 26.00)])
def test_bicubic_x4_reproduces_the_literature(dataset: str, expected: float) -> None:
    psnrs = []
    for path in sorted((SR_DATA / dataset).glob("*.png")):
        img = Image.open(path)
        truth = modcrop(np.asarray(img.convert("L" if img.mode == "L" else "RGB")), 4)
        out = imresize(imresize(truth, 1 / 4), 4)
        psnrs.append(srmetrics.score(out, truth, 4).psnr)
    assert float(np.mean(psnrs)) == pytest.approx(expected, abs=0.1)
