"""Fast inference for TransformerNet: the same function, computed with cheaper kernels.

`FastTransformer` is an inference-only re-implementation built from a `TransformerNet`'s
weights. It computes the same function (same padding, same crop, same layers) and differs from
`TransformerNet.forward` only by float rounding; `tests/test_fast_paths.py` states and checks the
tolerances. What it changes, each measured in `benchmarks/` (numbers in benchmarks/RESULTS.md):

- Upsample + conv as sub-pixel conv: "nearest x2 upsample -> reflection pad 1 -> 3x3 conv" equals
  "replicate pad 1 -> 3x3 conv with 4*C_out phase kernels -> pixel_shuffle(2)" exactly (each
  output phase sees a fixed 2x2 neighbourhood of the low-resolution input; the phase kernels
  are sums of the original taps). The 4x upsampled tensor is never materialised and the conv
  runs at the low resolution.
- NNPACK on the CPU: its single-image inference path (Winograd F(6x6, 3x3) for the 3x3 convs,
  its own algorithm choice for the 9x9 ones) measured ~1.5-2.5x faster per layer than oneDNN's
  direct fp32 convs on an AVX2 CPU, with a relative error of ~1e-5 per layer instead of ~1e-6.
  Strided convs stay on oneDNN, which is faster there. NNPACK takes one image at a time, so CPU
  batches run image by image (which also makes every image's pixels independent of what it was
  batched with); its fixed cost per call makes it slower below ~256x256 (the Stylizer then runs
  without it). Its thread pool is sized once, from torch's thread count at its first use.
- On the CPU (NCHW), every layer writes its last pass (ReLU, residual sum, pixel shuffle)
  straight into the next conv's padded input and fills only the border: F.pad's copy of every
  activation and pixel_shuffle's are gone (~7% of the network's time at 1 MP on 2 cores).
- Instance norm on channels_last tensors without the NCHW copy that `F.instance_norm` makes.
- `tune_cpu_allocator`: glibc hands every allocation over 32 MB to a fresh mmap, so each large
  activation is page-faulted and zeroed by the kernel on every call; on a 2-core VM that cost
  rivals the convolutions. Keeping large blocks in the heap lets them be reused.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import logging
import sys
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from stylekit.nn.model import (
    ConditionalInstanceNorm2d,
    ConvLayer,
    TransformerNet,
    UpsampleConvLayer,
    pad_to_multiple,
)

log = logging.getLogger(__name__)


# --- NNPACK ------------------------------------------------------------------------------


def nnpack_conv2d_eager(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: int
) -> torch.Tensor:
    """Unpadded ("valid") fp32 convolution through NNPACK's single-image inference path, one
    image at a time."""
    weight, bias = weight.contiguous(), bias.contiguous()
    outs = [
        torch._nnpack_spatial_convolution(x[i : i + 1].contiguous(), weight, bias, [0, 0], [stride, stride])
        for i in range(x.shape[0])
    ]
    return outs[0] if len(outs) == 1 else torch.cat(outs)


@torch.library.custom_op("stylekit::nnpack_conv2d", mutates_args=())
def nnpack_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: int) -> torch.Tensor:
    """`nnpack_conv2d_eager` as a custom op, which torch.compile calls as an opaque kernel (it
    has no meta function of its own). Used only while compiling: the first eager call of a
    custom op imports torch's whole compiler stack (~900 modules, ~160 MB, seconds)."""
    return nnpack_conv2d_eager(x, weight, bias, stride)


@nnpack_conv2d.register_fake
def _nnpack_conv2d_fake(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: int
) -> torch.Tensor:
    kh, kw = weight.shape[-2:]
    h, w = (x.shape[2] - kh) // stride + 1, (x.shape[3] - kw) // stride + 1
    return x.new_empty((x.shape[0], weight.shape[0], h, w))


@functools.cache
def nnpack_available() -> bool:
    """NNPACK initialised on this CPU and giving the right answer on a small probe."""
    try:
        if not torch.backends.nnpack.is_available():  # also initialises it (needed before use)
            return False
        gen = torch.Generator().manual_seed(0)
        x = torch.rand(1, 8, 12, 12, generator=gen)
        w, b = torch.rand(4, 8, 3, 3, generator=gen), torch.rand(4, generator=gen)
        got = torch._nnpack_spatial_convolution(x, w, b, [0, 0], [1, 1])
        return bool(torch.allclose(got, F.conv2d(x, w, b), rtol=1e-4, atol=1e-4))
    except Exception as e:  # unsupported CPU, a build without NNPACK, ...
        log.debug("NNPACK unavailable: %s", e)
        return False


# --- the allocator -----------------------------------------------------------------------

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_allocator_tuned = False


def tune_cpu_allocator(trim_threshold: int = 1 << 30) -> bool:
    """Make glibc keep large blocks in its heap instead of a fresh mmap per allocation.

    Process-wide and one-way (glibc only; a no-op elsewhere). Memory is still freed for reuse;
    it returns to the OS when more than `trim_threshold` bytes are free at the heap's top.
    Returns whether the setting is in effect."""
    global _allocator_tuned
    if _allocator_tuned:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        if not hasattr(libc, "gnu_get_libc_version"):
            return False  # not glibc (musl has no such tunables)
        ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold) == 1
    except (OSError, AttributeError) as e:
        log.debug("cannot tune the C allocator: %s", e)
        return False
    _allocator_tuned = ok
    if ok:
        log.debug("C allocator: large blocks kept in the heap for reuse (mallopt M_MMAP_MAX=0)")
    return ok


_M_MMAP_THRESHOLD = -3


@contextlib.contextmanager
def allocator_returns_memory(threshold: int = 16 << 20) -> Iterator[None]:
    """While inside: blocks of `threshold` bytes or more get their own mmap again, so freeing
    them gives the memory back at once (tiled inference must keep the process inside a memory
    budget; `tune_cpu_allocator`'s heap would hold on to up to its trim threshold). Returns
    the heap's free memory on entry; restores the tuned setting on exit."""
    if not _allocator_tuned:
        yield
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.malloc_trim(0)
    libc.mallopt(_M_MMAP_THRESHOLD, threshold)
    libc.mallopt(_M_MMAP_MAX, 1 << 16)
    try:
        yield
    finally:
        libc.mallopt(_M_MMAP_MAX, 0)
        libc.malloc_trim(0)


# --- sub-pixel upsample-conv -------------------------------------------------------------


def _phases(w: torch.Tensor, dim: int) -> torch.Tensor:
    """Taps of a 3-tap kernel along `dim` for the two output phases of a nearest x2 upsample:
    phase 0 reads low-res rows (i-1, i) with taps (w0, w1+w2), phase 1 rows (i, i+1) with
    (w0+w1, w2); as 3-tap kernels over rows (i-1, i, i+1). Stacks the phases at `dim`."""
    w0, w1, w2 = w.unbind(dim)
    zero = torch.zeros_like(w0)
    phase0 = torch.stack([w0, w1 + w2, zero], dim)
    phase1 = torch.stack([zero, w0 + w1, w2], dim)
    return torch.stack([phase0, phase1], dim)


def subpixel_weights(weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(C_out, C_in, 3, 3) weights of "upsample x2, reflection pad 1, 3x3 conv" -> the
    (4*C_out, C_in, 3, 3) weights and biases of the equivalent low-resolution conv, channels
    ordered (c, row phase, column phase) as `F.pixel_shuffle(·, 2)` expects.

    The low-resolution input is replicate-padded by 1: at the borders the reflection pad of the
    upsampled image reads the border pixel again, which is the replicated low-res pixel."""
    if tuple(weight.shape[-2:]) != (3, 3):
        raise ValueError(f"sub-pixel rewrite needs a 3x3 kernel, got {tuple(weight.shape[-2:])}")
    c_out, c_in = weight.shape[:2]
    w = weight.detach().double()
    rows = _phases(w, 2)  # (C_out, C_in, 2, 3, 3): [a] row phase, then (kh, kw)
    both = _phases(rows, 4)  # (C_out, C_in, 2, 3, 2, 3): [b] column phase before kw
    w4 = both.permute(0, 2, 4, 1, 3, 5).reshape(c_out * 4, c_in, 3, 3)
    return w4.to(weight.dtype).contiguous(), bias.detach().repeat_interleave(4).contiguous()


# --- the network -------------------------------------------------------------------------


class FastConv(nn.Module):
    """One conv of the network with its padding; `subpixel` for the upsample-conv layers. Public:
    infer/tiles.py builds its tiled graph on these layers."""

    def __init__(self, layer: ConvLayer | UpsampleConvLayer):
        super().__init__()
        conv = layer.conv2d
        self.stride = int(conv.stride[0])
        self.pad = conv.kernel_size[0] // 2
        self.subpixel = isinstance(layer, UpsampleConvLayer)
        if self.subpixel and (layer.upsample != 2 or conv.kernel_size != (3, 3) or self.stride != 1):
            raise ValueError("sub-pixel rewrite supports upsample=2, 3x3, stride 1 only")
        weight, bias = conv.weight.detach(), conv.bias.detach()
        if self.subpixel:
            weight, bias = subpixel_weights(weight, bias)
        self.register_buffer("weight", weight.clone())
        self.register_buffer("bias", bias.clone())
        self.use_nnpack = False

    @property
    def pad_mode(self) -> str:
        return "replicate" if self.subpixel else "reflect"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.pad
        return self.conv_padded(F.pad(x, (p, p, p, p), mode=self.pad_mode))

    def conv_padded(self, x: torch.Tensor, shuffle: bool = True) -> torch.Tensor:
        """The conv (and pixel shuffle, unless `shuffle` is False) on an input already padded
        by `pad` on every side; tiled inference (tiles.py) pads band edges itself."""
        weight, bias = self.weight, self.bias
        if self.use_nnpack and x.device.type == "cpu" and x.dtype == torch.float32 and self.stride == 1:
            conv = nnpack_conv2d if torch.compiler.is_compiling() else nnpack_conv2d_eager
            y = conv(x, weight, bias, self.stride)
        else:
            if x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
                weight, bias = weight.to(x.dtype), bias.to(x.dtype)
            y = F.conv2d(x, weight, bias, self.stride)
        return F.pixel_shuffle(y, 2) if self.subpixel and shuffle else y


# --- padded buffers: each layer writes its output straight into the next conv's padded input --
#
# On the CPU the activations are large and the layers between convs cheap, so their cost is
# memory traffic: F.pad copies every activation once more, and pixel_shuffle once more again.
# Writing a layer's last pass (ReLU, residual sum, or the shuffle) into the interior of the
# next conv's padded buffer and then filling only its borders saves those copies.


def padded_empty(like: torch.Tensor, height: int, width: int, p: int) -> torch.Tensor:
    """An uninitialised (N, C, height + 2p, width + 2p) buffer for `like`'s batch and channels."""
    n, c = like.shape[:2]
    return like.new_empty((n, c, height + 2 * p, width + 2 * p))


def interior(buf: torch.Tensor, p: int) -> torch.Tensor:
    """The view of `buf` inside its border of `p` pixels."""
    return buf[..., p : buf.shape[-2] - p, p : buf.shape[-1] - p] if p else buf


def fill_border(buf: torch.Tensor, p: int, mode: str) -> torch.Tensor:
    """Fill `buf`'s border of `p` pixels from its interior as F.pad(mode) would ("reflect":
    mirrored without repeating the edge; "replicate": the edge repeated). Rows first (over the
    interior columns), then whole columns, so the corners come out as F.pad makes them."""
    if p == 0:
        return buf
    h, w = buf.shape[-2:]
    cols = slice(p, w - p)
    if mode == "reflect":
        buf[..., :p, cols] = buf[..., p + 1 : 2 * p + 1, cols].flip(-2)
        buf[..., h - p :, cols] = buf[..., h - 2 * p - 1 : h - p - 1, cols].flip(-2)
        buf[..., :p] = buf[..., p + 1 : 2 * p + 1].flip(-1)
        buf[..., w - p :] = buf[..., w - 2 * p - 1 : w - p - 1].flip(-1)
    elif mode == "replicate":
        buf[..., :p, cols] = buf[..., p : p + 1, cols]
        buf[..., h - p :, cols] = buf[..., h - p - 1 : h - p, cols]
        buf[..., :p] = buf[..., p : p + 1]
        buf[..., w - p :] = buf[..., w - p - 1 : w - p]
    else:
        raise ValueError(f"unknown pad mode {mode!r}")
    return buf


class FastNorm(nn.Module):
    """Affine instance norm, optionally followed by ReLU."""

    def __init__(self, norm: ConditionalInstanceNorm2d, relu: bool):
        super().__init__()
        # A one-style network's (C,) scale and shift: a multi-style network is made one-style
        # (its chosen style or blend) before it gets here (nn/styles.py).
        gamma, beta = norm.gamma_beta()
        self.register_buffer("weight", gamma.detach().clone())
        self.register_buffer("bias", beta.detach().clone())
        self.eps = float(norm.eps)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            # F.instance_norm would copy to NCHW and back; normalise in place of the layout.
            # fp16 statistics overflow (a conv output with std 300 has variance 9e4 > 65504).
            stats_x = x.float() if x.dtype == torch.float16 else x
            var, mean = torch.var_mean(stats_x, dim=(2, 3), keepdim=True, correction=0)
            scale = self.weight.view(1, -1, 1, 1) * torch.rsqrt(var.float() + self.eps)
            shift = self.bias.view(1, -1, 1, 1) - mean.float() * scale
            y = torch.addcmul(shift.to(x.dtype), x, scale.to(x.dtype))
        else:
            y = F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)
        return torch.relu_(y) if self.relu else y

    def into_padded(
        self, x: torch.Tensor, nxt: FastConv, residual: torch.Tensor | None = None
    ) -> torch.Tensor:
        """This norm (+ ReLU, + `residual`) of NCHW `x`, written into `nxt`'s padded input.

        After a sub-pixel conv `x` is its unshuffled (N, 4C, H, W) output: the statistics of
        each output channel are those of its 4 phase channels together (the shuffle only moves
        pixels), and the shuffle is the copy into the buffer."""
        x = x.contiguous()  # a no-op on this path (NCHW throughout)
        n, c4, h, w = x.shape
        shuffled = c4 == 4 * self.weight.numel()
        if shuffled:  # (N, C*4, H, W) is contiguous as (N, C, 4*H*W): one instance per channel
            y = F.instance_norm(
                x.view(n, c4 // 4, 4 * h * w), weight=self.weight, bias=self.bias, eps=self.eps
            )
            if self.relu:
                torch.relu_(y)
            buf = padded_empty(y, 2 * h, 2 * w, nxt.pad)
            # pixel_shuffle: out[c, 2i + a, 2j + b] = in[4c + 2a + b, i, j]
            dst = interior(buf, nxt.pad).unflatten(-1, (w, 2)).unflatten(-3, (h, 2))  # (N, C, H, 2, W, 2)
            dst.copy_(y.view(n, c4 // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3))
        else:
            y = F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)
            buf = padded_empty(y, h, w, nxt.pad)
            dst = interior(buf, nxt.pad)
            if residual is not None:
                torch.add(y, residual, out=dst)
            elif self.relu:
                torch.clamp_min(y, 0, out=dst)
            else:
                dst.copy_(y)
        return fill_border(buf, nxt.pad, nxt.pad_mode)


class _Residual(nn.Module):
    def __init__(self, block: nn.Module):
        super().__init__()
        self.conv1, self.in1 = FastConv(block.conv1), FastNorm(block.in1, relu=True)
        self.conv2, self.in2 = FastConv(block.conv2), FastNorm(block.in2, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.in2(self.conv2(self.in1(self.conv1(x)))).add_(x)

    def padded(self, xp: torch.Tensor, nxt: FastConv) -> torch.Tensor:
        """The block on `xp`, its input already padded for its first conv, written into `nxt`'s
        padded input."""
        h = self.conv1.conv_padded(xp)
        h = self.conv2.conv_padded(self.in1.into_padded(h, self.conv2))
        return self.in2.into_padded(h, nxt, residual=interior(xp, self.conv1.pad))


class FastTransformer(nn.Module):
    """Inference-only TransformerNet with the weights of `net` (copied, not shared).

    (B, 3, H, W) floats in [0, 255] -> (B, 3, H, W), any H and W, like `TransformerNet.forward`.
    `nnpack=True` runs the stride-1 convs through NNPACK on the CPU in fp32 (ignored elsewhere;
    check `nnpack_available()` first)."""

    def __init__(self, net: TransformerNet, nnpack: bool = False):
        super().__init__()
        self.conv1, self.in1 = FastConv(net.conv1), FastNorm(net.in1, relu=True)
        self.conv2, self.in2 = FastConv(net.conv2), FastNorm(net.in2, relu=True)
        self.conv3, self.in3 = FastConv(net.conv3), FastNorm(net.in3, relu=True)
        self.res = nn.Sequential(*(_Residual(getattr(net, f"res{i}")) for i in range(1, 6)))
        self.deconv1, self.in4 = FastConv(net.deconv1), FastNorm(net.in4, relu=True)
        self.deconv2, self.in5 = FastConv(net.deconv2), FastNorm(net.in5, relu=True)
        self.deconv3 = FastConv(net.deconv3)
        self.set_nnpack(nnpack)
        self.eval()

    def set_nnpack(self, enabled: bool) -> None:
        for m in self.modules():
            if isinstance(m, FastConv):
                m.use_nnpack = enabled and m.stride == 1

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """Sizes that are multiples of 4 (at least 8), like `TransformerNet.transform`."""
        if x.device.type == "cpu" and x.is_contiguous() and self.conv1.weight.is_contiguous():
            return self._transform_padded(x)
        y = self.in1(self.conv1(x))
        y = self.in2(self.conv2(y))
        y = self.in3(self.conv3(y))
        y = self.res(y)
        y = self.in4(self.deconv1(y))
        y = self.in5(self.deconv2(y))
        return self.deconv3(y)

    def _transform_padded(self, x: torch.Tensor) -> torch.Tensor:
        """`transform` with every layer writing into the next conv's padded input (the CPU's
        NCHW path; same pixels up to float rounding)."""
        blocks = list(self.res)
        y = self.in1.into_padded(self.conv1(x), self.conv2)
        y = self.in2.into_padded(self.conv2.conv_padded(y), self.conv3)
        y = self.in3.into_padded(self.conv3.conv_padded(y), blocks[0].conv1)
        for block, nxt in zip(blocks, [b.conv1 for b in blocks[1:]] + [self.deconv1], strict=True):
            y = block.padded(y, nxt)
        y = self.in4.into_padded(self.deconv1.conv_padded(y, shuffle=False), self.deconv2)
        y = self.in5.into_padded(self.deconv2.conv_padded(y, shuffle=False), self.deconv3)
        return self.deconv3.conv_padded(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        y = self.transform(pad_to_multiple(x))
        return y if y.shape[-2:] == (h, w) else y[..., :h, :w]
