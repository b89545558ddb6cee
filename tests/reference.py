"""The reference the project measures itself against, one copy for tests and benchmarks.

The seed / pytorch/examples fast_neural_style code path, copied here verbatim in structure so
that it does not move when stylekit changes: the seed's TransformerNet (reflection pad modules,
nearest upsample, instance norm; ../shared/seed), fp32, eager, NCHW, batch as given; its
training step has separate VGG-16 passes for the output y and the content x (both to relu4_3,
built with autograd enabled), Gram / (c*h*w), MSE, Adam. Its style Grams are computed once, as
the example does (it repeats the style image to the batch size and slices). And
`calibrated_model`, the seeded stand-in for a trained model that tests and benchmarks share.

It is a test oracle: the parity tests check stylekit against it, and the benchmarks measure
stylekit against the same code (benchmarks/common.py puts tests/ on sys.path for it), so there
is one copy and it does not move when stylekit changes. It is not in the package: it is what
stylekit is checked against, not part of it. Needs only torch (and torchvision for
`reference_vgg`); stylekit only where a function hands over to it. PSNR is the library's:
`stylekit.infer.srmetrics.psnr`.
"""

from __future__ import annotations

from collections import namedtuple
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:  # the seed's network needs no stylekit (bench_cpu runs it in a bare process)
    from stylekit.nn.model import TransformerNet

# --- the reference network (the seed, verbatim in structure) ------------------------------


class RefConvLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int):
        super().__init__()
        reflection_padding = kernel_size // 2
        self.reflection_pad = nn.ReflectionPad2d(reflection_padding)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.reflection_pad(x)
        return self.conv2d(out)


class RefResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = RefConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in1 = nn.InstanceNorm2d(channels, affine=True)
        self.conv2 = RefConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in2 = nn.InstanceNorm2d(channels, affine=True)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        out = self.relu(self.in1(self.conv1(x)))
        out = self.in2(self.conv2(out))
        return out + residual


class RefUpsampleConvLayer(nn.Module):
    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int, upsample: int | None = None
    ):
        super().__init__()
        self.upsample = upsample
        reflection_padding = kernel_size // 2
        self.reflection_pad = nn.ReflectionPad2d(reflection_padding)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_in = x
        if self.upsample:
            x_in = F.interpolate(x_in, mode="nearest", scale_factor=self.upsample)
        out = self.reflection_pad(x_in)
        return self.conv2d(out)


class RefTransformerNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = RefConvLayer(3, 32, kernel_size=9, stride=1)
        self.in1 = nn.InstanceNorm2d(32, affine=True)
        self.conv2 = RefConvLayer(32, 64, kernel_size=3, stride=2)
        self.in2 = nn.InstanceNorm2d(64, affine=True)
        self.conv3 = RefConvLayer(64, 128, kernel_size=3, stride=2)
        self.in3 = nn.InstanceNorm2d(128, affine=True)
        self.res1 = RefResidualBlock(128)
        self.res2 = RefResidualBlock(128)
        self.res3 = RefResidualBlock(128)
        self.res4 = RefResidualBlock(128)
        self.res5 = RefResidualBlock(128)
        self.deconv1 = RefUpsampleConvLayer(128, 64, kernel_size=3, stride=1, upsample=2)
        self.in4 = nn.InstanceNorm2d(64, affine=True)
        self.deconv2 = RefUpsampleConvLayer(64, 32, kernel_size=3, stride=1, upsample=2)
        self.in5 = nn.InstanceNorm2d(32, affine=True)
        self.deconv3 = RefConvLayer(32, 3, kernel_size=9, stride=1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.in1(self.conv1(x)))
        y = self.relu(self.in2(self.conv2(y)))
        y = self.relu(self.in3(self.conv3(y)))
        y = self.res1(y)
        y = self.res2(y)
        y = self.res3(y)
        y = self.res4(y)
        y = self.res5(y)
        y = self.relu(self.in4(self.deconv1(y)))
        y = self.relu(self.in5(self.deconv2(y)))
        y = self.deconv3(y)
        return y


def reference_net(model: TransformerNet, device: torch.device) -> RefTransformerNet:
    """The seed network holding `model`'s weights (state-dict names are the same)."""
    ref = RefTransformerNet()
    ref.load_state_dict(model.state_dict())
    return ref.to(device).eval()


def reference_stylize(net: nn.Module, batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The example's stylize(): pixels to a float NCHW tensor in [0, 255] on the device,
    no_grad forward, clamp(0, 255), truncate to uint8. (B, H, W, 3) uint8 -> same, on the CPU."""
    with torch.no_grad():
        x = batch.to(device).permute(0, 3, 1, 2).float()
        y = net(x)
        return y.clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu()


# --- the reference loss and training step (pytorch/examples fast_neural_style) ------------


class RefVgg16(nn.Module):
    """The example's Vgg16: torchvision vgg16().features sliced at relu1_2/2_2/3_3/4_3."""

    def __init__(self, features: nn.Sequential):
        super().__init__()
        self.slice1, self.slice2, self.slice3, self.slice4 = (nn.Sequential() for _ in range(4))
        for x in range(4):
            self.slice1.add_module(str(x), features[x])
        for x in range(4, 9):
            self.slice2.add_module(str(x), features[x])
        for x in range(9, 16):
            self.slice3.add_module(str(x), features[x])
        for x in range(16, 23):
            self.slice4.add_module(str(x), features[x])
        for param in self.parameters():
            param.requires_grad = False

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:  # a namedtuple, as in the example
        h = self.slice1(x)
        h_relu1_2 = h
        h = self.slice2(h)
        h_relu2_2 = h
        h = self.slice3(h)
        h_relu3_3 = h
        h = self.slice4(h)
        h_relu4_3 = h
        vgg_outputs = namedtuple("VggOutputs", ["relu1_2", "relu2_2", "relu3_3", "relu4_3"])
        return vgg_outputs(h_relu1_2, h_relu2_2, h_relu3_3, h_relu4_3)


def reference_vgg(seed: int, device: torch.device) -> RefVgg16:
    """torchvision's vgg16 features with stylekit's seeded random weights (ImageNet weights
    cost the same to run; a bare benchmark machine may not have them)."""
    from torchvision.models import vgg16

    from stylekit.nn.vgg import load_vgg

    features = vgg16(weights=None).features
    features.load_state_dict(
        {k.removeprefix("features."): v for k, v in load_vgg("random", seed).state_dict().items()},
        strict=False,
    )
    return RefVgg16(features).to(device).eval()


def normalize_batch(batch: torch.Tensor) -> torch.Tensor:
    mean = batch.new_tensor([0.485, 0.456, 0.406]).view(-1, 1, 1)
    std = batch.new_tensor([0.229, 0.224, 0.225]).view(-1, 1, 1)
    batch = batch.div_(255.0)
    return (batch - mean) / std


def gram_matrix(y: torch.Tensor) -> torch.Tensor:
    (b, ch, h, w) = y.size()
    features = y.view(b, ch, w * h)
    features_t = features.transpose(1, 2)
    return features.bmm(features_t) / (ch * h * w)


class ReferenceTrainer:
    """One training step exactly as the example's train() loop body, on a copy of `model`'s
    weights in the seed's network. `normalize`: the example's ImageNet normalisation before its
    torchvision VGG (False for a loss network that takes RGB 0-255 itself, stylekit's Caffe
    VGG-16); `tv_weight`: the total-variation term stylekit adds to the loss (0, the example's
    loss, leaves it out). The one reference step: the training benchmark times it, the parity
    benchmark trains with it."""

    def __init__(
        self,
        model: TransformerNet,
        vgg: nn.Module,
        style: torch.Tensor,
        batch_size: int,
        content_weight: float = 1e5,
        style_weight: float = 1e10,
        lr: float = 1e-3,
        *,
        tv_weight: float = 0.0,
        normalize: bool = True,
    ):
        if normalize and tv_weight:
            raise ValueError("the TV term reads the raw output, which normalize_batch divides in place")
        device = style.device
        self.transformer = reference_net(model, device).train()
        self.optimizer = torch.optim.Adam(self.transformer.parameters(), lr)
        self.mse_loss = torch.nn.MSELoss()
        self.vgg = vgg
        self.content_weight, self.style_weight, self.tv_weight = content_weight, style_weight, tv_weight
        self.normalize = normalize
        style = style.repeat(batch_size, 1, 1, 1)
        features_style = vgg(normalize_batch(style.clone()) if normalize else style)
        self.gram_style = [gram_matrix(y).detach() for y in features_style]

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, H, W) float in [0, 255] on the device (the example's ToTensor * 255).
        Returns the total loss as a tensor: reading it would synchronise."""
        n_batch = len(x)
        self.optimizer.zero_grad()
        y = self.transformer(x)
        if self.normalize:
            y = normalize_batch(y)
            x = normalize_batch(x.clone())
        features_y = self.vgg(y)
        features_x = self.vgg(x)
        content_loss = self.content_weight * self.mse_loss(features_y[1], features_x[1])  # relu2_2
        style_loss = 0.0
        for ft_y, gm_s in zip(features_y, self.gram_style, strict=True):
            gm_y = gram_matrix(ft_y)
            style_loss += self.mse_loss(gm_y, gm_s[:n_batch, :, :])
        style_loss *= self.style_weight
        total_loss = content_loss + style_loss
        if self.tv_weight:  # y is the raw output here (normalize is off)
            dy, dx = y[:, :, 1:, :] - y[:, :, :-1, :], y[:, :, :, 1:] - y[:, :, :, :-1]
            total_loss = total_loss + self.tv_weight * (dy.pow(2).mean() + dx.pow(2).mean())
        total_loss.backward()
        self.optimizer.step()
        return total_loss


# --- a stand-in for a trained model -------------------------------------------------------


def calibrated_model(seed: int = 0, batch: torch.Tensor | None = None) -> TransformerNet:
    """A seeded TransformerNet whose output spans 0-255 like a trained model's (an untrained
    one outputs ~0, which clamps to black and makes any PSNR meaningless): random instance-norm
    affines, and the last conv scaled so that its output on `batch` ((B, 3, H, W) float in
    [0, 255]) has mean 128, std ~60. Without `batch`, two 32x32 noise images drawn after the
    affines from the same seeded generator (tests); benchmarks calibrate on photos
    (`common.calibration_photos`). Use --model for a real one."""
    from stylekit.nn.model import TransformerNet

    torch.manual_seed(seed)
    model = TransformerNet().eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.InstanceNorm2d):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=gen))
                m.bias.copy_(0.5 * torch.randn(m.bias.shape, generator=gen))
        x = torch.rand(2, 3, 32, 32, generator=gen) * 255 if batch is None else batch
        conv = model.deconv3.conv2d
        scale = 60.0 / float(model(x).std())
        conv.weight.mul_(scale)
        conv.bias.mul_(scale).add_(128.0 - float(model(x).mean()))
    return model
