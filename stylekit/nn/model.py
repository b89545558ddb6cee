"""The image transformation network f_W of Johnson et al. (ECCV 2016).

Layer names and shapes are exactly the reference PyTorch example's, so a state dict saved by that
example loads here unchanged (`conv1.conv2d.weight`, `in1.weight`, `res1.conv1.conv2d.weight`,
..., `deconv3.conv2d.weight`; 1,679,235 parameters).

Pixels are RGB floats in [0, 255] in and out (B, 3, H, W). The two stride-2 convolutions halve
the size twice and the two nearest-neighbour upsamplings double it twice, so the network maps
H x W to H x W only when both are multiples of 4; `forward` reflection-pads other sizes up to
the next multiple of 4 (and to a minimum the 9x9 and 3x3 reflection pads can handle) and crops
the result back, so every input size comes out at its own size.

Many paintings in one network (Dumoulin, Shlens & Kudlur, "A Learned Representation for
Artistic Style", ICLR 2017): every convolution is shared, and each of the N styles owns only
the scale and shift (gamma, beta) of each of the 15 instance norms, 2 x 1,600 numbers a style
(`ConditionalInstanceNorm2d`). The seed's network is the N = 1 case: its state dict keeps the
seed's names and shapes, so the reference example's files load unchanged and give its pixels.
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


# Which style a forward pass paints: a slot index, a (N,) weight vector over the slots (a
# blend: gamma and beta are the weighted sums of the slots'), or None for a one-style network.
Style = int | torch.Tensor | None


class ConditionalInstanceNorm2d(nn.InstanceNorm2d):
    """Instance norm whose scale and shift belong to a style: `weight` and `bias` are
    (styles, C), one row per style (Dumoulin et al. 2017, conditional instance normalization).

    An `nn.InstanceNorm2d` still: with one style its state dict holds them as the seed's
    `nn.InstanceNorm2d(C, affine=True)` does, (C,), and `forward` makes the very call that
    module makes: the same pixels, bit for bit.
    """

    def __init__(self, channels: int, styles: int = 1, eps: float = 1e-5):
        super().__init__(channels, eps=eps, affine=True)
        if styles < 1:
            raise ValueError(f"styles must be >= 1 (got {styles})")
        self.channels, self.styles = channels, styles
        self.weight = nn.Parameter(torch.ones(styles, channels))  # gamma, (N, C)
        self.bias = nn.Parameter(torch.zeros(styles, channels))  # beta, (N, C)

    def gamma_beta(self, style: Style = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(gamma, beta), each (C,), of one slot or of a blend's (N,) weights."""
        if style is None:
            if self.styles != 1:
                raise ValueError(f"a network of {self.styles} styles needs a style: a slot or (N,) weights")
            style = 0
        if isinstance(style, int):
            return self.weight[style], self.bias[style]
        w = style.to(self.weight.dtype)  # (N,) @ (N, C) -> (C,)
        return w @ self.weight, w @ self.bias

    def forward(self, x: torch.Tensor, style: Style = None) -> torch.Tensor:
        gamma, beta = self.gamma_beta(style)
        return F.instance_norm(x, weight=gamma, bias=beta, eps=self.eps)

    def _save_to_state_dict(self, destination, prefix, keep_vars):  # type: ignore[no-untyped-def]
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.styles == 1:  # the seed's (C,) shapes
            for name in ("weight", "bias"):
                destination[prefix + name] = destination[prefix + name][0]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        for name in ("weight", "bias"):
            value = state_dict.get(prefix + name)
            if value is not None and value.dim() == 1 and self.styles == 1:
                state_dict[prefix + name] = value.unsqueeze(0)  # (C,) -> (1, C)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"{self.channels}, styles={self.styles}, eps={self.eps}"


class ResidualBlock(nn.Module):
    """Two 3x3 convs with instance norm and an identity shortcut (He et al. 2016; Gross &
    Wilber's recommended layout, no ReLU after the addition)."""

    def __init__(self, channels: int, styles: int = 1):
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in1 = ConditionalInstanceNorm2d(channels, styles)
        self.conv2 = ConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in2 = ConditionalInstanceNorm2d(channels, styles)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor, style: Style = None) -> torch.Tensor:
        out = self.relu(self.in1(self.conv1(x), style))
        out = self.in2(self.conv2(out), style)
        return out + x


class TransformerNet(nn.Module):
    """conv 9x9 -> two stride-2 convs -> five residual blocks -> two upsample convs -> conv 9x9,
    with `styles` paintings in its instance norms (1: the seed's network)."""

    # Not a weight: the shorter photo side the strokes were trained for, from the model file's
    # metadata (modelio.paint_side_of); None paints at whatever size it is given.
    paint_side: int | None = None

    def __init__(self, styles: int = 1) -> None:
        super().__init__()
        self.styles = styles
        # Encoder: (B,3,H,W) -> (B,32,H,W) -> (B,64,H/2,W/2) -> (B,128,H/4,W/4)
        self.conv1 = ConvLayer(3, 32, kernel_size=9, stride=1)
        self.in1 = ConditionalInstanceNorm2d(32, styles)
        self.conv2 = ConvLayer(32, 64, kernel_size=3, stride=2)
        self.in2 = ConditionalInstanceNorm2d(64, styles)
        self.conv3 = ConvLayer(64, 128, kernel_size=3, stride=2)
        self.in3 = ConditionalInstanceNorm2d(128, styles)
        # Five residual blocks at 1/4 resolution: (B,128,H/4,W/4)
        self.res1 = ResidualBlock(128, styles)
        self.res2 = ResidualBlock(128, styles)
        self.res3 = ResidualBlock(128, styles)
        self.res4 = ResidualBlock(128, styles)
        self.res5 = ResidualBlock(128, styles)
        # Decoder: (B,128,H/4,W/4) -> (B,64,H/2,W/2) -> (B,32,H,W) -> (B,3,H,W)
        self.deconv1 = UpsampleConvLayer(128, 64, kernel_size=3, stride=1, upsample=2)
        self.in4 = ConditionalInstanceNorm2d(64, styles)
        self.deconv2 = UpsampleConvLayer(64, 32, kernel_size=3, stride=1, upsample=2)
        self.in5 = ConditionalInstanceNorm2d(32, styles)
        self.deconv3 = ConvLayer(32, 3, kernel_size=9, stride=1)
        self.relu = nn.ReLU()

    def transform(self, x: torch.Tensor, style: Style = None) -> torch.Tensor:
        """The reference example's forward pass, layer for layer, in the chosen style: sizes that
        are multiples of 4 round-trip (`forward` pads the others to one)."""
        y = self.relu(self.in1(self.conv1(x), style))
        y = self.relu(self.in2(self.conv2(y), style))
        y = self.relu(self.in3(self.conv3(y), style))
        for block in (self.res1, self.res2, self.res3, self.res4, self.res5):
            y = block(y, style)
        y = self.relu(self.in4(self.deconv1(y), style))
        y = self.relu(self.in5(self.deconv2(y), style))
        return self.deconv3(y)  # no output nonlinearity: callers clamp to [0, 255]

    def forward(self, x: torch.Tensor, style: Style = None) -> torch.Tensor:
        """(B,3,H,W) in [0,255] -> (B,3,H,W), any H and W >= 1. `style`: a slot or (N,) blend
        weights; a one-style network needs none."""
        h, w = x.shape[-2:]
        x_padded = pad_to_multiple(x)
        y = self.transform(x_padded, style)
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
