"""`python -m stylekit stylize`: one file, several into a folder, formats, and one-line errors."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import PYTHON, REPO
from stylekit.infer.inference import InferenceOptions, Stylizer
from stylekit.nn.modelio import load_model


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "stylekit", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


@pytest.fixture()
def photos(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(5)
    a = tmp_path / "a.png"
    Image.fromarray(rng.integers(0, 256, (30, 41, 3), dtype=np.uint8)).save(a)
    b = tmp_path / "b.jpg"
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(b)
    return [a, b]


def test_one_input_writes_the_output_file_with_the_same_pixels(
    model_file: Path, photos: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "out.png"
    result = run_cli("stylize", "--model", str(model_file), "--output", str(out), str(photos[0]))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(out)
    got = np.asarray(Image.open(out))
    assert got.shape == (30, 41, 3)
    expected = Stylizer(load_model(str(model_file)).model, InferenceOptions(device="cpu")).stylize(
        [np.asarray(Image.open(photos[0]).convert("RGB"))]
    )[0]
    assert np.array_equal(got, expected)


def test_several_inputs_go_to_a_folder_named_after_each(
    model_file: Path, photos: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "styled"
    result = run_cli(
        "stylize", "--model", str(model_file), "--output", str(out), "--format", "jpg", *map(str, photos)
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg", "b.jpg"]
    assert Image.open(out / "a.jpg").size == (41, 30)


def test_default_format_is_the_inputs_own(model_file: Path, photos: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "styled"
    assert (
        run_cli("stylize", "--model", str(model_file), "--output", str(out), *map(str, photos)).returncode
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.jpg"]


def test_a_bad_input_is_one_line_and_the_rest_still_run(
    model_file: Path, photos: list[Path], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    out = tmp_path / "styled"
    result = run_cli("stylize", "--model", str(model_file), "--output", str(out), str(bad), str(photos[0]))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert any(line.startswith(f"error: {bad}: cannot decode image") for line in result.stderr.splitlines())
    assert (out / "a.png").exists()


@pytest.mark.parametrize(
    "model_bytes, message",
    [(b"junk", "neither a safetensors model nor a plain PyTorch state dict"), (None, "not found")],
)
def test_bad_model_file_is_a_one_line_error(
    model_bytes: bytes | None, message: str, photos: list[Path], tmp_path: Path
) -> None:
    model = tmp_path / "m.pth"
    if model_bytes is not None:
        model.write_bytes(model_bytes)
    result = run_cli("stylize", "--model", str(model), "--output", str(tmp_path / "o.png"), str(photos[0]))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--quality", "0", "error: --quality must be 1-100 (got 0)"),
        ("--max-side", "0", "error: --max-side must be >= 1 (got 0)"),  # was a ValueError traceback
        ("--max-memory", "lots", "error: --max-memory takes a size such as 2G, 1500M or 1.5GB (got 'lots')"),
        ("--batch-size", "0", "error: --batch-size must be >= 1 (got 0)"),
    ],
)
def test_bad_flag_value_is_a_one_line_error(
    flag: str, value: str, message: str, model_file: Path, photos: list[Path], tmp_path: Path
) -> None:
    result = run_cli(
        "stylize",
        "--model",
        str(model_file),
        "--output",
        str(tmp_path / "o.png"),
        flag,
        value,
        str(photos[0]),
    )
    assert result.returncode == 2 and result.stderr.strip() == message
    result = run_cli(
        "stylize", "--model", str(model_file), "--output", "o.png", "--batch-size", "x", str(photos[0])
    )
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1


def test_stylizer_matches_the_model_for_each_size_group() -> None:
    torch.manual_seed(0)
    from stylekit.nn.model import TransformerNet

    model = TransformerNet().eval()
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, s, dtype=np.uint8) for s in [(8, 12, 3), (20, 9, 3), (8, 12, 3)]]
    outs = Stylizer(model, InferenceOptions(device="cpu", max_batch=1)).stylize(imgs)
    for img, out in zip(imgs, outs, strict=True):
        with torch.no_grad():
            y = model(torch.from_numpy(img).permute(2, 0, 1)[None].float())[0]
        assert np.array_equal(out, y.clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy())


def test_fast_exit_keeps_the_exit_code_and_runs_atexit_handlers() -> None:
    """`python -m stylekit` ends without the interpreter's teardown (stylekit.cli.exit_now),
    but its status, its buffered output and atexit handlers (logging, temporary files) stay."""
    code = (
        "import atexit, sys\n"
        "from stylekit.cli import run_main\n"
        "atexit.register(lambda: print('atexit ran'))\n"
        "def main():\n"
        "    sys.stdout.write('buffered')\n"
        "    return 3\n"
        "run_main(main, fast_exit=True)\n"
    )
    result = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 3
    assert result.stdout == "bufferedatexit ran\n"
