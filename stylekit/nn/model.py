"""The image transformation network f_W of Johnson et al. (ECCV 2016).

Layer names and shapes are exactly the reference PyTorch example's, so a state dict saved by that
example loads here unchanged (`conv1.conv2d.weight`, `in1.weight`, `res1.conv1.conv2d.weight`,
..., `deconv3.conv2d.weight`; 1,679,235 parameters).

Pixels are RGB floats in [0, 255] in and out (B, 3, H, W). The two stride-2 convolutions halve
the size twice and the two nearest-neighbour upsamplings double it twice, so the network maps
H x W to H x W only when both are multiples of 4; `forward` reflection-pads other sizes up to
the next multiple of 4 (and to a minimum the 9x9 and 3x3 reflection pads can handle) and crops
the result back, so every input size comes out at its own size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# The network downsamples by 4; each 3x3 reflection pad at 1/4 scale needs >= 2 pixels there.
MULTIPLE = 4
MIN_SIDE = 8


class ConvLayer(nn.Module):
    """Reflection pad then convolve: keeps borders free of the zero-padding dark frame."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int):
        super().__init__()
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2d(self.reflection_pad(x))


class UpsampleConvLayer(nn.Module):
    """Nearest-neighbour upsample then convolve: avoids transposed-conv checkerboards
    (Odena et al., distill.pub/2016/deconv-checkerboard)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, upsample: int):
        super().__init__()
        self.upsample = upsample
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, mode="nearest", scale_factor=self.upsample)
        return self.conv2d(self.reflection_pad(x))


class ResidualBlock(nn.Module):
    """Two 3x3 convs with instance norm and an identity shortcut (He et al. 2016; Gross &
    Wilber's recommended layout, no ReLU after the addition)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in1 = nn.InstanceNorm2d(channels, affine=True)
        self.conv2 = ConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in2 = nn.InstanceNorm2d(channels, affine=True)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.in1(self.conv1(x)))
        out = self.in2(self.conv2(out))
        return out + x


class TransformerNet(nn.Module):
    """conv 9x9 -> two stride-2 convs -> five residual blocks -> two upsample convs -> conv 9x9."""

    # Not a weight: the shorter photo side the strokes were trained for, from the model file's
    # metadata (modelio.paint_side_of); None paints at whatever size it is given.
    paint_side: int | None = None

    def __init__(self) -> None:
        super().__init__()
        # Encoder: (B,3,H,W) -> (B,32,H,W) -> (B,64,H/2,W/2) -> (B,128,H/4,W/4)
        self.conv1 = ConvLayer(3, 32, kernel_size=9, stride=1)
        self.in1 = nn.InstanceNorm2d(32, affine=True)
        self.conv2 = ConvLayer(32, 64, kernel_size=3, stride=2)
        self.in2 = nn.InstanceNorm2d(64, affine=True)
        self.conv3 = ConvLayer(64, 128, kernel_size=3, stride=2)
        self.in3 = nn.InstanceNorm2d(128, affine=True)
        # Five residual blocks at 1/4 resolution: (B,128,H/4,W/4)
        self.res1 = ResidualBlock(128)
        self.res2 = ResidualBlock(128)
        self.res3 = ResidualBlock(128)
        self.res4 = ResidualBlock(128)
        self.res5 = ResidualBlock(128)
        # Decoder: (B,128,H/4,W/4) -> (B,64,H/2,W/2) -> (B,32,H,W) -> (B,3,H,W)
        self.deconv1 = UpsampleConvLayer(128, 64, kernel_size=3, stride=1, upsample=2)
        self.in4 = nn.InstanceNorm2d(64, affine=True)
        self.deconv2 = UpsampleConvLayer(64, 32, kernel_size=3, stride=1, upsample=2)
        self.in5 = nn.InstanceNorm2d(32, affine=True)
        self.deconv3 = ConvLayer(32, 3, kernel_size=9, stride=1)
        self.relu = nn.ReLU()

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """The reference example's forward pass, layer for layer: sizes that are multiples of 4
        round-trip (`forward` pads the others to one)."""
        y = self.relu(self.in1(self.conv1(x)))
        y = self.relu(self.in2(self.conv2(y)))
        y = self.relu(self.in3(self.conv3(y)))
        y = self.res5(self.res4(self.res3(self.res2(self.res1(y)))))
        y = self.relu(self.in4(self.deconv1(y)))
        y = self.relu(self.in5(self.deconv2(y)))
        return self.deconv3(y)  # no output nonlinearity: callers clamp to [0, 255]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) in [0,255] -> (B,3,H,W), any H and W >= 1."""
        h, w = x.shape[-2:]
        x_padded = pad_to_multiple(x)
        y = self.transform(x_padded)
        return y if y.shape[-2:] == (h, w) else y[..., :h, :w]


def padded_size(side: int) -> int:
    """The side the network actually runs at: next multiple of 4, at least MIN_SIDE."""
    return max(MIN_SIDE, -(-side // MULTIPLE) * MULTIPLE)


def pad_to_multiple(x: torch.Tensor) -> torch.Tensor:
    """Pad bottom/right to `padded_size`; reflect where the image is large enough (like the
    network's own pads), else replicate. Returns `x` itself when no padding is needed."""
    h, w = x.shape[-2:]
    ph, pw = padded_size(h) - h, padded_size(w) - w
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
