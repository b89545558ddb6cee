"""Secrets inside exceptions never reach a log line or a manifest row (stylekit/redact.py is
the one helper every user-facing error path goes through)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from stylekit.bulk.driver import _Progress
from stylekit.bulk.layout import RunLayout
from stylekit.bulk.stages import STYLIZED, write_batch
from stylekit.files import storage
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
    table = write_batch(batch, layout, storage.StorageOptions(), 95, "digest")
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
