"""No secret in anything a run prints or stores: the bulk job and `python -m stylekit stylize` run
for real on tiny photos served over HTTP behind basic authentication (the credentials in the
URL, which the server checks), with generated secrets holding '/', '@', ':' and '%', and every
line of their stdout and stderr, every string of the manifest, the report, the JSON summary and
every file under OUT scanned for any piece of the secret. Also the refusals that echo a location:
credentials in an s3:// URL, a bad --s3-endpoint."""

from __future__ import annotations

import base64
import functools
import http.server
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings
from PIL import Image

from conftest import PYTHON, REPO, free_port, leaks, secrets_

JOB = str(REPO / "jobs" / "stylize.py")
USER = "photographer"
NASTY = "wJalr/K7MD@ENG:bPx%2FRfi+CY"  # '/', '@', ':', a percent-escape, '+'


class _Served:
    """A folder served on loopback, answering only requests with the expected credentials."""

    def __init__(self, folder: Path):
        self.password = ""
        served = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                token = base64.b64encode(f"{USER}:{served.password}".encode()).decode()
                if self.headers.get("Authorization") != f"Basic {token}":
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                super().do_GET()

            do_HEAD = do_GET

        self.server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(folder))
        )
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, secret: str, path: str) -> str:
        return f"http://{USER}:{quote(secret, safe='')}@127.0.0.1:{self.port}/{path}"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Served]:
    root = tmp_path_factory.mktemp("served")
    rng = np.random.default_rng(3)
    for key in ("in/a.png", "in/d/b.png"):
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(root / key)
    (root / "in" / "broken.png").write_bytes(b"not a png")  # a failed row, with its error
    s = _Served(root)
    yield s
    s.server.shutdown()


def _run(*args: str) -> str:
    run = subprocess.run([PYTHON, *args], cwd=REPO, capture_output=True, text=True, timeout=600)
    return f"status {run.returncode}\n{run.stdout}\n{run.stderr}"


def _stored(out: Path) -> str:
    """Every string OUT holds: file names, text files, every string column of every part."""
    texts = []
    for path in sorted(out.rglob("*")):
        texts.append(str(path))
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            for name in table.column_names:
                texts += [str(v) for v in table.column(name).to_pylist()]
        elif path.suffix in (".json", ".html"):
            texts.append(path.read_text())
    return "\n".join(texts)


@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(secret=secrets_)
@example(secret=NASTY)
def test_no_secret_in_what_a_night_and_stylize_print_or_store(served: _Served, secret: str) -> None:
    served.password = secret
    out = Path(tempfile.mkdtemp(prefix="stylekit-secrets-"))
    night = _run(
        JOB,
        "--engine",
        "local",
        "--model",
        "starry_night",
        "--input",
        served.url(secret, "in"),
        "--output",
        str(out / "night"),
    )
    assert night.startswith("status 0") and '"ok": 2, "failed": 1' in night, night[-3000:]
    assert "http://***@127.0.0.1" in night  # the input is named, without its credentials
    signed = served.url(secret, f"in/a.png?X-Amz-Signature={quote(secret, safe='')}")
    one = _run(
        "-m", "stylekit", "stylize", "--model", "starry_night", "--output", str(out / "one.png"), signed
    )
    assert one.startswith("status 0") and (out / "one.png").is_file(), one[-3000:]
    printed = night + one  # (a log's own words, "WARNING", "NCHW", may hold a short piece)
    assert not leaks(secret, printed, shortest=6), printed[-3000:]
    stored = _stored(out)
    assert "_report.html" in stored and "_summary.json" in stored
    assert not leaks(secret, stored, shortest=6)


def test_refusals_that_name_a_location_name_it_without_its_secret(served: _Served, tmp_path: Path) -> None:
    secret = NASTY
    printed = [
        _run(JOB, "--input", f"s3://AKIAEXAMPLE:{secret}@bucket/in", "--output", str(tmp_path / "o1")),
        _run(JOB, "--input", str(tmp_path), "--output", "s3://b/o", "--s3-endpoint", f"admin:{secret}@minio:9000"),
        _run("-m", "stylekit", "stylize", "--model", "starry_night", "--output", str(tmp_path / "x.png"),
             f"http://{USER}:{secret}@127.0.0.1:{served.port}/in/a.png"),  # unescaped: not a URL that works
        _run("-m", "stylekit", "stylize", "--model", "starry_night", "--output", str(tmp_path / "y.png"),
             f"ftp://{USER}:{quote(secret, safe='')}@127.0.0.1:{free_port()}/in/a.png"),  # nothing listens
    ]  # fmt: skip
    for text in printed:
        assert not text.startswith("status 0"), text
        errors = [line for line in text.splitlines() if line.startswith("error:")]
        assert errors and "Traceback" not in text and "Exception ignored" not in text, text
        assert not leaks(secret, text, shortest=6), text
