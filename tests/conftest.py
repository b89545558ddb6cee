"""Shared fixtures: tiny images, a seeded model file, and a real S3 server on loopback (moto)."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
TRAIN_MINI = SHARED / "train-mini"
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_train_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight small training photos (from shared/data/train-mini when present, else synthetic)."""
    out = tmp_path_factory.mktemp("train-tiny")
    sources = sorted(TRAIN_MINI.glob("*.png"))[:8] if TRAIN_MINI.is_dir() else []
    for i, src in enumerate(sources):
        img = Image.open(src).convert("RGB")
        img.thumbnail((96, 96))
        img.save(out / f"img{i:02d}.jpg", quality=90)
    rng = np.random.default_rng(0)
    for i in range(len(sources), 8):
        Image.fromarray(rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)).save(out / f"img{i:02d}.png")
    return out


@pytest.fixture(scope="session")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded, untrained stylekit model (no training needed to test inference paths)."""
    from stylekit.files.modelio import save_model
    from stylekit.nn.model import TransformerNet

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    save_model(str(path), TransformerNet(), {"format": "stylekit", "style": "test"})
    return path


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A real S3 endpoint (moto's server) on 127.0.0.1; yields its URL and sets the AWS
    environment (credentials, region, AWS_ENDPOINT_URL) for this process and children."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": url,
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield url
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def make_bucket(name: str) -> None:
    """Create a bucket on the moto server (fresh per test by name)."""
    import boto3

    boto3.client("s3").create_bucket(Bucket=name)


def upload_dir(local: Path, bucket: str, prefix: str) -> None:
    import boto3

    client = boto3.client("s3")
    for path in sorted(local.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(local).as_posix()}")


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
