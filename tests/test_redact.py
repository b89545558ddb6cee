"""Secrets inside exceptions never reach a log line or a manifest row (stylekit/redact.py is
the one helper every user-facing error path goes through)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from stylekit.bulk.driver import _Progress
from stylekit.bulk.engines.ray_photos import STYLIZED, write_batch
from stylekit.bulk.engines.rows import RowContext
from stylekit.bulk.plan.layout import RunLayout
from stylekit.files import images, storage
from stylekit.redact import describe, redact, root_cause

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def _failure() -> BaseException:
    """A chained error as Ray and botocore make them: the secrets sit in the innermost cause."""
    inner = OSError(
        f"AccessDenied for key {SECRET}\n"
        "https://admin:hunter2@minio.local/b/a.png?X-Amz-Credential=AKIAEXAMPLE%2F20261202"
        "&X-Amz-Signature=deadbeefcafe&X-Amz-Security-Token=tok123 sig=azuresig"
    )
    try:
        try:
            raise inner
        except OSError as e:
            raise RuntimeError("task failed") from e
    except RuntimeError as outer:
        return outer


LEAKS = (SECRET, "hunter2", "deadbeefcafe", "AKIAEXAMPLE", "tok123", "azuresig")


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)


def test_root_cause_and_describe_mask_every_secret(secret_env: None) -> None:
    e = _failure()
    for text in (root_cause(e), describe(e.__cause__), redact(str(e.__cause__))):  # type: ignore[arg-type]
        assert not [leak for leak in LEAKS if leak in text], text
    assert "X-Amz-Signature=***" in root_cause(e)
    assert describe(e.__cause__).startswith("OSError: AccessDenied for key ***")  # type: ignore[arg-type]


def test_a_secret_in_a_write_failure_reaches_neither_the_manifest_nor_the_log(
    secret_env: None, tmp_path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def write_bytes(location: str, data: bytes, options: storage.StorageOptions) -> None:
        raise _failure().__cause__  # type: ignore[misc]

    monkeypatch.setattr(storage, "write_bytes", write_bytes)
    layout = RunLayout(str(tmp_path / "in"), str(tmp_path / "out"), "run")
    pixels = np.empty(1, dtype=object)
    pixels[0] = np.zeros((4, 4, 3), np.uint8)
    batch = {
        "key": np.array(["a.png"], dtype=object),
        "output_key": np.array(["a.png"], dtype=object),
        "input_bytes": np.array([10]),
        "status": np.array([STYLIZED], dtype=object),
        "error": np.array([""], dtype=object),
        "width": np.array([4]),
        "height": np.array([4]),
        "seconds": np.array([0.0]),
        "pixels": pixels,
    }
    context = RowContext(layout, storage.StorageOptions(), images.DecodeOptions(), 120.0, 95, "digest", 1)
    table = write_batch(batch, context)
    (error,) = table.column("error").to_pylist()
    assert error.startswith("writing failed: OSError: AccessDenied")
    assert not [leak for leak in LEAKS if leak in error], error
    with caplog.at_level(logging.INFO, logger="stylekit.bulk.driver"):
        progress = _Progress(total=1, every=0.0)
        progress.update(table)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "failed: " in logged and not [leak for leak in LEAKS if leak in logged], logged


def test_training_failures_go_through_the_redacting_root_cause() -> None:
    from stylekit.train import ray_job

    assert ray_job.root_cause is root_cause  # `training failed: ...` masks credentials as bulk does


# --- properties: no generated secret survives -------------------------------------------------

from urllib.parse import quote  # noqa: E402

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from conftest import leaks, secrets_  # noqa: E402
from stylekit.redact import one_line, remember, shown  # noqa: E402

hosts = st.sampled_from(["bucket", "minio.local", "127.0.0.1:9000", "photos-bucket", "host"])
paths = st.sampled_from(["in", "in/a.jpg", "nights/2026/p.png", "", "a@b/c.jpg"])


@st.composite
def lines_with_a_secret(draw: st.DrawFn) -> tuple[str, str]:
    secret = draw(secrets_)
    host, path = draw(hosts), draw(paths)
    user = draw(st.sampled_from(["akiaexample", "bob", "admin", ""]))
    scheme = draw(st.sampled_from(["s3", "gs", "az", "http", "https", "ftp", "sftp", "abfs", "webdav"]))
    escaped = quote(secret, safe="")
    credentials = f"{user}:{draw(st.sampled_from([secret, escaped]))}" if user else escaped
    shapes = [
        f"{scheme}://{credentials}@{host}/{path}",
        f"{credentials}@{host}" if user else f"admin:{secret}@{host}",  # a bare endpoint
        f"https://{host}/{path}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={escaped}&X-Amz-Signature={escaped}",
        f"https://acct.blob.core.windows.net/c/{path}?sv=2024-11-04&se={escaped}&sp=r&sig={escaped}",
        f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={escaped};EndpointSuffix=core.windows.net",
        f"https://{host}/{path}?access_token={escaped}",
    ]
    shape = draw(st.sampled_from(shapes))
    frame = draw(
        st.sampled_from(
            [
                "{}",
                "cannot read {}: 403 forbidden",
                "error: '{}' not found",
                'failed: {"input": "{}", "status": "failed"}',
                "--s3-endpoint {} needs a scheme",
                "(url={}, retrying)",
            ]
        )
    )
    return secret, frame.replace("{}", shape, 1)


@settings(max_examples=300, deadline=None)
@given(case=lines_with_a_secret())
def test_no_generated_secret_survives_redaction(case: tuple[str, str]) -> None:
    secret, line = case
    for out in (redact(line), shown(line), describe(OSError(line)), root_cause(RuntimeError(line))):
        assert not leaks(secret, out), (line, out)


@settings(max_examples=100, deadline=None)
@given(secret=secrets_, host=hosts)
def test_a_secret_of_the_command_line_is_masked_in_any_spelling(secret: str, host: str) -> None:
    remember(["jobs/stylize.py", "--input", f"s3://akiaexample:{secret}@{host}/in"])
    for spelling in (secret, quote(secret, safe=""), json.dumps(secret)[1:-1]):
        assert not leaks(secret, redact(f"the store said: bad password {spelling}!"))


def test_one_line_escapes_what_would_split_a_line() -> None:
    assert one_line("a\nb\rc\x1bd\te") == "a\\nb\\rc\\x1bd\te"
    assert "\n" not in shown("cannot read /in/a\nb.jpg")


def test_what_is_not_a_secret_stays() -> None:
    for text in (
        "s3://bucket/in/me@home.jpg",
        "http://127.0.0.1:9000/bucket/b.jpg",
        "error: 3 of 12 inputs failed (see above)",
        "12:30:01 INFO stylekit.bulk.driver: stylized 10/12",
    ):
        assert redact(text) == text
