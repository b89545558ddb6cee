"""Image resizing as MATLAB's `imresize(..., 'bicubic')` does it, and the paper's degradation.

The super-resolution literature's tables (Set5 x4 bicubic 28.42 dB, Set14 26.00 dB, ...) are
computed with MATLAB: the low-resolution input is `imresize(HR, 1/f, 'bicubic')`, which is
*antialiased* (downscaling stretches the cubic kernel by f, so it also low-pass filters) and uses
Keys' cubic with a = -0.5. PIL's and torch's bicubic differ (PIL's a = -0.5 but other borders
and rounding; torch's a = -0.75 and not antialiased) and give other numbers, so the evaluation
and the training degradation both use this module.

`degrade` is the paper's training degradation (section 4.1): Gaussian blur, sigma 1.0, then
bicubic downsampling by the factor. Arrays are (H, W) or (H, W, C); uint8 in gives uint8 out
(rounded, as MATLAB does), float in gives float64 out.
"""

from __future__ import annotations

import math

import numpy as np

CUBIC_A = -0.5  # Keys' parameter as in MATLAB's imresize (torch uses -0.75)
CUBIC_SUPPORT = 4.0  # the cubic kernel is non-zero on (-2, 2)
BLUR_SIGMA = 1.0  # the paper's Gaussian blur before downsampling


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's `cubic`)."""
    a = CUBIC_A
    ax = np.abs(x)
    ax2, ax3 = ax**2, ax**3
    near = ((a + 2) * ax3 - (a + 3) * ax2 + 1) * (ax <= 1)
    far = (a * ax3 - 5 * a * ax2 + 8 * a * ax - 4 * a) * ((ax > 1) & (ax <= 2))
    return near + far


def resize_weights(in_len: int, out_len: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB's `contributions`: for each output index, the input indices (out_len, P) and their
    weights (out_len, P), P taps. Borders mirror symmetrically (edge pixel repeated)."""
    antialias = scale < 1
    width = CUBIC_SUPPORT / scale if antialias else CUBIC_SUPPORT
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)  # output pixel centre in input coordinates, 1-based
    left = np.floor(u - width / 2)
    taps = math.ceil(width) + 2
    indices = left[:, None] + np.arange(taps)[None, :]  # 1-based
    distance = u[:, None] - indices
    weights = scale * cubic(distance * scale) if antialias else cubic(distance)
    weights = weights / weights.sum(axis=1, keepdims=True)
    # Mirror out-of-range indices: [1..n, n..1] repeated (MATLAB's symmetric padding).
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len)[::-1]])
    indices = mirror[np.mod(indices.astype(np.int64) - 1, 2 * in_len)]
    keep = np.any(weights != 0, axis=0)  # drop taps that are zero for every output
    return indices[:, keep], weights[:, keep]


def _resize_axis(img: np.ndarray, axis: int, out_len: int, scale: float) -> np.ndarray:
    indices, weights = resize_weights(img.shape[axis], out_len, scale)
    moved = np.moveaxis(img, axis, 0)  # (L, ...)
    gathered = moved[indices]  # (out_len, P, ...)
    w = weights.reshape(weights.shape + (1,) * (moved.ndim - 1))
    return np.moveaxis((gathered * w).sum(axis=1), 0, axis)


def imresize(img: np.ndarray, scale: float) -> np.ndarray:
    """Resize (H, W[, C]) by `scale` as MATLAB's `imresize(img, scale, 'bicubic')`: output side
    ceil(side * scale), the dimension scaled most first, uint8 results rounded and clipped."""
    if scale <= 0:
        raise ValueError(f"scale must be > 0 (got {scale})")
    x = img.astype(np.float64)
    out_shape = [math.ceil(s * scale) for s in img.shape[:2]]
    # MATLAB resizes along the dimension with the smallest scale first; equal scales: rows.
    for axis in (0, 1):
        x = _resize_axis(x, axis, out_shape[axis], scale)
    if img.dtype == np.uint8:
        return np.clip(np.round(x), 0, 255).astype(np.uint8)
    return x


def gaussian_kernel(sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian, radius ceil(3 sigma)."""
    radius = max(1, math.ceil(3 * sigma))
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-(t**2) / (2 * sigma**2))
    return k / k.sum()


def gaussian_blur(img: np.ndarray, sigma: float = BLUR_SIGMA) -> np.ndarray:
    """Separable Gaussian blur of (H, W[, C]) with symmetric (edge-repeating) borders; float64."""
    k = gaussian_kernel(sigma)
    r = len(k) // 2
    x = img.astype(np.float64)
    for axis in (0, 1):
        pad = [(0, 0)] * x.ndim
        pad[axis] = (r, r)
        padded = np.pad(x, pad, mode="symmetric")
        n = x.shape[axis]
        x = sum(k[i] * np.take(padded, np.arange(i, i + n), axis=axis) for i in range(len(k)))
    return x


def modcrop(img: np.ndarray, factor: int) -> np.ndarray:
    """Crop bottom/right so both sides are multiples of `factor` (the evaluation's ground truth)."""
    h, w = img.shape[:2]
    return img[: h - h % factor, : w - w % factor]


def degrade(hr: np.ndarray, factor: int, sigma: float = BLUR_SIGMA) -> np.ndarray:
    """The paper's low-resolution input: Gaussian blur (sigma) then bicubic downsampling by
    `factor`. (H, W, 3) uint8 with sides multiples of `factor` -> (H/f, W/f, 3) uint8."""
    blurred = gaussian_blur(hr, sigma) if sigma > 0 else hr.astype(np.float64)
    small = imresize(blurred, 1 / factor)
    return np.clip(np.round(small), 0, 255).astype(np.uint8)
