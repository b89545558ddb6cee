"""Contact sheets: `stylekit.infer.sheet` and `python -m stylekit sheet` (tiny cells, seeded models)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import PYTHON, REPO
from stylekit.files import images
from stylekit.infer import sheet
from stylekit.infer.inference import InferenceOptions, Stylizer
from stylekit.nn.model import TransformerNet
from stylekit.nn.modelio import load_model, save_model

CELL = 32
GAP = sheet.GAP


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "stylekit", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two seeded, untrained models: one whose style is a bundled image on another machine's
    path, one whose style cannot be found anywhere."""
    folder = tmp_path_factory.mktemp("sheet-models")
    paths = []
    for seed, style in ((1, "/home/someone/styles/udnie.jpg"), (2, "/nowhere/my_own_style.png")):
        torch.manual_seed(seed)
        net = TransformerNet()
        with torch.no_grad():  # a visible, non-black output from an untrained net
            net.deconv3.conv2d.bias.fill_(60.0 * seed)
        path = folder / f"seed{seed}" / "model.safetensors"
        save_model(str(path), net, {"format": "stylekit", "style": style})
        paths.append(path)
    return paths


@pytest.fixture()
def photos(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(3)
    a = tmp_path / "a.png"
    Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)).save(a)
    b = tmp_path / "b.png"
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(b)
    return [a, b]


def cell_at(pixels: np.ndarray, row: int, col: int) -> np.ndarray:
    y, x = GAP + row * (CELL + GAP), GAP + col * (CELL + GAP)
    return pixels[y : y + CELL, x : x + CELL]


def test_contact_sheet_has_a_header_row_and_a_row_per_model(models: list[Path], photos: list[Path]) -> None:
    loaded = [load_model(str(p)) for p in models]
    pictures = [np.asarray(Image.open(p).convert("RGB")) for p in photos]
    rows = [
        sheet.SheetModel("first", loaded[0].model, sheet.style_thumbnail(loaded[0].metadata)),
        sheet.SheetModel("second", loaded[1].model, None),
    ]
    out = sheet.contact_sheet(pictures, rows, cell=CELL, options=InferenceOptions(device="cpu"))
    # 3 rows (originals + 2 models) x 3 columns (labels + 2 photos), GAP between and around.
    assert out.dtype == np.uint8
    assert out.shape == (3 * CELL + 4 * GAP, 3 * CELL + 4 * GAP, 3)
    resized = [images.resize_longest(p, CELL) for p in pictures]
    assert [r.shape[:2] for r in resized] == [(19, 32), (32, 32)]
    for col, expected in enumerate(resized, start=1):
        assert np.array_equal(cell_at(out, 0, col), sheet.fit_cell(expected, CELL))
    for row, model in enumerate(loaded, start=1):
        stylized = Stylizer(model.model, InferenceOptions(device="cpu")).stylize(resized)
        for col, expected in enumerate(stylized, start=1):
            assert np.array_equal(cell_at(out, row, col), sheet.fit_cell(expected, CELL))
    assert not np.array_equal(cell_at(out, 1, 1), cell_at(out, 2, 1))  # two models, two looks
    # The label column: text on every row, and the first model's style thumbnail below its name.
    labels = [cell_at(out, r, 0) for r in range(3)]
    assert all((np.abs(c.astype(int) - sheet.BACKGROUND).sum(axis=2) > 0).any() for c in labels)
    below_text = [
        (np.abs(c[CELL // 2 :].astype(int) - sheet.BACKGROUND).sum(axis=2) > 0).mean() for c in labels
    ]
    assert below_text[1] > 0.1 and below_text[2] == 0 and below_text[0] == 0


def test_style_thumbnail_tries_the_path_then_the_bundled_style(tmp_path: Path) -> None:
    own = tmp_path / "mine.png"
    Image.fromarray(np.full((20, 30, 3), 200, np.uint8)).save(own)
    assert sheet.style_thumbnail({"style": str(own)}).shape == (20, 30, 3)
    bundled = sheet.style_thumbnail({"style": "/other/machine/wave.jpg"})
    assert bundled is not None and bundled.ndim == 3
    by_name = sheet.style_thumbnail({"style": "s3://gone/x.jpg", "style_name": "udnie"})
    assert by_name is not None and by_name.shape[2] == 3
    assert sheet.style_thumbnail({"style": "/nowhere/unknown_style.jpg"}) is None
    assert sheet.style_thumbnail({}) is None


def test_model_label() -> None:
    assert sheet.model_label("runs/wave/model.safetensors") == "wave"
    assert sheet.model_label("starry_night") == "starry_night"
    assert sheet.model_label("/models/udnie.pth") == "udnie"
    assert sheet.model_label("s3://bucket/runs/mosaic/model.safetensors") == "mosaic"


def test_cli_writes_the_sheet_and_prints_its_path_last(
    models: list[Path], photos: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "sheet.png"
    args = ["sheet", "--cell", str(CELL), "--device", "cpu", "--output", str(out)]
    result = run_cli(*args, "--model", str(models[0]), "--model", str(models[1]), *map(str, photos))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(out)
    got = np.asarray(Image.open(out))
    assert got.shape == (3 * CELL + 4 * GAP, 3 * CELL + 4 * GAP, 3)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--output", "{tmp}/s.jpg", "{tmp}/missing.jpg"], "missing.jpg: not found"),
        (["--output", "{tmp}/s.gif", "{photo}"], "must end in .jpg, .jpeg, .png or .webp"),
    ],
)
def test_cli_errors_are_one_line(
    extra: list[str], message: str, models: list[Path], photos: list[Path], tmp_path: Path
) -> None:
    args = [a.format(tmp=tmp_path, photo=photos[0]) for a in extra]
    result = run_cli("sheet", "--model", str(models[0]), *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr
    assert not list(tmp_path.glob("s.*"))
