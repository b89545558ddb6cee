"""The paper's super-resolution networks (Johnson et al. 2016, section 3.1 and supplementary
Table 2; jcjohnson/fast-neural-style `-task upsample`, arch `c9s1-64,R64,R64,R64,R64,u64,u64,c9s1-3`
for x4, one more `u64` for x8).

For factor f (4 or 8), on (B, 3, h, w) RGB in [0, 255] -> (B, 3, f*h, f*w) in [0, 255]:

    conv 9x9, 64                      (B, 64, h, w)          c9s1-64
    4 residual blocks, 64 channels    (B, 64, h, w)          R64 x4, all at the low resolution
    log2(f) x [upsample x2, conv 3x3, 64, ReLU]  -> (B, 64, f*h, f*w)   u64 x log2(f)
    conv 9x9, 3                       (B, 3, f*h, f*w)       c9s1-3

Same layer shapes (and parameter counts: 400,451 for x4, 437,379 for x8) as the paper. Where
it differs, and why:
- upsampling is nearest-neighbour x2 then a 3x3 conv (TransformerNet's `UpsampleConvLayer`) in
  place of the paper's fractionally-strided convs: the same parameters and receptive field,
  without the checkerboard artefacts transposed convs leave under a feature loss (Odena et al.,
  distill.pub/2016/deconv-checkerboard);
- no normalisation layers (the paper has batch norm): the network must keep each image's own
  brightness and colour, which instance norm discards and batch norm ties to the batch;
  EDSR (Lim et al. 2017) found SR networks better without them;
- a global skip: the output is the bicubic upsampling of the input plus the network's residual,
  whose last conv starts near zero, so a fresh network already gives bicubic and training on a
  CPU budget only has to learn the missing detail (VDSR, Kim et al. 2016). Pixels are scaled to
  [0, 1] inside so Adam at 1e-3 is stable without normalisation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from stylekit.nn.model import ConvLayer, UpsampleConvLayer

FACTORS = (4, 8)
CHANNELS = 64
RESIDUAL_BLOCKS = 4
MIN_SIDE = 5  # the 9x9 reflection pad needs more than 4 pixels at the low resolution
OUTPUT_INIT_SCALE = 0.01  # the last conv's initial weights, scaled: start at (almost) bicubic


class PlainResidualBlock(nn.Module):
    """conv 3x3 -> ReLU -> conv 3x3, plus the identity (no normalisation)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, kernel_size=3, stride=1)
        self.conv2 = ConvLayer(channels, channels, kernel_size=3, stride=1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.relu(self.conv1(x)))


class SRNet(nn.Module):
    """x4 or x8 super-resolution network; `scale` is its output/input size ratio."""

    def __init__(self, factor: int = 4):
        super().__init__()
        if factor not in FACTORS:
            raise ValueError(f"super-resolution factor must be one of {FACTORS} (got {factor})")
        self.scale = factor
        self.conv_in = ConvLayer(3, CHANNELS, kernel_size=9, stride=1)
        self.res = nn.Sequential(*(PlainResidualBlock(CHANNELS) for _ in range(RESIDUAL_BLOCKS)))
        self.up = nn.ModuleList(
            UpsampleConvLayer(CHANNELS, CHANNELS, kernel_size=3, stride=1, upsample=2)
            for _ in range(int(math.log2(factor)))
        )
        self.conv_out = ConvLayer(CHANNELS, 3, kernel_size=9, stride=1)
        self.relu = nn.ReLU()
        with torch.no_grad():
            self.conv_out.conv2d.weight.mul_(OUTPUT_INIT_SCALE)
            self.conv_out.conv2d.bias.zero_()

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,h,w) in [0,1] -> (B,3,f*h,f*w) correction to the bicubic upsampling, in [0,1] units."""
        y = self.relu(self.conv_in(x))  # (B,64,h,w)
        y = self.res(y)  # (B,64,h,w)
        for up in self.up:  # each doubles: (B,64,2h,2w), (B,64,4h,4w)[, (B,64,8h,8w)]
            y = self.relu(up(y))
        return self.conv_out(y)  # (B,3,f*h,f*w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,h,w) in [0,255] -> (B,3,f*h,f*w) in [0,255] (unclamped), any h, w >= 1."""
        h, w = x.shape[-2:]
        if h < MIN_SIDE or w < MIN_SIDE:  # tiny inputs: replicate up to what the pads need
            x = F.pad(x, (0, max(0, MIN_SIDE - w), 0, max(0, MIN_SIDE - h)), mode="replicate")
            return self.upscale(x)[..., : h * self.scale, : w * self.scale]
        return self.upscale(x)  # no shape arithmetic: traces and exports with dynamic H, W

    def upscale(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,h,w) in [0,255], h, w >= MIN_SIDE -> (B,3,f*h,f*w): bicubic plus the residual."""
        x01 = x / 255.0
        base = F.interpolate(x01, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return (base + self.residual(x01)) * 255.0


def output_scale(model: nn.Module) -> int:
    """How many times larger than its input a network's output is (1 for style networks)."""
    return int(getattr(model, "scale", 1))
