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


# --- the paper's loss network: the Caffe VGG-16 built into the package -----------------------


def _naive_caffe_taps(weights: dict[str, torch.Tensor], x_rgb: torch.Tensor) -> list[torch.Tensor]:
    """Caffe's convention written out by hand: swap R and B, subtract the BGR mean per channel,
    then conv/ReLU/pool layer by layer, naming the layers as Caffe does."""
    bgr = torch.stack([x_rgb[:, 2], x_rgb[:, 1], x_rgb[:, 0]], dim=1)
    bgr_mean = [103.939, 116.779, 123.68]
    h = torch.stack([bgr[:, i] - bgr_mean[i] for i in range(3)], dim=1)
    convs = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21]  # conv1_1 ... conv4_3 in features.N numbering
    pools_after = {2, 7, 14}  # pool1 after conv1_2, pool2 after conv2_2, pool3 after conv3_3
    taps_after = {2, 7, 14, 21}  # relu1_2, relu2_2, relu3_3, relu4_3
    taps = []
    for i in convs:
        h = F.relu(F.conv2d(h, weights[f"features.{i}.weight"], weights[f"features.{i}.bias"], padding=1))
        if i in taps_after:
            taps.append(h)
        if i in pools_after:
            h = F.max_pool2d(h, 2)
    return taps


def test_builtin_caffe_vgg_follows_caffe_input_convention() -> None:
    from safetensors.torch import load_file

    from stylekit.nn.vgg import builtin_caffe_path

    net = load_vgg("caffe")
    assert net.source == "caffe" and net.convention.name == "caffe"
    # The pristine Caffe weights (shared/data/SOURCES.md: conv1_1 bias starts like this).
    torch.testing.assert_close(
        net.features[0].bias[:4], torch.tensor([0.7343, 0.0934, 0.0678, 0.8863]), atol=1e-4, rtol=0
    )
    x = torch.rand(2, 3, 24, 32) * 255
    x_before = x.clone()
    with torch.no_grad():
        got = net(x)
        expected = _naive_caffe_taps(load_file(builtin_caffe_path()), x)
    assert torch.equal(x, x_before)  # the caller's pixels are not modified
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-3)


def test_caffe_convention_read_from_file_metadata_or_prefix(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    from stylekit.nn.vgg import builtin_caffe_path, convention_of

    weights = load_file(builtin_caffe_path())
    tagged, plain = tmp_path / "tagged.safetensors", tmp_path / "plain.safetensors"
    save_file(weights, str(tagged), metadata={"input": "BGR, 0-255 minus the BGR mean"})
    save_file(weights, str(plain))
    assert convention_of(str(tagged)).name == "caffe"
    assert convention_of(str(plain)).name == "torchvision"
    assert convention_of(f"caffe:{plain}").name == "caffe"
    x = torch.rand(1, 3, 16, 16) * 255
    with torch.no_grad():
        builtin, by_meta, by_prefix = (load_vgg(w)(x)[1] for w in ("caffe", str(tagged), f"caffe:{plain}"))
        as_torchvision = load_vgg(str(plain))(x)[1]
    assert torch.equal(builtin, by_meta) and torch.equal(builtin, by_prefix)
    assert not torch.allclose(builtin, as_torchvision)


def test_loss_weight_defaults_follow_the_loss_network() -> None:
    from stylekit.nn.vgg import default_loss_weights
    from stylekit.train.config import TrainConfig

    assert TrainConfig().vgg_weights == "caffe"
    caffe = TrainConfig()
    assert (caffe.content_weight, caffe.style_weight) == (1.0, 5.0)
    tv = TrainConfig(vgg_weights="imagenet")
    assert (tv.content_weight, tv.style_weight, tv.tv_weight) == (1e5, 1e10, 10.0)
    assert TrainConfig(style_weight=7.0).style_weight == 7.0  # an explicit weight wins
    assert default_loss_weights("random") == default_loss_weights("imagenet")
