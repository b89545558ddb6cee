"""What a night returns (stylekit/exitcodes.py), the job script run for each case: a bad flag
or value and a refused setting (USAGE), another run's lease (LEASE_HELD), SIGTERM and SIGINT
while waiting for it (INTERRUPTED), a store that never answers (RUN_FAILED), a finished night
with a broken input (OK) and the same with --strict (INPUTS_FAILED). A stall (STALLED) is run
on a multi-node cluster in tests/test_cluster.py. Only the last case starts Ray."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import PYTHON, REPO
from stylekit import exitcodes
from stylekit.bulk.plan.lease import LEASE_FILE, LeaseRecord

JOB = str(REPO / "jobs" / "stylize.py")


def job_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_ADDRESS="local", STYLEKIT_LOG_LEVEL="INFO", PYTHONUNBUFFERED="1")
    return env


def photos(folder: Path, n: int = 2, broken: int = 0) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    for i in range(broken):
        (folder / f"broken{i}.png").write_bytes(b"not a png")
    return folder


def job(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, JOB, *args], env=job_env(), capture_output=True, text=True, timeout=timeout
    )


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def hold_lease(out: Path, run_id: str = "night-before") -> None:
    """A live lease on `out`, as a run still going on another host would hold it."""
    now = time.time()
    record = LeaseRecord(run_id, uuid.uuid4().hex, "other-host", 4242, now - 60, now, now + 600, 600.0)
    (out / "_manifest").mkdir(parents=True, exist_ok=True)
    (out / "_manifest" / LEASE_FILE).write_bytes(record.to_bytes())


def test_the_codes_are_distinct_and_documented() -> None:
    codes = [v for k, v in vars(exitcodes).items() if k.isupper() and isinstance(v, int)]
    assert len(codes) == len(set(codes)) == len(exitcodes.MEANINGS)
    nightly = (REPO / "docs" / "nightly.md").read_text()
    bulk = (REPO / "docs" / "bulk.md").read_text()
    readme = (REPO / "README.md").read_text()
    for code in codes:
        assert re.search(rf"^\| `{code}` \|", nightly, re.M), f"docs/nightly.md: no row for exit {code}"
        assert re.search(rf"^\| `{code}` \|", bulk, re.M), f"docs/bulk.md: no row for exit {code}"
        assert f"`{code}`" in readme, f"README: exit status {code} not documented"


def test_a_bad_flag_or_value_is_usage(tmp_path: Path) -> None:
    for args in (["--no-such-flag"], ["--lease-wait", "-1"], ["--lease-wait", "soon"]):
        run = job(*args, "--output", str(tmp_path / "out"), timeout=120)
        assert run.returncode == exitcodes.USAGE, run.stderr
        assert len(run.stderr.strip().splitlines()) == 1, run.stderr


def test_a_refused_setting_is_usage(tmp_path: Path, model_file: Path) -> None:
    inp, out = photos(tmp_path / "in"), tmp_path / "out"
    (out / "_manifest").mkdir(parents=True)
    (out / "_manifest" / "_outputs.json").write_text(json.dumps({"model_digest": "another-model"}))
    run = job("--model", str(model_file), "--input", str(inp), "--output", str(out))
    assert run.returncode == exitcodes.USAGE, run.stderr[-2000:]
    (line,) = errors(run.stderr)
    assert "--overwrite" in line and "Traceback" not in run.stderr
    assert not (out / "_manifest" / LEASE_FILE).exists(), "the lease was not released"


def test_another_runs_lease_is_lease_held(tmp_path: Path, model_file: Path) -> None:
    inp, out = photos(tmp_path / "in"), tmp_path / "out"
    hold_lease(out)
    run = job("--model", str(model_file), "--input", str(inp), "--output", str(out), "--lease-wait", "1")
    assert run.returncode == exitcodes.LEASE_HELD, run.stderr[-2000:]
    (line,) = errors(run.stderr)
    assert "night-before" in line and "other-host" in line and "--take-lease" in line
    assert "waiting for the lease" in run.stderr
    assert not list((out / "_manifest").glob("run=*")), "a refused run wrote a manifest"
    assert not list(out.glob("*.png"))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_waiting_is_interrupted(tmp_path: Path, model_file: Path, sig: int) -> None:
    inp, out = photos(tmp_path / "in"), tmp_path / "out"
    hold_lease(out)
    cmd = [PYTHON, JOB, "--model", str(model_file), "--input", str(inp), "--output", str(out)]
    # SIGINT as a terminal sends it: a suite started in the background (`pytest &`) passes
    # its children SIGINT ignored, and Python then keeps it ignored.
    proc = subprocess.Popen(
        [*cmd, "--lease-wait", "300"],
        env=job_env(),
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    lines: list[str] = []
    waiting = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "waiting for the lease" in line:
                waiting.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert waiting.wait(120), "".join(lines)[-2000:]
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(10)
    assert proc.returncode == exitcodes.INTERRUPTED, "".join(lines)[-2000:]
    assert lines[-1].strip() == "interrupted"


RETRIES_CUT = """
import runpy, sys
import stylekit.files.storage as storage
storage.RETRY_ATTEMPTS, storage.RETRY_BASE_SECONDS = 2, 0.05  # the same path, quicker to give up
storage.S3_RETRY_CONFIG["retries"]["max_attempts"] = 1
sys.argv = [sys.argv[1], *sys.argv[2:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_a_store_that_never_answers_is_run_failed(tmp_path: Path, free_port_number: int) -> None:
    env = job_env() | {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y", "AWS_REGION": "us-east-1"}
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}"
    dead = f"http://127.0.0.1:{free_port_number}"  # nothing listens there
    args = ["--input", str(photos(tmp_path / "in")), "--output", "s3://b/out", "--s3-endpoint", dead]
    run = subprocess.run(
        [PYTHON, "-c", RETRIES_CUT, JOB, *args], env=env, capture_output=True, text=True, timeout=180
    )
    assert run.returncode == exitcodes.RUN_FAILED, run.stderr[-2000:]
    (line,) = errors(run.stderr)
    assert "still failing after 2 tries" in line


@pytest.fixture
def free_port_number() -> int:
    from conftest import free_port

    return free_port()


@pytest.mark.ray
def test_a_night_with_a_broken_input_is_ok_and_with_strict_inputs_failed(
    tmp_path: Path, model_file: Path
) -> None:
    inp, out = photos(tmp_path / "in", n=2, broken=1), tmp_path / "out"
    args = ["--model", str(model_file), "--input", str(inp), "--output", str(out), "--actors", "1"]
    first = job(*args)
    assert first.returncode == exitcodes.OK, first.stderr[-3000:]
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    assert (summary["ok"], summary["failed"]) == (2, 1)
    strict = job(*args, "--strict")  # the broken input is retried, and fails again
    assert strict.returncode == exitcodes.INPUTS_FAILED, strict.stderr[-3000:]
    summary = json.loads(strict.stdout.strip().splitlines()[-1])
    assert (summary["skipped"], summary["failed"]) == (2, 1)
    assert not (out / "_manifest" / LEASE_FILE).exists()
