"""Losses against naive references written out here, and the VGG-16 loss network's wiring."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torchvision.models import vgg16

from stylekit.nn.loss import PerceptualLoss, content_loss, gram_matrix, style_loss, tv_loss
from stylekit.nn.vgg import TAPS, VGGFeatures, freeze, load_vgg


def naive_gram(f: torch.Tensor) -> torch.Tensor:
    b, c, h, w = f.shape
    g = torch.zeros(b, c, c, dtype=torch.float64)
    for n in range(b):
        for i in range(c):
            for j in range(c):
                g[n, i, j] = (f[n, i].double() * f[n, j].double()).sum()
    return g / (c * h * w)


def einsum_gram(f: torch.Tensor) -> torch.Tensor:
    """Gram by explicit index sum in float64 (for layers too wide for the loop version)."""
    _, c, h, w = f.shape
    return torch.einsum("bihw,bjhw->bij", f.double(), f.double()) / (c * h * w)


def naive_tv(y: torch.Tensor) -> torch.Tensor:
    y = y.double()
    b, c, h, w = y.shape
    dh = sum(((y[:, :, i + 1, :] - y[:, :, i, :]) ** 2).sum() for i in range(h - 1)) / (b * c * (h - 1) * w)
    dw = sum(((y[:, :, :, j + 1] - y[:, :, :, j]) ** 2).sum() for j in range(w - 1)) / (b * c * h * (w - 1))
    return dh + dw


def test_gram_matrix_matches_naive() -> None:
    f = torch.randn(2, 5, 4, 3)
    torch.testing.assert_close(gram_matrix(f).double(), naive_gram(f), rtol=1e-5, atol=1e-6)


def test_content_loss_is_mean_squared_error() -> None:
    a, b = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    expected = sum(float((x - y) ** 2) for x, y in zip(a.flatten(), b.flatten(), strict=True)) / a.numel()
    assert content_loss(a, b).item() == pytest.approx(expected, rel=1e-5)


def test_style_loss_sums_layer_mses_against_broadcast_style_grams() -> None:
    outs = [torch.randn(3, 4, 4), torch.randn(3, 2, 2)]
    styles = [torch.randn(1, 4, 4), torch.randn(1, 2, 2)]
    expected = sum(((o - s.expand_as(o)) ** 2).mean() for o, s in zip(outs, styles, strict=True))
    assert style_loss(outs, styles).item() == pytest.approx(expected.item(), rel=1e-6)


def test_tv_loss_matches_naive() -> None:
    y = torch.rand(2, 3, 7, 5) * 255
    assert tv_loss(y).item() == pytest.approx(naive_tv(y).item(), rel=1e-5)
    assert tv_loss(torch.full((1, 3, 8, 8), 7.0)).item() == 0.0


def test_vgg_taps_match_torchvision_vgg16_slices() -> None:
    """Our features.N numbering is torchvision's: its state dict loads, and the four taps
    equal the reference example's slices [0:4], [4:9], [9:16], [16:23]."""
    torch.manual_seed(0)
    tv = vgg16(weights=None).features.eval()
    ours = VGGFeatures()
    ours.load_state_dict(
        {f"features.{k}": v for k, v in tv.state_dict().items() if int(k.split(".")[0]) < 23}
    )
    freeze(ours)
    x = torch.rand(1, 3, 32, 32) * 255
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    h = (x / 255 - mean) / std
    expected = []
    with torch.no_grad():
        for a, b in ((0, 4), (4, 9), (9, 16), (16, 23)):
            h = tv[a:b](h)
            expected.append(h.clone())
        got = ours(x)
    assert list(TAPS) == ["relu1_2", "relu2_2", "relu3_3", "relu4_3"]
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4)


def test_random_vgg_is_seeded_frozen_and_labelled(caplog: pytest.LogCaptureFixture) -> None:
    a, b, c = load_vgg("random", seed=1), load_vgg("random", seed=1), load_vgg("random", seed=2)
    assert all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    assert not torch.equal(a.features[0].weight, c.features[0].weight)
    assert not any(p.requires_grad for p in a.parameters()) and not a.training
    assert a.source == "random:1"
    assert "RANDOM" in caplog.text


def test_vgg_weights_from_a_local_file(tmp_path: Path) -> None:
    torch.manual_seed(3)
    full = vgg16(weights=None).state_dict()  # features.* and classifier.*, as torchvision saves
    path = tmp_path / "vgg16.pth"
    torch.save(full, path)
    net = load_vgg(str(path))
    torch.testing.assert_close(net.features[0].weight, full["features.0.weight"])


def test_perceptual_loss_matches_the_reference_computation() -> None:
    """Reference example: VGG on y and x separately, content MSE at relu2_2, style MSE of Grams
    over all four taps against the style Grams, plus our TV term."""
    vgg = load_vgg("random", seed=0)
    style = torch.rand(1, 3, 40, 48) * 255
    x = torch.rand(2, 3, 32, 32) * 255
    y = (torch.rand(2, 3, 32, 32) * 255).requires_grad_()
    loss = PerceptualLoss(vgg, style, content_weight=1e5, style_weight=1e10, tv_weight=3.0)
    terms = loss(y, x)

    fy, fx, fs = vgg(y), vgg(x), vgg(style)
    ref_content = 1e5 * F.mse_loss(fy[1], fx[1])
    ref_style = 1e10 * sum(
        F.mse_loss(einsum_gram(a), einsum_gram(s).expand(2, -1, -1)) for a, s in zip(fy, fs, strict=True)
    )
    ref_tv = 3.0 * naive_tv(y.detach())
    assert terms.content.item() == pytest.approx(ref_content.item(), rel=1e-4)
    assert terms.style.item() == pytest.approx(ref_style.item(), rel=1e-3)
    assert terms.tv.item() == pytest.approx(ref_tv.item(), rel=1e-4)
    terms.total.backward()
    assert y.grad is not None and torch.isfinite(y.grad).all()
    assert not any(p.grad is not None for p in vgg.parameters())
