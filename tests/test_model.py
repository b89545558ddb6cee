"""TransformerNet: the seed's layers, names, parameter count, outputs, and any input size."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stylekit.nn.model import TransformerNet, count_parameters, padded_size


# --- the seed's network, verbatim in structure (../shared/seed), as the naive reference -----
class SeedConvLayer(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride):
        super().__init__()
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x):
        return self.conv2d(self.reflection_pad(x))


class SeedResidualBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv1 = SeedConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in1 = nn.InstanceNorm2d(channels, affine=True)
        self.conv2 = SeedConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in2 = nn.InstanceNorm2d(channels, affine=True)
        self.relu = nn.ReLU()

    def forward(self, x):
        residual = x
        out = self.relu(self.in1(self.conv1(x)))
        out = self.in2(self.conv2(out))
        return out + residual


class SeedUpsampleConvLayer(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride, upsample=None):
        super().__init__()
        self.upsample = upsample
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x):
        if self.upsample:
            x = nn.functional.interpolate(x, mode="nearest", scale_factor=self.upsample)
        return self.conv2d(self.reflection_pad(x))


class SeedTransformerNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = SeedConvLayer(3, 32, kernel_size=9, stride=1)
        self.in1 = nn.InstanceNorm2d(32, affine=True)
        self.conv2 = SeedConvLayer(32, 64, kernel_size=3, stride=2)
        self.in2 = nn.InstanceNorm2d(64, affine=True)
        self.conv3 = SeedConvLayer(64, 128, kernel_size=3, stride=2)
        self.in3 = nn.InstanceNorm2d(128, affine=True)
        self.res1 = SeedResidualBlock(128)
        self.res2 = SeedResidualBlock(128)
        self.res3 = SeedResidualBlock(128)
        self.res4 = SeedResidualBlock(128)
        self.res5 = SeedResidualBlock(128)
        self.deconv1 = SeedUpsampleConvLayer(128, 64, kernel_size=3, stride=1, upsample=2)
        self.in4 = nn.InstanceNorm2d(64, affine=True)
        self.deconv2 = SeedUpsampleConvLayer(64, 32, kernel_size=3, stride=1, upsample=2)
        self.in5 = nn.InstanceNorm2d(32, affine=True)
        self.deconv3 = SeedConvLayer(32, 3, kernel_size=9, stride=1)
        self.relu = nn.ReLU()

    def forward(self, x):
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
        return self.deconv3(y)


def seeded_pair() -> tuple[SeedTransformerNet, TransformerNet]:
    torch.manual_seed(0)
    seed = SeedTransformerNet().eval()
    ours = TransformerNet().eval()
    ours.load_state_dict(seed.state_dict(), strict=True)
    return seed, ours


def test_parameter_count_is_the_papers_network() -> None:
    assert count_parameters(TransformerNet()) == 1_679_235


def test_state_dict_names_and_shapes_match_the_seed() -> None:
    seed, ours = SeedTransformerNet().state_dict(), TransformerNet().state_dict()
    assert list(ours) == list(seed)
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in seed.items()}
    for name in ("conv1.conv2d.weight", "in1.weight", "res1.conv1.conv2d.weight", "deconv3.conv2d.weight"):
        assert name in ours


def test_same_output_as_the_seed_for_multiples_of_four() -> None:
    seed, ours = seeded_pair()
    x = torch.rand(2, 3, 64, 48) * 255
    with torch.no_grad():
        torch.testing.assert_close(ours(x), seed(x), rtol=0, atol=1e-3)


@pytest.mark.parametrize("size", [(1, 1), (3, 97), (5, 7), (63, 65), (66, 30), (17, 200)])
def test_any_input_size_comes_out_at_its_own_size(size: tuple[int, int]) -> None:
    _, ours = seeded_pair()
    x = torch.rand(1, 3, *size) * 255
    with torch.no_grad():
        y = ours(x)
    assert y.shape == (1, 3, *size)
    assert torch.isfinite(y).all()


def test_seed_returns_a_larger_image_where_we_pad_and_crop() -> None:
    """The reference grows 63x65 to 64x68; we pad to 64x68, run, and crop the same pixels."""
    seed, ours = seeded_pair()
    x = torch.rand(1, 3, 63, 65) * 255
    with torch.no_grad():
        assert seed(x).shape[-2:] == (64, 68)
        assert ours(x).shape[-2:] == (63, 65)
    assert padded_size(63) == 64 and padded_size(65) == 68 and padded_size(1) == 8


def test_forward_does_not_modify_the_callers_tensor() -> None:
    _, ours = seeded_pair()
    x = torch.rand(1, 3, 30, 31) * 255
    before = x.clone()
    with torch.no_grad():
        ours(x)
    assert torch.equal(x, before)
