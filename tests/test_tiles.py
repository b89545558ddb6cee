"""Tiled inference: the whole-image result, in bands, inside a memory budget."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from stylekit.errors import ConfigError
from stylekit.files import images
from stylekit.infer import memory, tiles
from stylekit.infer.fastpath import FastTransformer
from stylekit.infer.inference import InferenceOptions, Stylizer
from stylekit.nn.modelio import load_model


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def net() -> FastTransformer:
    return FastTransformer(load_model("starry_night").model)


def photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A photo-like image: smooth gradients and blobs plus some texture (not pure noise, whose
    statistics would hide a wrong normalisation)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / width, y / height, 0.5 + 0.5 * np.sin(x / 7 + y / 11)], axis=-1) * 200
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


def whole(net: FastTransformer, image: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        y = net(torch.from_numpy(image).permute(2, 0, 1)[None].float())
    return torch.clamp(y, 0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()


@pytest.mark.parametrize("size", [(70, 94), (64, 64), (37, 130)])
@pytest.mark.parametrize("max_rows", [1, 5, None])
def test_tiled_equals_whole_image(net, tmp_path, size, max_rows):
    """Bands of any height (1 row included: every halo mirrored across band edges) and sizes
    that are not multiples of 4 give the whole image's pixels up to float rounding."""
    image = photo(*size)
    tiled = tiles.stylize_tiled(net, image, 1 << 30, tile_dir=str(tmp_path), max_rows=max_rows)
    assert tiled.shape == image.shape
    assert psnr(tiled, whole(net, image)) > 60


def test_scratch_files_give_the_same_pixels_and_are_removed(net, tmp_path):
    """A budget too small to keep activations in memory spills them to scratch files."""
    image = photo(96, 160, seed=1)
    run = tiles.TiledRun(net, 4 << 20, tmp_path, torch.device("cpu"))
    tiled = run.run(image)
    run.close()
    assert run.spilled > 0
    assert list(tmp_path.iterdir()) == []
    assert psnr(tiled, whole(net, image)) > 60


def test_independent_tiles_would_show_seams(net):
    """The check above can fail: tiles normalised with their own statistics differ visibly."""
    image = photo(128, 128, seed=2)
    naive = np.concatenate([whole(net, image[:64]), whole(net, image[64:])])
    assert psnr(naive, whole(net, image)) < 35


def test_a_budget_too_small_for_one_band_is_a_clear_error(net, tmp_path):
    with pytest.raises(ConfigError, match="raise --max-memory"):
        tiles.stylize_tiled(net, photo(64, 64), 1000, tile_dir=str(tmp_path))


def test_stylizer_tiles_what_does_not_fit_and_matches_untiled(tmp_path, caplog):
    model = load_model("starry_night").model
    image = photo(300, 420, seed=3)
    untiled = Stylizer(model, InferenceOptions(max_memory=64 << 30)).stylize([image])[0]
    # A budget that leaves ~40 MB above what the process holds: the image runs tiled.
    budget = memory.resident_bytes() + 300 * 420 * 3 + (96 << 20) + (40 << 20)
    with caplog.at_level("INFO", logger="stylekit.infer"):
        tiled = Stylizer(model, InferenceOptions(max_memory=budget, tile_dir=str(tmp_path))).stylize([image])[
            0
        ]
    assert "tiled to stay within the memory budget" in caplog.text
    assert psnr(tiled, untiled) > 40


def test_controls_apply_to_tiled_images(tmp_path):
    model = load_model("starry_night").model
    image = photo(200, 260, seed=4)
    opts = dict(strength=0.5, preserve_color=True, style_scale=0.5)
    untiled = Stylizer(model, InferenceOptions(max_memory=64 << 30, **opts)).stylize([image])[0]
    budget = memory.resident_bytes() + (96 << 20) + (30 << 20)
    tiled = Stylizer(model, InferenceOptions(max_memory=budget, tile_dir=str(tmp_path), **opts)).stylize(
        [image]
    )[0]
    assert psnr(tiled, untiled) > 40


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2G", 2 << 30), ("1.5GB", 3 << 29), ("1500M", 1500 << 20), ("800MiB", 800 << 20), ("4096", 4096)],
)
def test_parse_size(text, expected):
    assert memory.parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "-1G", "0", "2X"])
def test_parse_size_refuses_nonsense(text):
    with pytest.raises(ConfigError, match="--max-memory"):
        memory.parse_size(text)


def _peak_rss_of(args: list[str]) -> tuple[subprocess.CompletedProcess, int]:
    """Run a child process and return it with its peak resident memory in bytes."""
    code = (
        "import resource, subprocess, sys; "
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
        "sys.stderr.write(p.stderr); sys.exit(p.returncode)"
    )
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600)
    return done, int(done.stdout.strip().splitlines()[-1]) * 1024


def test_a_large_photo_stays_inside_the_budget(tmp_path):
    """A 2400x2400 photo (untiled it would take about 6 GB above the process's own) through the
    real command with --max-memory 1.2G: done, inside the budget, the same picture."""
    source = tmp_path / "big.png"
    source.write_bytes(images.encode(photo(2400, 2400, seed=5), "png"))
    out = tmp_path / "out.png"
    done, peak = _peak_rss_of(
        [sys.executable, "-m", "stylekit", "stylize", "--model", "starry_night", "--max-memory", "1.2G",
         "--tile-dir", str(tmp_path), "--output", str(out), str(source)]
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "tiled" in done.stderr
    assert peak < 1.2 * (1 << 30), f"peak {peak / 2**30:.2f} GB"
    assert images.decode(out.read_bytes()).shape == (2400, 2400, 3)


def test_max_memory_below_what_the_process_holds_is_a_one_line_error(tmp_path):
    source = tmp_path / "small.png"
    source.write_bytes(images.encode(photo(40, 50), "png"))
    done = subprocess.run(
        [sys.executable, "-m", "stylekit", "stylize", "--model", "starry_night", "--max-memory", "100M",
         "--output", str(tmp_path / "o.png"), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "--max-memory" in done.stderr
