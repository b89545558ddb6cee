"""The models that ship in the package: each loads by name, matches its recorded checksum and
says how it was made; names work in every command; the quick start needs no network."""

from __future__ import annotations

import socket
import subprocess

import numpy as np
import pytest

from conftest import PYTHON, REPO
from stylekit.errors import StylekitError
from stylekit.infer.inference import InferenceOptions, Stylizer
from stylekit.nn import zoo
from stylekit.nn.modelio import load_model

SHIPPED = zoo.names()
STYLE_FIELDS = ("style", "steps", "image_size", "training_data", "vgg_weights", "loss_network",
                "content_weight", "style_weight", "tv_weight", "final_loss", "weights_sha256")  # fmt: skip


SR_FIELDS = ("task", "factor", "loss", "steps", "data", "training_data", "set5_psnr_y", "set14_psnr_y",
             "image_size", "batch_size", "weights_sha256")  # fmt: skip


def test_at_least_four_styles_ship() -> None:
    styles = [n for n in SHIPPED if zoo.index()[n]["task"] == "style"]
    assert len(styles) >= 4, styles


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_loads_matches_checksum_and_stylizes(name: str) -> None:
    zoo.verify(name)
    loaded = load_model(name)
    meta = loaded.metadata
    sr = meta.get("task") == "sr"
    for key in SR_FIELDS if sr else STYLE_FIELDS:
        assert meta.get(key), f"{name}: metadata lacks {key}"
    if not sr or meta["loss"] == "feature":
        assert meta["vgg_weights"] == "caffe"  # trained against the paper's loss network
    assert "train-mini" in meta["training_data"]
    photo = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    (out,) = Stylizer(loaded.model, InferenceOptions(device="cpu")).stylize([photo])
    assert out.dtype == np.uint8 and out.shape[2] == 3
    scale = int(meta["factor"]) if sr else 1
    assert out.shape[:2] == (40 * scale, 56 * scale)
    assert out.std() > 5  # a trained model paints something, not a flat black frame


def test_a_damaged_shipped_model_is_refused(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = SHIPPED[0]
    data = bytearray((zoo.models_dir() / zoo.index()[name]["file"]).read_bytes())
    data[-100] ^= 0xFF
    (tmp_path / zoo.index()[name]["file"]).write_bytes(bytes(data))
    (tmp_path / zoo.INDEX).write_text((zoo.models_dir() / zoo.INDEX).read_text())
    monkeypatch.setattr(zoo, "models_dir", lambda: tmp_path)
    with pytest.raises(StylekitError, match="damaged"):
        load_model(name)


def test_unknown_name_is_a_one_line_error(tmp_path) -> None:
    result = subprocess.run(
        [PYTHON, "-m", "stylekit", "stylize", "--model", "no_such_style", "--output",
         str(tmp_path / "o.jpg"), str(REPO / "stylekit/examples/content/chelsea.jpg")],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "shipped" in lines[0]
    assert "starry_night" in lines[0]


def test_stylize_cli_takes_a_shipped_name(tmp_path) -> None:
    out = tmp_path / "cat.png"
    result = subprocess.run(
        [PYTHON, "-m", "stylekit", "stylize", "--model", SHIPPED[0], "--max-side", "64", "--output",
         str(out), str(REPO / "stylekit/examples/content/chelsea.jpg")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(out) and out.stat().st_size > 0


def test_bulk_config_resolves_a_shipped_name_and_has_quick_start_defaults() -> None:
    from stylekit.bulk.config import BulkConfig

    config = BulkConfig()
    assert config.model == str(zoo.models_dir() / "starry_night.safetensors")
    assert config.output.endswith("starry_night") and config.input.endswith("content")


def test_quick_start_defaults_need_no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default loss network, style, data and model are all inside the package."""

    def refuse(self, address, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError(f"network access to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    from stylekit.bulk.config import BulkConfig
    from stylekit.train.config import TrainConfig
    from stylekit.train.ray_job import preflight

    assert preflight(TrainConfig()) == "caffe"
    load_model(BulkConfig().model)
