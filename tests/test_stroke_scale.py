"""Strokes that do not shrink on large photos: the default stroke scale paints a photo much
larger than the model's `paint_side` as a pyramid (stylekit/infer/controls.py)."""

from __future__ import annotations

import numpy as np
import pytest

from stylekit.infer import controls
from stylekit.infer.inference import InferenceOptions, Stylizer
from stylekit.nn.modelio import load_model, paint_side_of


def test_pyramid_sides_start_at_the_paint_side_and_go_up_by_octaves() -> None:
    assert controls.pyramid_sides(256, 400, 256) == [(256, 400)]  # at the paint side: as it is
    assert controls.pyramid_sides(270, 400, 256) == [(270, 400)]  # within PAINT_SIDE_SLACK
    assert controls.pyramid_sides(338, 510, 256) == [(256, 386), (338, 510)]
    assert controls.pyramid_sides(1000, 1500, 256) == [(256, 384), (512, 768), (1000, 1500)]
    assert controls.pyramid_sides(3000, 4000, 256) == [
        (256, 341), (512, 683), (1024, 1365), (2048, 2731), (3000, 4000),
    ]  # fmt: skip
    # A thumbnail is painted enlarged to the paint side (and shrunk back by the Stylizer).
    assert controls.pyramid_sides(100, 150, 256) == [(256, 384)]


def test_compose_levels_keeps_each_levels_own_band() -> None:
    rng = np.random.default_rng(0)
    coarse = photo(16, 24)  # smooth: resampling down and up again nearly returns it
    up = controls.resize(coarse, 32, 48)
    # A fine level that is exactly the coarse one enlarged adds no detail of its own...
    same = controls.compose_levels([coarse, up])
    assert np.abs(same.astype(int) - up.astype(int)).mean() < 1
    # ...and a single level is returned as it is.
    assert np.array_equal(controls.compose_levels([coarse]), coarse)
    # The fine level's detail band survives at its weight: the result minus the enlarged coarse
    # level is the fine level's high-pass, scaled.
    fine = np.clip(up.astype(int) + rng.integers(-20, 21, up.shape), 0, 255).astype(np.uint8)
    detail = fine.astype(float) - controls.resize(controls.resize(fine, 16, 24), 32, 48).astype(float)
    for weight in (1.0, controls.DETAIL_WEIGHT):
        out = controls.compose_levels([coarse, fine], detail=weight).astype(float)
        assert np.corrcoef((out - up).ravel(), detail.ravel())[0, 1] > 0.9
        slope = ((out - up) * detail).sum() / (detail * detail).sum()
        assert slope == pytest.approx(weight, abs=0.1)
    assert np.array_equal(controls.compose_levels([coarse, fine], detail=0.0), up)


def test_paint_side_comes_from_the_model_file() -> None:
    assert paint_side_of({"paint_side": "300", "image_size": "128"}) == 300
    assert paint_side_of({"image_size": "128"}) == 256
    assert paint_side_of({"format": "reference-pth"}) is None
    assert load_model("starry_night").model.paint_side == 256


def photo(h: int, w: int) -> np.ndarray:
    """A smooth synthetic scene with edges: large shapes plus a little texture."""
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    rgb = np.stack([128 + 100 * np.sin(6 * x + 2 * y), 128 + 90 * np.cos(5 * y), 255 * (x > 0.5)], -1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def view(img: np.ndarray, short: int) -> np.ndarray:
    h, w = img.shape[:2]
    return controls.resize(img, short, round(w * short / h)).astype(float)


@pytest.fixture(scope="module")
def starry() -> Stylizer:
    model = load_model("starry_night").model
    model.paint_side = 32  # tiny photos stand in for large ones: the pyramid starts at 32 px
    return model


def test_the_same_painting_at_two_resolutions(starry) -> None:
    small, large = photo(48, 64), photo(192, 256)
    default = Stylizer(starry, InferenceOptions(device="cpu"))
    fixed = Stylizer(starry, InferenceOptions(device="cpu", style_scale=1))
    ours = [default.stylize([p])[0] for p in (small, large)]
    plain = [fixed.stylize([p])[0] for p in (small, large)]
    assert ours[1].shape == large.shape
    # Looked at the same size, the default's two results agree far better than the network's
    # own full-size runs, whose strokes shrink by 4x on the larger photo.
    ours_gap = np.abs(view(ours[0], 48) - view(ours[1], 48)).mean()
    plain_gap = np.abs(view(plain[0], 48) - view(plain[1], 48)).mean()
    assert ours_gap < 0.6 * plain_gap, (ours_gap, plain_gap)
    # At full size it keeps a full-resolution run's detail, not an enlarged small result.
    enlarged = controls.resize(ours[0], *large.shape[:2])

    def sharpness(img: np.ndarray) -> float:
        g = img.astype(float).mean(-1)
        return float(
            np.abs(4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]).mean()
        )

    assert sharpness(ours[1]) > 1.5 * sharpness(enlarged)


def test_a_thumbnail_is_painted_at_the_paint_side_and_shrunk_back(starry) -> None:
    thumb = photo(20, 28)
    default = Stylizer(starry, InferenceOptions(device="cpu")).stylize([thumb])[0]
    fixed = Stylizer(starry, InferenceOptions(device="cpu", style_scale=1))
    at_paint_side = fixed.stylize([controls.resize(thumb, 32, 45)])[0]
    assert default.shape == thumb.shape
    assert np.array_equal(default, controls.resize(at_paint_side, 20, 28))


def test_photos_at_the_paint_side_and_an_explicit_scale_are_the_networks_own_pixels(starry) -> None:
    img = photo(34, 48)  # within PAINT_SIDE_SLACK of 32: one level, the photo itself
    default = Stylizer(starry, InferenceOptions(device="cpu")).stylize([img])[0]
    fixed = Stylizer(starry, InferenceOptions(device="cpu", style_scale=1)).stylize([img])[0]
    assert np.array_equal(default, fixed)
