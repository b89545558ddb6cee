"""Shared fixtures: tiny images, a seeded model file, and a real S3 server on loopback (moto)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import strategies as st
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
    from stylekit.nn.model import TransformerNet
    from stylekit.nn.modelio import save_model

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
    try:
        with environment(env):
            yield url
    finally:
        server.stop()


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


class FlakyProxy:
    """A tiny threaded HTTP proxy on loopback in front of an S3 endpoint that fails a share of
    requests the ways a busy object store does: 503 SlowDown, or a connection reset (RST)
    before the request reaches the server (so a retried PUT is never written twice).

    `fail_rate` is the share of requests failed (seeded, so a run is repeatable); `faults`
    counts them by kind and `requests` counts every request seen."""

    SLOW_DOWN = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
        b"<Message>Please reduce your request rate.</Message></Error>"
    )

    def __init__(
        self, upstream: str, fail_rate: float, kinds: tuple[str, ...] = ("503", "reset"), seed: int = 0
    ):
        import http.server
        import random
        import threading
        from urllib.parse import urlparse

        self.upstream = urlparse(upstream)
        self.fail_rate, self.kinds = fail_rate, kinds
        self.rng, self.lock = random.Random(seed), threading.Lock()
        self.requests = 0
        self.faults: dict[str, int] = dict.fromkeys(kinds, 0)
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass  # trailers
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self) -> None:
                body = self._body()
                fault = proxy._draw()
                if fault == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    self.connection.close()
                    return
                if fault == "503":
                    self.send_response(503, "Slow Down")
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(proxy.SLOW_DOWN)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(proxy.SLOW_DOWN)
                    return
                self._forward(body)

            def _forward(self, body: bytes) -> None:
                import http.client

                hop = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "content-length"}
                headers = {k: v for k, v in self.headers.items() if k.lower() not in hop}
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=60)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                finally:
                    conn.close()
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in hop:
                        self.send_header(k, v)
                length = resp.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _draw(self) -> str | None:
        with self.lock:
            self.requests += 1
            if self.rng.random() >= self.fail_rate:
                return None
            kind = self.rng.choice(self.kinds)
            self.faults[kind] += 1
            return kind

    def __enter__(self) -> FlakyProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[str | None]:
    """A Google Cloud Storage endpoint on 127.0.0.1 (the gcp-storage-emulator package), with a
    bucket "gcs-test"; sets STORAGE_EMULATOR_HOST (which gcsfs follows) for this process and
    children. Yields None when the emulator or gcsfs is not installed."""
    try:
        import gcsfs  # noqa: F401
        from gcp_storage_emulator.server import create_server
    except ImportError:
        yield None
        return
    import logging

    logging.getLogger("gcsfs").setLevel(logging.ERROR)  # "could not determine bucket type": no ADC
    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket="gcs-test")
    server.start()
    url = f"http://127.0.0.1:{port}"
    try:
        with environment({"STORAGE_EMULATOR_HOST": url}):
            yield url
    finally:
        server.stop()


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set these variables for this process and its children while inside; restore after."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


AZURITE_KEY = (  # Azurite's published development account key (not a secret)
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def _azurite() -> str | None:
    """Azurite's blob server: $AZURITE_BLOB, `.ci/node` (where the README's test command puts
    it), or on PATH."""
    for candidate in (
        os.environ.get("AZURITE_BLOB"),
        str(REPO / ".ci" / "node" / "node_modules" / ".bin" / "azurite-blob"),
        shutil.which("azurite-blob"),
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="session")
def azure_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str | None]:
    """An Azure Blob Storage endpoint on 127.0.0.1 (Azurite, Microsoft's emulator, from npm)
    with a container "az-test"; sets AZURE_STORAGE_CONNECTION_STRING (which adlfs follows) for
    this process and children. Yields None when Azurite or adlfs is not installed."""
    import subprocess
    import time

    binary = _azurite()
    try:
        import adlfs  # noqa: F401
        from azure.storage.blob import BlobServiceClient
    except ImportError:
        binary = None
    if binary is None:
        yield None
        return
    port = free_port()
    cmd = [binary, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--silent", "--loose"]
    cmd += ["--skipApiVersionCheck", "--location", str(tmp_path_factory.mktemp("azurite"))]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/devstoreaccount1"
    conn = f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};BlobEndpoint={url};"
    deadline = time.monotonic() + 60
    while True:
        try:
            BlobServiceClient.from_connection_string(conn).create_container("az-test")
            break
        except Exception:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise
            time.sleep(0.3)
    try:
        with environment({"AZURE_STORAGE_CONNECTION_STRING": conn}):
            yield url
    finally:
        proc.terminate()  # Azurite may wait on clients' open connections to end: not for long
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def ray_cluster() -> Iterator[Any]:
    """A multi-node Ray on this machine (`ray.cluster_utils.Cluster`: each node its own raylet
    and object store), with a head that takes no work (num_cpus=0, as in cluster.yaml); a test
    adds worker nodes with `add_workers` and points jobs at `cluster.address` (RAY_ADDRESS).
    Generous start timeouts: node start is slow on a loaded 2-core machine."""
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    # A raylet registers with the GCS within 30 s by default; on a loaded 2-core machine it
    # can take longer, and the node then fails to start.
    wait_var = "RAY_raylet_start_wait_time_s"  # Ray's config names are case-sensitive
    before = os.environ.get(wait_var)
    os.environ[wait_var] = "120"
    # Another test's `ray start` may have left token auth in this process's environment: this
    # cluster and the jobs pointed at it (cluster_env) run without it, as one setting.
    auth = {
        k: os.environ.pop(k)
        for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
        if k in os.environ
    }
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False}, connect=False
    )
    try:
        yield cluster
    finally:
        cluster.shutdown()
        os.environ.update(auth)
        if before is None:
            os.environ.pop(wait_var, None)
        else:
            os.environ[wait_var] = before


def add_workers(cluster: Any, count: int, cpus: float) -> list[Any]:
    """Add `count` worker nodes of `cpus` CPUs each and wait until they are up."""
    nodes = [cluster.add_node(num_cpus=cpus, wait=False) for _ in range(count)]
    cluster.wait_for_nodes(timeout=180)
    return nodes


def cluster_env(cluster: Any, **extra: str) -> dict[str, str]:
    """The environment of a job submitted to `cluster` (never someone's own Ray)."""
    env = {**os.environ, "RAY_ADDRESS": cluster.address, "PYTHONUNBUFFERED": "1", **extra}
    env.pop("RAY_AUTH_MODE", None)
    return env


# Routine lines Ray prints that a test counting lines must not count.
RAY_ROUTINE = ("Found multiple active Ray instances", "Connecting to existing Ray cluster", "[repeated")


def stylekit_lines(text: str) -> list[str]:
    """The lines of a job's output that are not Ray's routine notices."""
    return [line for line in text.splitlines() if line.strip() and not any(r in line for r in RAY_ROUTINE)]


# Secrets as users have them: AWS keys hold '/' and '+', passwords '@', ':', '%' and more. Each
# holds upper-case letters; the text around them is lower case, so a piece of a secret seen in
# a line is a leak, not a coincidence.
SECRET_CHARS = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789/+=@:%!$*()~_-."
secrets_ = st.text(SECRET_CHARS, min_size=8, max_size=40).filter(
    lambda s: any(c.isupper() for c in s) and "***" not in s
)


def leaks(secret: str, text: str, shortest: int = 3) -> list[str]:
    """The pieces of `secret` (split at its punctuation; those of `shortest` characters or more
    with an upper-case letter) that `text` shows, percent-decoded or not, and the secret itself."""
    from urllib.parse import unquote

    texts = (text, unquote(text))  # a percent-encoded secret is as good as shown
    pieces = re.split(r"[^A-Za-z0-9]+", secret)
    found = [
        p for p in pieces if len(p) >= shortest and any(c.isupper() for c in p) and any(p in t for t in texts)
    ]
    return found + ([secret] if any(secret in t for t in texts) else [])
