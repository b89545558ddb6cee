"""Super-resolution metrics as the literature computes them (SRCNN, LapSRN, EDSR tables).

PSNR and SSIM on the luminance channel: Y of YCbCr per ITU-R BT.601 in the 16-235 range
(MATLAB's `rgb2ycbcr`), a greyscale image used as it is, with `shave` pixels (the upscaling
factor) cut from every border first. SSIM is Wang et al. (2004): 11x11 Gaussian window, sigma
1.5, K1 = 0.01, K2 = 0.03, L = 255, over the 'valid' window positions, averaged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# BT.601 luma for 0-255 RGB -> 16-235 Y (MATLAB rgb2ycbcr: 65.481, 128.553, 24.966 per unit RGB).
_Y_WEIGHTS = np.array([65.481, 128.553, 24.966]) / 255.0
SSIM_SIGMA = 1.5
SSIM_SIZE = 11


def luminance(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB 0-255 -> (H, W) float64 Y in 16-235; (H, W) greyscale returned as float64."""
    x = img.astype(np.float64)
    if x.ndim == 2:
        return x
    return 16.0 + x[..., :3] @ _Y_WEIGHTS


def shave(img: np.ndarray, border: int) -> np.ndarray:
    return img[border:-border, border:-border] if border > 0 else img


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB of two same-shape arrays (inf when equal): float Y
    channels here, uint8 images in the tests and benchmarks (anything np.asarray takes)."""
    mse = float(np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


def _gaussian_window() -> np.ndarray:
    r = SSIM_SIZE // 2
    t = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-(t**2) / (2 * SSIM_SIGMA**2))
    return g / g.sum()


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of (H, W) with the 1-D window g along both axes."""
    n = len(g)
    rows = sum(g[i] * x[i : x.shape[0] - n + 1 + i] for i in range(n))
    return sum(g[j] * rows[:, j : x.shape[1] - n + 1 + j] for j in range(n))


def ssim(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """Mean SSIM of two (H, W) float arrays (Wang et al. 2004's ssim.m defaults)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    if min(a.shape) < SSIM_SIZE:
        raise ValueError(f"SSIM needs images of at least {SSIM_SIZE}x{SSIM_SIZE} (got {a.shape})")
    g = _gaussian_window()
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    mu_a, mu_b = _filter_valid(a, g), _filter_valid(b, g)
    var_a = _filter_valid(a * a, g) - mu_a**2
    var_b = _filter_valid(b * b, g) - mu_b**2
    cov = _filter_valid(a * b, g) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())


@dataclass(frozen=True)
class Score:
    psnr: float
    ssim: float


def score(output: np.ndarray, truth: np.ndarray, factor: int) -> Score:
    """PSNR and SSIM of an upscaled (H, W[, 3]) uint8 image against its ground truth, on Y
    with `factor` pixels shaved from each border."""
    if output.shape != truth.shape:
        raise ValueError(f"output {output.shape} and ground truth {truth.shape} differ in shape")
    y_out, y_true = shave(luminance(output), factor), shave(luminance(truth), factor)
    return Score(psnr(y_out, y_true), ssim(y_out, y_true))


def load_truth(path: str) -> np.ndarray:
    """A test image as stored: (H, W, 3) RGB, or (H, W) for a greyscale one (Set14's bridge),
    which is then scored on its own values."""
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("L" if img.mode in ("L", "I;16") else "RGB"))


def upscale_grey(upscale: Callable[[np.ndarray], np.ndarray], low: np.ndarray) -> np.ndarray:
    """Run a colour upscaler on a (h, w) or (h, w, 3) image; a grey image goes in as grey RGB
    and comes out as the mean of the three output channels."""
    if low.ndim == 3:
        return upscale(low)
    out = upscale(np.repeat(low[..., None], 3, axis=2)).astype(np.float64)
    return np.round(out.mean(axis=2)).astype(np.uint8)


def evaluate_folder(
    upscale: Callable[[np.ndarray], np.ndarray] | None, folder: str, factor: int
) -> list[tuple[str, Score]]:
    """(image stem, Score) for every PNG in `folder`: the ground truth cropped to a multiple of
    `factor`, its input MATLAB-bicubic downsampled, upscaled by `upscale` ((h, w, 3) uint8 ->
    (f*h, f*w, 3) uint8; None: MATLAB bicubic, the literature's baseline)."""
    from pathlib import Path

    from stylekit.infer.degrade import imresize, modcrop

    results = []
    for path in sorted(Path(folder).glob("*.png")):
        truth = modcrop(load_truth(str(path)), factor)
        low = imresize(truth, 1 / factor)
        out = imresize(low, factor) if upscale is None else upscale_grey(upscale, low)
        results.append((path.stem, score(out, truth, factor)))
    return results


def mean_score(results: list[tuple[str, Score]]) -> Score:
    return Score(float(np.mean([s.psnr for _, s in results])), float(np.mean([s.ssim for _, s in results])))
