"""`python -m stylekit export`: ONNX and TorchScript files with dynamic batch, height and width
that give stylekit's pixels and carry the model's metadata."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_controls import calibrated_model, smooth_photo

from conftest import PYTHON, REPO
from stylekit.errors import StylekitError
from stylekit.infer import export
from stylekit.infer.inference import InferenceOptions, Stylizer
from stylekit.nn.modelio import load_model, save_model

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")

SIZES = [(38, 53), (64, 40)]  # (H, W): padded to (40, 56) inside the graph; no padding


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "stylekit", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def calibrated_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("export") / "model.safetensors"
    save_model(str(path), calibrated_model(), {"format": "stylekit", "style": "export-test"})
    return path


@pytest.fixture(scope="module")
def reference(calibrated_file: Path) -> dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]:
    """(H, W) -> (B, H, W, 3) photos and the Stylizer's (B, H, W, 3) uint8 pixels for them."""
    stylizer = Stylizer(load_model(str(calibrated_file)).model, InferenceOptions(device="cpu"))
    out = {}
    for i, (h, w) in enumerate(SIZES):
        photos = np.stack([smooth_photo(h, w, seed=10 * i + j) for j in range(i + 1)])  # batch 1, 2
        out[(h, w)] = photos, np.stack(stylizer.stylize(list(photos)))
    return out


def to_pixels(y: np.ndarray) -> np.ndarray:
    """(B, 3, H, W) float graph output -> (B, H, W, 3) uint8, clamped and truncated as the Stylizer."""
    return np.clip(y, 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


def to_input(photos: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(photos.transpose(0, 3, 1, 2), dtype=np.float32)


def test_exportable_net_pads_exactly_as_transformer_net() -> None:
    model = calibrated_model(1)
    net = export.ExportableNet(model).eval()
    with torch.no_grad():
        for h, w in [(5, 7), (8, 8), (13, 30), (36, 52)]:
            x = torch.rand(1, 3, h, w) * 255
            assert torch.equal(net(x), model(x)), (h, w)


def test_onnx_round_trip(calibrated_file: Path, reference: dict, tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "model.onnx"
    result = run_cli("export", "--model", str(calibrated_file), "--output", str(out))  # format: .onnx
    assert result.returncode == 0, result.stderr
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for (h, w), (photos, expected) in reference.items():
        (y,) = session.run(None, {export.INPUT_NAME: to_input(photos)})
        assert y.shape == (len(photos), 3, h, w)
        assert psnr(to_pixels(y), expected) > 40, (h, w)
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert props["style"] == "export-test"
    assert props["source_model_digest"] == load_model(str(calibrated_file)).digest
    assert "H and W >= 5" in props["input"]


def test_torchscript_round_trip(calibrated_file: Path, reference: dict, tmp_path: Path) -> None:
    out = tmp_path / "model.pt"
    result = run_cli(
        "export", "--model", str(calibrated_file), "--format", "torchscript", "--output", str(out)
    )
    assert result.returncode == 0, result.stderr
    extra = {export.METADATA_FILE: ""}
    module = torch.jit.load(str(out), _extra_files=extra)
    for (h, w), (photos, expected) in reference.items():
        with torch.no_grad():
            y = module(torch.from_numpy(to_input(photos))).numpy()
        assert y.shape == (len(photos), 3, h, w)
        assert psnr(to_pixels(y), expected) > 40, (h, w)
    metadata = json.loads(extra[export.METADATA_FILE])
    assert metadata["style"] == "export-test" and "source_model_digest" in metadata


def test_torchscript_bytes_load_from_memory() -> None:
    data = export.export_bytes(calibrated_model(2), "torchscript", {"style": "x"})
    extra = {export.METADATA_FILE: ""}
    module = torch.jit.load(io.BytesIO(data), _extra_files=extra)
    assert json.loads(extra[export.METADATA_FILE]) == {"style": "x"}
    assert module(torch.rand(1, 3, 9, 11) * 255).shape == (1, 3, 9, 11)


def test_missing_onnx_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx -> ImportError
    with pytest.raises(StylekitError, match=r"pip install 'stylekit\[export\]'") as info:
        export.export_bytes(calibrated_model(3), "onnx", {})
    assert "\n" not in str(info.value)


def test_unknown_extension_without_format_is_one_line(model_file: Path, tmp_path: Path) -> None:
    result = run_cli("export", "--model", str(model_file), "--output", str(tmp_path / "model.bin"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --format is required"), result.stderr
