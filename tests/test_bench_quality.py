"""benchmarks/bench_quality.py (feed-forward vs Gatys) runs end to end in its quick mode and
prints its table, summary and side-by-side image; benchmarks/bench_parity.py's in-process runs
find stylekit's training step equal to the reference's (its Ray Train runs: not run here)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import torch
from PIL import Image

from conftest import PYTHON, REPO
from stylekit.nn.model import TransformerNet
from stylekit.nn.modelio import save_model

STYLE = REPO / "stylekit" / "examples" / "styles" / "starry_night.jpg"
CONTENT = REPO / "stylekit" / "examples" / "content"


def run_benchmark(script: str, *args: str) -> str:
    """Run benchmarks/SCRIPT with ARGS; its standard output, after checking it succeeded."""
    result = subprocess.run(
        [PYTHON, str(REPO / "benchmarks" / script), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_quick_part1(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = tmp_path / "tiny.safetensors"
    metadata = {
        "vgg_weights": "caffe",
        "content_weight": "1.0",
        "style_weight": "5.0",
        "tv_weight": "0.4",
        "style": "/nonexistent/starry_night.jpg",  # not here: falls back to the examples by style_name
        "style_name": "starry_night",
    }
    save_model(str(model), TransformerNet(), metadata)
    photos = sorted(p for p in CONTENT.glob("*.jpg"))[:1]
    out = tmp_path / "out"
    text = run_benchmark(
        "bench_quality.py", "--quick", "--model", str(model), "--photos", ",".join(map(str, photos)),
        "--out", str(out), "--device", "cpu",
    )  # fmt: skip
    assert "| photo | method | content | style | tv | total | seconds |" in text
    assert "| feed-forward |" in text and "| Gatys 2 |" in text and "| Gatys 5 |" in text
    assert "starry_night.jpg" in text  # the fallback style
    assert "- overall (1 photo(s)): feed-forward total" in text
    assert "Parity" not in text  # parity is bench_parity.py's
    png = out / f"{photos[0].stem}.png"
    assert png.is_file()
    width, height = Image.open(png).size
    assert width > 4 * 48 and height > 0


def test_stylekit_training_step_is_the_reference_step_bit_for_bit() -> None:
    """benchmarks/bench_parity.py --no-ray: same init, same batches, fp32: stylekit's
    train_step and the reference loop's step give the same loss at every step, to the last bit."""
    text = run_benchmark(
        "bench_parity.py", "--no-ray", "--steps", "3", "--image-size", "32", "--log-every", "3",
        "--max-photos", "1", "--size", "48",
        # The bundled photos: the default training and held-out folders live in ../shared,
        # which a user's clone does not have.
        "--data", str(CONTENT), "--photos", str(CONTENT),
    )  # fmt: skip
    assert "bit for bit: yes" in text
