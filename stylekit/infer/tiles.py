"""Tiled inference: the whole-image result in bounded memory, for photos of any size.

Why not independent tiles. Every instance norm of the TransformerNet normalises each channel by
its mean and variance over the *whole* image. Tiles run alone get their own statistics, so
neighbouring tiles disagree in brightness and colour and the seams show. Here the statistics are
the whole image's, computed exactly in streamed passes, so the result equals the untiled one up
to float rounding (tests/test_tiles.py; benchmarks/RESULTS.md has the PSNR).

How. The image is processed in full-width bands of rows. Each band reads the extra rows its
convolutions need above and below (the halo: 4 rows for a 9x9 conv, 1 for a 3x3), mirrored at
the image's edges exactly as the network's own padding mirrors them, so every output row is the
one the whole-image pass computes. The network is cut at its instance norms into stages:

    pass  stage                                            resolution      stored
    1     conv1 -> statistics of in1                       full, 32 ch     no (recomputed)
    2     in1, conv2 -> statistics of in2                  1/2, 64 ch      yes
    3     in2, conv3 -> statistics of in3                  1/4, 128 ch     yes
    4-18  five residual blocks: conv1, conv2, the sum      1/4, 128 ch     yes (conv1: only
                                                                           if in memory)
    19    in3.., deconv1 -> statistics of in4              1/2, 64 ch      yes
    20    in4, deconv2 -> statistics of in5                full, 32 ch     no (recomputed)
    21    in5, deconv3 -> uint8 output rows                full, 3 ch      the output

A stage writes its un-normalised output to a scratch file while accumulating per-channel means
and variances (merged band by band in float64, Chan et al.'s parallel formula); the next stage
reads it back and normalises on the fly. The two full-resolution 32-channel activations, the
largest, are recomputed instead of stored (about 17% more arithmetic), and so is each residual
block's first conv when it would have to go to a scratch file (writing and re-reading 128
channels costs more than a 3x3 conv at quarter resolution on a disk-bound machine). Scratch files are read and
written with pread/pwrite rather than mapped, so they live in the kernel's page cache, which it
reclaims, and not in the process's resident memory; they go to `tile_dir` (default: the system's
temp folder) and are deleted as soon as no later stage needs them.

Band heights are chosen per pass from the memory budget, from an estimate of the bytes each
stage holds per output row (`_Node.cost`).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from stylekit.errors import ConfigError
from stylekit.infer.fastpath import FastConv, FastNorm, FastTransformer, allocator_returns_memory
from stylekit.infer.memory import format_size
from stylekit.nn.model import padded_size

log = logging.getLogger(__name__)

_F32 = 4
# Bytes a stage holds per output element beyond its output itself (padded copies, the conv's
# own buffers): measured peaks sit below this multiple of the plain sum of the activations.
_WORK_FACTOR = 3
# Untiled fast-path peak per pixel of the (padded) image, measured on this code at 1 and 3 MP
# (about 1.05-1.1 KB/pixel above the process's resident memory); with a margin.
UNTILED_BYTES_PER_PIXEL = 1300
# Bands are kept below this however large the budget: larger ones are no faster (the halo is a
# few rows), and NNPACK keeps a workspace as large as the largest call it has seen.
BAND_CAP = 192 << 20


# --- per-channel statistics ----------------------------------------------------------------


class _Stats:
    """Running per-channel mean and variance (biased, as instance norm uses) over bands."""

    def __init__(self, channels: int):
        self.n = 0
        self.mean = torch.zeros(channels, dtype=torch.float64)
        self.m2 = torch.zeros(channels, dtype=torch.float64)

    def add(self, y: torch.Tensor) -> None:
        """y: (1, C, rows, W) band of the stage's output."""
        x = y.float().reshape(y.shape[1], -1)
        k = x.shape[1]
        # Sum and sum of squares: two vectorised reductions, ~20x faster on the CPU than
        # torch.var_mean's Welford pass. float32 within a band, float64 across bands.
        mean = x.sum(1).double().cpu() / k
        m2 = torch.linalg.vector_norm(x, dim=1).double().cpu() ** 2 - k * mean**2
        m2 = m2.clamp_(min=0)
        total = self.n + k
        delta = mean - self.mean
        self.mean += delta * (k / total)
        self.m2 += m2 + delta**2 * (self.n * k / total)
        self.n = total

    def scale_shift(self, norm: FastNorm) -> tuple[torch.Tensor, torch.Tensor]:
        """(C,) scale and shift with norm(x) = x * scale + shift, as F.instance_norm computes it."""
        var = self.m2 / self.n
        scale = norm.weight.double().cpu() / torch.sqrt(var + norm.eps)
        shift = norm.bias.double().cpu() - self.mean * scale
        return scale.float(), shift.float()


# --- row sources: each gives rows [r0, r1) of one activation as (1, C, r1 - r0, W) ------------


class _Node:
    channels: int
    height: int
    width: int

    def rows(self, r0: int, r1: int) -> torch.Tensor:
        raise NotImplementedError

    def cost(self, n: int) -> int:
        """Estimated peak bytes to produce `n` rows."""
        raise NotImplementedError

    def row_bytes(self) -> int:
        return self.channels * self.width * _F32

    def macs(self) -> int:
        """Multiply-adds to compute the whole of this node from stored data (progress, ETA)."""
        return 0


def _mirror(r: int, size: int, mode: str) -> int:
    """Row index `r` (possibly outside [0, size)) mapped as F.pad's `mode` maps it."""
    if mode == "replicate":
        return min(max(r, 0), size - 1)
    if r < 0:
        return -r
    if r >= size:
        return 2 * (size - 1) - r
    return r


def _take_rows(src: _Node, lo: int, hi: int, mode: str) -> torch.Tensor:
    """Rows lo..hi-1 of `src`, rows outside the image mirrored (`mode`) as a padding would."""
    a, b = max(lo, 0), min(hi, src.height)
    x = src.rows(a, b)
    if lo >= 0 and hi <= src.height:
        return x

    def mirrored(rows: range) -> torch.Tensor:  # the few rows outside, gathered one by one
        index = torch.tensor([_mirror(r, src.height, mode) - a for r in rows], device=x.device)
        return x.index_select(2, index)

    parts = [mirrored(range(lo, 0))] if lo < 0 else []
    parts.append(x)
    if hi > src.height:
        parts.append(mirrored(range(src.height, hi)))
    return torch.cat(parts, dim=2)


class _Image(_Node):
    """The uint8 photo as floats, padded bottom/right to the network's size as
    `nn.model.pad_to_multiple` pads it."""

    def __init__(self, image: np.ndarray, device: torch.device):
        self.image, self.device = image, device
        self.h, self.w = image.shape[:2]
        self.channels, self.height, self.width = 3, padded_size(self.h), padded_size(self.w)
        ph, pw = self.height - self.h, self.width - self.w
        self.mode = "reflect" if ph < self.h and pw < self.w else "replicate"

    def rows(self, r0: int, r1: int) -> torch.Tensor:
        index = [_mirror(r, self.h, self.mode) for r in range(r0, r1)]
        # A copy of the rows (decoded photos are often read-only arrays, which torch warns about).
        band = np.array(self.image[r0:r1]) if r1 <= self.h else self.image[index]
        x = torch.from_numpy(band).to(self.device).permute(2, 0, 1)[None].float()
        if self.width != self.w:
            x = F.pad(x, (0, self.width - self.w, 0, 0), mode=self.mode)
        return x

    def cost(self, n: int) -> int:
        return n * self.width * 3 * (1 + 2 * _F32)


class _Conv2d(_Node):
    """One of the network's convolutions (stride 1 or 2, or a sub-pixel x2 upsample-conv)."""

    def __init__(self, src: _Node, conv: FastConv, channels: int):
        self.src, self.conv = src, conv
        self.channels = channels
        self.k, self.p, self.s = 2 * conv.pad + 1, conv.pad, conv.stride
        if conv.subpixel:  # the conv runs at the source's size, then pixel-shuffles to 2x
            self.height, self.width = 2 * src.height, 2 * src.width
        else:
            self.height = (src.height + 2 * self.p - self.k) // self.s + 1
            self.width = (src.width + 2 * self.p - self.k) // self.s + 1

    def rows(self, r0: int, r1: int) -> torch.Tensor:
        p, mode = self.p, self.conv.pad_mode
        if self.conv.subpixel:  # high-res rows r0..r1 come from low-res conv rows l0..l1
            l0, l1 = r0 // 2, (r1 + 1) // 2
            x = _take_rows(self.src, l0 - p, l1 + p, mode)
            y = self.conv.conv_padded(F.pad(x, (p, p, 0, 0), mode=mode))
            return y[:, :, r0 - 2 * l0 : r1 - 2 * l0]
        lo, hi = r0 * self.s - p, (r1 - 1) * self.s + self.k - p
        x = _take_rows(self.src, lo, hi, mode)
        return self.conv.conv_padded(F.pad(x, (p, p, 0, 0), mode=mode))

    def macs(self) -> int:
        at = self.src if self.conv.subpixel else self  # the sub-pixel conv runs at the source's size
        return self.src.macs() + self.conv.weight.numel() * at.height * at.width

    def cost(self, n: int) -> int:
        n_in = (n // 2 + 2 + 2 * self.p) if self.conv.subpixel else n * self.s + self.k
        return self.src.cost(n_in) + _WORK_FACTOR * (n_in * self.src.row_bytes() + n * self.row_bytes())


class _Normed(_Node):
    """Instance norm with the whole image's statistics (and the norm's ReLU, if it has one)."""

    def __init__(self, src: _Node, norm: FastNorm, stats: _Stats):
        self.src, self.relu = src, norm.relu
        self.channels, self.height, self.width = src.channels, src.height, src.width
        scale, shift = stats.scale_shift(norm)
        self.scale, self.shift = scale.view(1, -1, 1, 1), shift.view(1, -1, 1, 1)

    def rows(self, r0: int, r1: int) -> torch.Tensor:
        x = self.src.rows(r0, r1)
        y = torch.addcmul(self.shift.to(x.device), x, self.scale.to(x.device))
        return torch.relu_(y) if self.relu else y

    def cost(self, n: int) -> int:
        return self.src.cost(n) + n * self.row_bytes()

    def macs(self) -> int:
        return self.src.macs()


class _Sum(_Node):
    """The residual blocks' identity shortcut: a + b."""

    def __init__(self, a: _Node, b: _Node):
        self.a, self.b = a, b
        self.channels, self.height, self.width = a.channels, a.height, a.width

    def rows(self, r0: int, r1: int) -> torch.Tensor:
        return self.a.rows(r0, r1).add_(self.b.rows(r0, r1))

    def cost(self, n: int) -> int:
        return self.a.cost(n) + self.b.cost(n) + n * self.row_bytes()

    def macs(self) -> int:
        return self.a.macs() + self.b.macs()


class _Stored(_Node):
    """An activation kept whole, channel-planar (C, H, W) float32, so a band of rows is one
    contiguous slice per channel: in memory when the budget has room, else in a scratch file
    read and written with pread/pwrite."""

    def __init__(
        self, folder: Path | None, name: str, channels: int, height: int, width: int, device: torch.device
    ):
        self.channels, self.height, self.width, self.device = channels, height, width, device
        self.nbytes = channels * height * width * _F32
        self.memory: np.ndarray | None = None
        self.fd = -1
        if folder is None:
            self.memory = np.empty((channels, height, width), dtype=np.float32)
        else:
            self.path = folder / f"{name}.f32"
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            os.ftruncate(self.fd, self.nbytes)

    def _offset(self, c: int, r: int) -> int:
        return ((c * self.height) + r) * self.width * _F32

    def write(self, r0: int, y: torch.Tensor) -> None:
        data = y[0].detach().float().cpu().numpy()  # (C, rows, W)
        if self.memory is not None:
            self.memory[:, r0 : r0 + data.shape[1]] = data
            return
        data = np.ascontiguousarray(data)
        for c in range(self.channels):
            os.pwrite(self.fd, data[c].tobytes(), self._offset(c, r0))

    def rows(self, r0: int, r1: int) -> torch.Tensor:
        if self.memory is not None:
            return torch.from_numpy(self.memory[:, r0:r1])[None].to(self.device)
        out = np.empty((self.channels, r1 - r0, self.width), dtype=np.float32)
        size = (r1 - r0) * self.width * _F32
        for c in range(self.channels):
            got = os.preadv(self.fd, [memoryview(out[c]).cast("B")], self._offset(c, r0))
            if got != size:
                raise OSError(f"short read from the tiling scratch file {self.path} ({got} of {size} bytes)")
        return torch.from_numpy(out)[None].to(self.device)

    def cost(self, n: int) -> int:
        return n * self.row_bytes()

    def close(self) -> None:
        self.memory = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            self.path.unlink(missing_ok=True)


# --- the passes ------------------------------------------------------------------------------


class TiledRun:
    """One image through a FastTransformer in bands, inside `work_budget` bytes of activations."""

    def __init__(
        self,
        net: FastTransformer,
        work_budget: int,
        folder: Path,
        device: torch.device,
        max_rows: int | None = None,
    ):
        self.net, self.budget, self.folder, self.device = net, work_budget, folder, device
        self.max_rows = max_rows  # tests: force small bands
        self._stored: list[_Stored] = []
        self.passes = 0
        self.bands = 0
        self.spilled = 0  # bytes written to scratch files
        self.started = time.perf_counter()
        self.done, self.total = 0, 0  # multiply-adds: progress lines

    @property
    def held(self) -> int:
        """Bytes of the budget held by activations kept in memory."""
        return sum(s.nbytes for s in self._stored if s.memory is not None)

    def band_rows(self, node: _Node) -> int:
        """The most rows a band of `node` may have within the budget (at least 1)."""
        room = self.budget - self.held
        if node.cost(1) > room:
            raise ConfigError(
                f"--max-memory leaves {format_size(room)} for a {node.width}-pixel-wide band; "
                f"at least {format_size(node.cost(1))} is needed: raise --max-memory"
            )
        room = min(room, max(BAND_CAP, node.cost(1)))
        lo, hi = 1, node.height
        while lo < hi:  # the largest n with cost(n) <= room
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if node.cost(mid) <= room else (lo, mid - 1)
        return min(lo, self.max_rows or lo)

    def _sweep(self, node: _Node, each: Callable[[int, torch.Tensor], None]) -> None:
        step = self.band_rows(node)
        self.passes += 1
        for r0 in range(0, node.height, step):
            r1 = min(r0 + step, node.height)
            each(r0, node.rows(r0, r1))
            self.bands += 1
        self.done += node.macs()
        self._progress()

    def _progress(self) -> None:
        elapsed = time.perf_counter() - self.started
        if self.total <= 0 or self.done <= 0:
            return
        left = elapsed * max(0, self.total - self.done) / self.done
        log.info(
            "tiling: pass %d of %d done, %.0f%% of the arithmetic, %.0f s elapsed, about %.0f s left",
            self.passes, PASSES, 100 * min(1.0, self.done / self.total), elapsed, left,
        )  # fmt: skip

    def stats(self, node: _Node) -> _Stats:
        """A pass that only measures `node`'s per-channel statistics."""
        stats = _Stats(node.channels)
        self._sweep(node, lambda r0, y: stats.add(y))
        return stats

    def fits_in_memory(self, node: _Node) -> bool:
        """Whether `node` can be kept in memory and leave a third of the budget (and the
        bands' minimum) for the work."""
        nbytes = node.channels * node.height * node.width * _F32
        return nbytes <= self.budget - self.held - max(self.budget // 3, 4 * node.cost(1))

    def store(self, node: _Node, name: str, with_stats: bool = True) -> tuple[_Stored, _Stats]:
        """A pass that writes `node` to a scratch file, measuring its statistics on the way."""
        folder = None if self.fits_in_memory(node) else self.folder
        nbytes = node.channels * node.height * node.width * _F32
        stored = _Stored(folder, name, node.channels, node.height, node.width, self.device)
        self.spilled += nbytes if folder else 0
        self._stored.append(stored)
        stats = _Stats(node.channels)

        def each(r0: int, y: torch.Tensor) -> None:
            if with_stats:
                stats.add(y)
            stored.write(r0, y)

        self._sweep(node, each)
        return stored, stats

    def release(self, *stored: _Stored) -> None:
        for s in stored:
            s.close()
        self._stored = [s for s in self._stored if s not in stored]

    def close(self) -> None:
        self.release(*self._stored)

    @torch.inference_mode()
    def run(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> the network's (H, W, 3) uint8 output (clamped, then truncated as
        `Stylizer` does)."""
        net, h, w = self.net, *image.shape[:2]
        src = _Image(image, self.device)
        self.total = _network_macs(net, src.height, src.width)
        c1 = _Conv2d(src, net.conv1, 32)
        s1 = self.stats(c1)
        a, s2 = self.store(_Conv2d(_Normed(c1, net.in1, s1), net.conv2, 64), "conv2")
        b, s3 = self.store(_Conv2d(_Normed(a, net.in2, s2), net.conv3, 128), "conv3")
        self.release(a)
        x: _Node = _Normed(b, net.in3, s3)
        keep: list[_Stored] = [b]
        for i, block in enumerate(net.res, start=1):
            first: _Node = _Conv2d(x, block.conv1, 128)
            if self.fits_in_memory(first):
                stored, sc = self.store(first, f"res{i}a")
                keep.append(stored)
                first = stored
            else:  # a 3x3 conv at 1/4 scale costs less to recompute than to write and re-read
                self.total += first.macs()  # computed twice
                sc = self.stats(first)
            d, sd = self.store(_Conv2d(_Normed(first, block.in1, sc), block.conv2, 128), f"res{i}b")
            out, _ = self.store(_Sum(_Normed(d, block.in2, sd), x), f"res{i}", with_stats=False)
            self.release(d, *keep)
            x, keep = out, [out]
        e, s4 = self.store(_Conv2d(x, net.deconv1, 64), "deconv1")
        self.release(*keep)
        f = _Conv2d(_Normed(e, net.in4, s4), net.deconv2, 32)
        s5 = self.stats(f)
        final = _Conv2d(_Normed(f, net.in5, s5), net.deconv3, 3)
        result = np.empty((h, w, 3), dtype=np.uint8)

        def emit(r0: int, y: torch.Tensor) -> None:
            r1 = min(r0 + y.shape[2], h)
            if r0 < r1:
                pixels = torch.clamp(y[0, :, : r1 - r0, :w], 0, 255).to(torch.uint8)
                result[r0:r1] = pixels.permute(1, 2, 0).cpu().numpy()

        self._sweep(final, emit)
        self.release(e)
        return result


PASSES = 21  # see the module's docstring


def _network_macs(net: FastTransformer, height: int, width: int) -> int:
    """Multiply-adds of all the passes for a padded height x width image: the network once,
    plus conv1 and deconv2 computed twice (statistics pass, then the pass that uses them)."""
    quarter, half, full = (height // 4) * (width // 4), (height // 2) * (width // 2), height * width
    n = net.conv1.weight.numel() * full * 2 + net.conv2.weight.numel() * half
    n += net.conv3.weight.numel() * quarter
    n += sum((b.conv1.weight.numel() + b.conv2.weight.numel()) * quarter for b in net.res)
    n += net.deconv1.weight.numel() * quarter + net.deconv2.weight.numel() * half * 2
    return n + net.deconv3.weight.numel() * full


def untiled_peak(height: int, width: int) -> int:
    """Estimated bytes the untiled fast path adds to the process for one image."""
    return UNTILED_BYTES_PER_PIXEL * padded_size(height) * padded_size(width)


def stylize_tiled(
    net: FastTransformer,
    image: np.ndarray,
    work_budget: int,
    *,
    tile_dir: str | None = None,
    device: torch.device | None = None,
    max_rows: int | None = None,
) -> np.ndarray:
    """The network's output for one (H, W, 3) uint8 image, computed in bands whose
    activations stay within `work_budget` bytes (see the module's docstring)."""
    device = device or torch.device("cpu")
    h, w = image.shape[:2]
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="stylekit-tiles-", dir=tile_dir) as folder,
        allocator_returns_memory(),
    ):
        run = TiledRun(net, work_budget, Path(folder), device, max_rows)
        try:
            out = run.run(image)
        finally:
            run.close()
    seconds = time.perf_counter() - started
    log.info(
        "tiled %dx%d in %d passes, %d bands, %.1f s (%.2f MP/s), activations within %s, %s via scratch files",
        w, h, run.passes, run.bands, seconds, h * w / 1e6 / max(seconds, 1e-9), format_size(work_budget),
        format_size(run.spilled),
    )  # fmt: skip
    return out
