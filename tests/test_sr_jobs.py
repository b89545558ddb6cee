"""Super-resolution through the jobs as a user runs them: a few training steps of `jobs/train.py
--task sr` give a loadable SR model (checkpoints, previews, TensorBoard as for styles), and the
bulk job (`jobs/stylize.py`) upscales a small folder with every input accounted for. Also the
SR fields of TrainConfig. Real local Ray, tiny images, random VGG."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from test_train_job import job_env

from conftest import PYTHON, REPO
from stylekit.errors import ConfigError
from stylekit.nn.modelio import load_model
from stylekit.nn.sr import SRNet
from stylekit.train.config import TrainConfig

pytestmark = pytest.mark.ray


def test_sr_config_defaults_and_validation(tmp_path: Path) -> None:
    feature = TrainConfig(task="sr", data=str(tmp_path))
    assert feature.name == "sr_x4" and feature.style_weight == 0 and feature.tv_weight == 0.4
    pixel = TrainConfig(task="sr", factor=8, sr_loss="pixel", image_size=96, data=str(tmp_path))
    assert pixel.name == "sr_x8_pixel" and pixel.tv_weight == 0 and pixel.content_weight == 1
    for bad, message in (
        ({"factor": 3}, "--factor"),
        ({"sr_loss": "gan"}, "--sr-loss"),
        ({"image_size": 98}, "--image-size"),
        ({"factor": 8, "image_size": 32}, "--image-size"),
        ({"content_warmup": 5}, "--content-warmup"),
    ):
        with pytest.raises(ConfigError, match=message):
            TrainConfig(task="sr", data=str(tmp_path), **bad)
    with pytest.raises(ConfigError, match="--task"):
        TrainConfig(task="colour")


@pytest.fixture(scope="module")
def sr_model(tiny_train_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = tmp_path_factory.mktemp("sr-runs")
    args = [
        PYTHON, str(REPO / "jobs" / "train.py"), "--task", "sr", "--factor", "4", "--sr-loss", "feature",
        "--vgg-weights", "random", "--data", str(tiny_train_dir), "--output", str(runs),
        "--image-size", "32", "--batch-size", "2", "--max-steps", "3", "--checkpoint-every", "2",
        "--log-every", "1", "--num-workers", "1",
    ]  # fmt: skip
    result = subprocess.run(args, capture_output=True, text=True, env=job_env(), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    model = runs / "sr_x4" / "model.safetensors"
    assert result.stdout.strip().splitlines()[-1] == str(model)
    assert "step 3/3" in result.stderr + result.stdout
    run_dir = runs / "sr_x4"
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert sorted(p.name for p in (run_dir / "previews").iterdir()) == ["step_000002.jpg", "step_000003.jpg"]
    return model


def test_a_few_training_steps_give_a_loadable_sr_model(sr_model: Path) -> None:
    loaded = load_model(str(sr_model))
    assert isinstance(loaded.model, SRNet) and loaded.model.scale == 4
    meta = loaded.metadata
    assert (meta["task"], meta["factor"], meta["loss"], meta["steps"]) == ("sr", "4", "feature", "3")
    assert meta["data"] and meta["vgg_weights"] == "random:42" and "blur" in meta["degradation"]


def test_bulk_job_upscales_a_folder_and_accounts_for_every_input(sr_model: Path, tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    (src / "deep").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(src / "a.png")
    Image.fromarray(rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)).save(src / "deep" / "b.jpg")
    (src / "broken.png").write_bytes(b"not a png")
    args = [PYTHON, str(REPO / "jobs" / "stylize.py"), "--model", str(sr_model), "--input", str(src),
            "--output", str(out)]  # fmt: skip
    result = subprocess.run(args, capture_output=True, text=True, env=job_env(), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["ok"], summary["failed"], summary["skipped"]) == (2, 1, 0)
    assert Image.open(out / "a.png").size == (64, 48) and Image.open(out / "deep" / "b.jpg").size == (28, 36)
    rows = pq.read_table(summary["manifest"]).to_pylist()
    assert sorted(Path(r["input"]).name for r in rows) == ["a.png", "b.jpg", "broken.png"]
    assert {Path(r["input"]).name: r["status"] for r in rows}["broken.png"] == "failed"


def test_bulk_job_chains_a_style_model_then_the_sr_model(
    model_file: Path, sr_model: Path, tmp_path: Path
) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(src / "a.png")
    args = [PYTHON, str(REPO / "jobs" / "stylize.py"), "--model", str(model_file), "--then", str(sr_model),
            "--input", str(src), "--output", str(out), "--max-side", "30"]  # fmt: skip
    result = subprocess.run(args, capture_output=True, text=True, env=job_env(), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["ok"], summary["failed"]) == (1, 0)
    assert Image.open(out / "a.png").size == (120, 80)  # stylized at 30x20, then upscaled x4
    alone = subprocess.run(
        [*args[:4], "--input", str(src), "--output", str(tmp_path / "alone"), "--max-side", "30"],
        capture_output=True, text=True, env=job_env(), timeout=600,
    )  # fmt: skip
    assert json.loads(alone.stdout.strip().splitlines()[-1])["model_digest"] != summary["model_digest"]
