"""Stylization controls (stylekit/infer/controls.py): strength, preserve_color, style_scale, in
the Stylizer and through `python -m stylekit stylize`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import PYTHON, REPO
from stylekit.errors import ConfigError
from stylekit.infer import controls
from stylekit.infer.inference import InferenceOptions, Stylizer
from stylekit.nn.model import MIN_SIDE, TransformerNet
from stylekit.nn.modelio import save_model

H, W = 36, 52


def calibrated_model(seed: int = 0) -> TransformerNet:
    """A seeded TransformerNet whose output spans 0-255 (an untrained one outputs ~0, all black
    after clamping): random instance-norm affines, last conv scaled to mean 128, std ~60 (as
    benchmarks/common.py's `calibrated_model`)."""
    torch.manual_seed(seed)
    model = TransformerNet().eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.InstanceNorm2d):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=gen))
                m.bias.copy_(0.5 * torch.randn(m.bias.shape, generator=gen))
        x = torch.rand(2, 3, 32, 32, generator=gen) * 255
        conv = model.deconv3.conv2d
        scale = 60.0 / float(model(x).std())
        conv.weight.mul_(scale)
        conv.bias.mul_(scale).add_(128.0 - float(model(x).mean()))
    return model


def smooth_photo(h: int = H, w: int = W, seed: int = 0) -> np.ndarray:
    """(h, w, 3) uint8: gradients plus a little noise, a photo-like input."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([xx / w * 200 + 20, yy / h * 180 + 40, (xx + yy) / (h + w) * 150 + 60], axis=-1)
    return np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def model() -> TransformerNet:
    return calibrated_model()


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return smooth_photo()


@pytest.fixture(scope="module")
def plain(model: TransformerNet, photo: np.ndarray) -> np.ndarray:
    """Today's pixels: the network's output without any control."""
    out = Stylizer(model, InferenceOptions(device="cpu")).stylize([photo])[0]
    assert out.std() > 30 and out.min() < 64 and out.max() > 192  # not all black
    return out


def stylize(model: TransformerNet, photo: np.ndarray, **options: object) -> np.ndarray:
    return Stylizer(model, InferenceOptions(device="cpu", **options)).stylize([photo])[0]  # type: ignore[arg-type]


# --- strength ---------------------------------------------------------------------------------


def test_strength_1_is_todays_pixels_and_0_the_photo(
    model: TransformerNet, photo: np.ndarray, plain: np.ndarray
) -> None:
    assert np.array_equal(stylize(model, photo, strength=1.0), plain)
    assert np.array_equal(stylize(model, photo, strength=0.0), photo)
    # The pure function too, off the short cuts (strength given as ints).
    assert np.array_equal(controls.blend(plain, photo, 1), plain)
    assert np.array_equal(controls.blend(plain, photo, 0), photo)


@pytest.mark.parametrize("strength", [0.25, 0.5, 0.8])
def test_strength_between_is_the_rounded_blend(
    model: TransformerNet, photo: np.ndarray, plain: np.ndarray, strength: float
) -> None:
    naive = np.clip(np.rint(strength * plain.astype(np.float64) + (1 - strength) * photo), 0, 255)
    got = stylize(model, photo, strength=strength)
    assert got.dtype == np.uint8 and got.shape == photo.shape
    diff = np.abs(got.astype(int) - naive.astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.01  # float32 vs float64 ties only


# --- preserve_color ---------------------------------------------------------------------------


def test_ycbcr_is_pils_bt601_full_range_and_round_trips() -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    ours = controls.rgb_to_ycbcr(rgb)
    pil = np.asarray(Image.fromarray(rgb).convert("YCbCr")).astype(np.float32)
    assert np.abs(ours - pil).max() <= 1.0
    assert np.array_equal(controls.to_uint8(controls.ycbcr_to_rgb(ours)), rgb)


def test_preserve_color_keeps_the_photos_chroma_and_the_stylized_luma() -> None:
    rng = np.random.default_rng(2)
    # Ranges that keep the mix inside the RGB cube (no clipping): luma 64-192, chroma +-48.
    stylized = rng.integers(64, 193, (20, 24, 3), dtype=np.uint8)
    photo = rng.integers(104, 153, (20, 24, 3), dtype=np.uint8)
    out = controls.preserve_color(stylized, photo)
    got, want_photo, want_style = map(controls.rgb_to_ycbcr, (out, photo, stylized))
    # Rounding each RGB channel by <= 0.5 moves Y, Cb and Cr by <= 0.5.
    assert np.abs(got[..., 1:] - want_photo[..., 1:]).max() <= 0.5 + 1e-3
    assert np.abs(got[..., 0] - want_style[..., 0]).max() <= 0.5 + 1e-3


def test_preserve_color_in_the_stylizer_then_strength(
    model: TransformerNet, photo: np.ndarray, plain: np.ndarray
) -> None:
    recoloured = controls.preserve_color(plain, photo)
    assert np.array_equal(stylize(model, photo, preserve_color=True), recoloured)
    both = stylize(model, photo, preserve_color=True, strength=0.5)
    assert np.array_equal(both, controls.blend(recoloured, photo, 0.5))
    # The colours are the photo's, pixel by pixel (but where clipping to the RGB cube shifts
    # them), unlike the plain output's.
    recoloured_cbcr, photo_cbcr, plain_cbcr = (
        controls.rgb_to_ycbcr(x)[..., 1:] for x in (recoloured, photo, plain)
    )
    assert np.abs(recoloured_cbcr - photo_cbcr).mean() < 1.5 < np.abs(plain_cbcr - photo_cbcr).mean()


# --- style_scale ------------------------------------------------------------------------------


def test_working_size() -> None:
    assert controls.working_size(36, 52, 1.0, MIN_SIDE) == (36, 52)
    assert controls.working_size(36, 52, 2.0, MIN_SIDE) == (18, 26)
    assert controls.working_size(36, 52, 0.5, MIN_SIDE) == (72, 104)
    assert controls.working_size(10, 100, 4.0, MIN_SIDE) == (8, 80)  # shorter side kept >= 8
    assert controls.working_size(4, 6, 2.0, MIN_SIDE) == (4, 6)  # never shrunk below itself


def test_style_scale_1_is_todays_pixels(model: TransformerNet, photo: np.ndarray, plain: np.ndarray) -> None:
    assert np.array_equal(stylize(model, photo, style_scale=1.0), plain)


@pytest.mark.parametrize("scale", [2.0, 0.5])
def test_style_scale_runs_the_network_on_the_resized_photo(
    model: TransformerNet, photo: np.ndarray, plain: np.ndarray, scale: float
) -> None:
    got = stylize(model, photo, style_scale=scale)
    assert got.shape == photo.shape and got.dtype == np.uint8
    assert np.abs(got.astype(int) - plain).mean() > 5  # other strokes
    h, w = controls.working_size(H, W, scale, MIN_SIDE)
    small = controls.resize(photo, h, w)
    expected = controls.resize(stylize(model, small), H, W)
    assert np.array_equal(got, expected)


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "flag"),
    [
        ({"strength": -0.1}, "--strength"),
        ({"strength": 1.5}, "--strength"),
        ({"strength": float("nan")}, "--strength"),
        ({"style_scale": 0.0}, "--style-scale"),
        ({"style_scale": -1.0}, "--style-scale"),
        ({"style_scale": 100.0}, "--style-scale"),
        ({"style_scale": float("inf")}, "--style-scale"),
    ],
)
def test_bad_values_are_config_errors(values: dict[str, float], flag: str) -> None:
    with pytest.raises(ConfigError, match=flag) as info:
        InferenceOptions(**values)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


# --- the CLI ----------------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "stylekit", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def calibrated_file(tmp_path_factory: pytest.TempPathFactory, model: TransformerNet) -> Path:
    path = tmp_path_factory.mktemp("calibrated") / "model.safetensors"
    save_model(str(path), model, {"format": "stylekit", "style": "test"})
    return path


def test_cli_flags_give_the_stylizers_pixels(
    calibrated_file: Path, photo: np.ndarray, tmp_path: Path
) -> None:
    src, out = tmp_path / "photo.png", tmp_path / "out.png"
    Image.fromarray(photo).save(src)
    flags = ["--strength", "0.6", "--preserve-color", "--style-scale", "2", "--device", "cpu"]
    result = run_cli("stylize", "--model", str(calibrated_file), "--output", str(out), *flags, str(src))
    assert result.returncode == 0, result.stderr
    got = np.asarray(Image.open(out))
    from stylekit.nn.modelio import load_model

    loaded = load_model(str(calibrated_file)).model
    expected = stylize(loaded, photo, strength=0.6, preserve_color=True, style_scale=2.0)
    assert np.array_equal(got, expected)


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--strength", "2"], "error: --strength"), (["--style-scale", "0"], "error: --style-scale")],
)
def test_cli_bad_values_are_one_line(
    model_file: Path, tmp_path: Path, flags: list[str], message: str
) -> None:
    src = tmp_path / "photo.png"
    Image.fromarray(smooth_photo(16, 16)).save(src)
    result = run_cli(
        "stylize", "--model", str(model_file), "--output", str(tmp_path / "o.png"), *flags, str(src)
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr
