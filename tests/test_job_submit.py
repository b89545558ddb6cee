"""`ray job submit --working-dir . -- python jobs/train.py ...` against a real `ray start --head`.

As a user (and CI) runs it: the `ray` CLI in subprocesses, a head with the job server
(dashboard) and Ray's token authentication on, the repository uploaded as the working dir.

Isolation, since other people may run Ray on the same machine:
- the head has its own short --temp-dir, so its `ray_current_cluster` file lands there and a
  plain `ray.init()` elsewhere (which reads /tmp/ray/ray_current_cluster) never joins it;
  every port is chosen free, none of Ray's fixed defaults (6379, 8265, 10001, 52365) is used;
- the token is a fresh one in that temp dir, handed to the head, the CLI and (by inheritance)
  the job through RAY_AUTH_TOKEN_PATH with RAY_AUTH_MODE=token: ~/.ray/auth_token is neither
  read nor written, and this process's environment is not touched;
- the head runs `ray start --head --block` in its own session; it is stopped by SIGTERM to
  that process (Ray then stops its GCS, raylet, dashboard and workers), and anything left
  that carries this head's marker variable or temp dir is terminated, then killed. Never a
  global `ray stop`, which would stop everyone's Ray on the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
TRAIN_MINI = REPO.parent / "shared" / "data" / "train-mini"
BIN = Path(sys.executable).parent
RAY = str(BIN / "ray")
MARKER = "STYLEKIT_TEST_RAY_HEAD"  # set in the head's environment; every Ray process inherits it
START_TIMEOUT_S = 120
JOB_TIMEOUT_S = 480  # with START_TIMEOUT_S x 2, inside pytest's 900 s per test

pytestmark = pytest.mark.ray


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Head:
    proc: subprocess.Popen
    temp_dir: Path
    gcs_address: str
    dashboard: str
    token: str
    env: dict[str, str]
    log: Path

    def ray(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run the `ray` CLI as a user with this cluster's token would."""
        return subprocess.run(
            [RAY, *args], env=self.env, capture_output=True, text=True, timeout=timeout, cwd=REPO
        )

    def log_tail(self, n: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-n:])


def _client_env(token_path: Path, marker: str) -> dict[str, str]:
    # No RAY_* from this process (a RAY_ADDRESS or token of someone else's cluster).
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token_path),
        RAY_USAGE_STATS_ENABLED="0",
        # SIGTERM to `ray start --block` stops the node at once instead of draining 30 s.
        RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",
        # The job's `python` is this virtualenv's, as for a user who activated it.
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        **{MARKER: marker},
    )
    return env


def _get(url: str, token: str | None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, b""
    except OSError:  # not listening (yet)
        return 0, b""


def _http_status(url: str, token: str | None) -> int:
    return _get(url, token)[0]


def _proc(pid: int) -> tuple[int, str, str, list[bytes]] | None:
    """(parent pid, state, command line, environment) of one of our processes, from /proc;
    None if it is gone or not ours."""
    base = Path("/proc", str(pid))
    try:
        if base.stat().st_uid != os.getuid():
            return None
        stat = (base / "stat").read_text()
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        cmdline = (base / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        environ = (base / "environ").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    return int(ppid), state, cmdline, environ


def _alive(pid: int) -> bool:
    info = _proc(pid)
    return info is not None and info[1] != "Z"


def _all_pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid in _all_pids():
        info = _proc(pid)
        if info is not None:
            children.setdefault(info[0], []).append(pid)
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _processes_of(marker: str, temp_dir: Path) -> set[int]:
    """This head's processes still alive: they carry its marker variable (inherited from the
    `ray start` we launched) or name its temp dir on their command line."""
    tag = f"{MARKER}={marker}".encode()
    found = set()
    for pid in _all_pids():
        info = _proc(pid)
        if pid == os.getpid() or info is None or info[1] == "Z":
            continue
        if tag in info[3] or str(temp_dir) in info[2]:
            found.add(pid)
    return found


def _signal_and_wait(pids: set[int], sig: int, timeout: float) -> set[int]:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while (pids := {p for p in pids if _alive(p)}) and time.monotonic() < deadline:
        time.sleep(0.2)
    return pids


def _stop_head(proc: subprocess.Popen | None, marker: str, temp_dir: Path) -> list[str]:
    """Stop the head we started (`proc`: its `ray start`, None if already gone) and everything
    it spawned; returns what had to be terminated by us rather than by Ray."""
    tree = _descendants(proc.pid) if proc is not None else set()
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # Ray's handler stops all of the node's processes
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    leftovers = {p for p in tree | _processes_of(marker, temp_dir) if _alive(p)}
    forced = [f"{pid} {(_proc(pid) or (0, '', '?', []))[2][:120]}" for pid in leftovers]
    still = _signal_and_wait(leftovers, signal.SIGTERM, 10)
    _signal_and_wait(still, signal.SIGKILL, 10)
    return forced


def _start_head(temp_dir: Path, env: dict[str, str], token: str, log: Path, started: list) -> Head:
    """`ray start --head --block` with every port free-chosen (its process appended to
    `started`); returns once it is ready, or raises RuntimeError with the end of its log."""
    port, dashboard_port = _free_port(), _free_port()
    cmd = [
        RAY, "start", "--head", "--block", "--disable-usage-stats",
        "--temp-dir", str(temp_dir / "ray"),
        "--num-cpus", "2", "--num-gpus", "0",
        "--object-store-memory", str(300 * 1024**2),
        "--port", str(port),
        "--include-dashboard", "true",
        "--dashboard-host", "127.0.0.1",
        "--dashboard-port", str(dashboard_port),
        "--ray-client-server-port", str(_free_port()),
        "--dashboard-agent-listen-port", str(_free_port()),
        "--dashboard-agent-grpc-port", str(_free_port()),
        "--runtime-env-agent-port", str(_free_port()),
        "--metrics-export-port", str(_free_port()),
        "--node-manager-port", str(_free_port()),
        "--object-manager-port", str(_free_port()),
    ]  # fmt: skip
    with open(log, "ab") as log_file:
        proc = subprocess.Popen(
            cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=temp_dir,
        )  # fmt: skip
    started.append(proc)
    head = Head(proc, temp_dir, f"127.0.0.1:{port}", f"http://127.0.0.1:{dashboard_port}", token, env, log)
    # Ready: the job server answers and `ray start` has recorded the address (its last step).
    address_file = temp_dir / "ray" / "ray_current_cluster"
    deadline = time.monotonic() + START_TIMEOUT_S
    while _http_status(f"{head.dashboard}/api/jobs/", token) != 200 or not address_file.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited with {proc.returncode}:\n{head.log_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the job server did not come up in {START_TIMEOUT_S} s:\n{head.log_tail()}")
        time.sleep(1)
    return head


@pytest.fixture(scope="module")
def ray_head() -> Iterator[Head]:
    # Short, private temp dir: Ray's Unix socket paths live under it (limit ~107 bytes).
    temp_dir = Path(tempfile.mkdtemp(prefix="sk-", dir="/tmp"))
    marker = secrets.token_hex(8)
    token = secrets.token_hex(32)
    token_path = temp_dir / "auth_token"
    token_path.write_text(token)
    token_path.chmod(0o600)
    env = _client_env(token_path, marker)
    log = temp_dir / "ray-start.log"
    procs: list[subprocess.Popen] = []
    forced: list[str] = []
    try:
        # Two tries: on a loaded machine the raylet can miss `ray start`'s fixed 30 s to register.
        for attempt in (1, 2):
            try:
                head = _start_head(temp_dir, env, token, log, procs)
                break
            except RuntimeError as e:
                forced += _stop_head(procs[-1], marker, temp_dir)
                if attempt == 2:
                    pytest.fail(str(e))
        yield head
    finally:
        for proc in procs:
            forced += _stop_head(proc, marker, temp_dir)
        forced += _stop_head(None, marker, temp_dir)
        left = _processes_of(marker, temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not left, f"processes left behind: {sorted(left)}"
        if forced:
            print("terminated after the head stopped:", *forced, sep="\n  ")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight 64 px photos from shared/data/train-mini (synthetic ones if it is missing)."""
    import numpy as np

    out = tmp_path_factory.mktemp("submit-data")
    sources = sorted(TRAIN_MINI.glob("*.png"))[:8] if TRAIN_MINI.is_dir() else []
    for i, src in enumerate(sources):
        img = Image.open(src).convert("RGB")
        img.thumbnail((64, 64))
        img.save(out / f"img{i:02d}.jpg", quality=90)
    rng = np.random.default_rng(0)
    for i in range(len(sources), 8):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(out / f"img{i:02d}.png")
    return out


def test_head_requires_the_token(ray_head: Head) -> None:
    url = f"{ray_head.dashboard}/api/jobs/"
    assert _http_status(url, None) == 401
    assert _http_status(url, "0" * 64) == 403
    assert _http_status(url, ray_head.token) == 200


def test_head_is_invisible_to_a_plain_ray_init(ray_head: Head) -> None:
    """`ray.init()` with no address joins the cluster named in /tmp/ray/ray_current_cluster;
    ours wrote its address under its own temp dir instead."""
    from ray._private import services

    ours = (ray_head.temp_dir / "ray" / "ray_current_cluster").read_text().strip()
    assert ours.endswith(":" + ray_head.gcs_address.rsplit(":", 1)[1])
    assert services.find_bootstrap_address(None) != ours


def test_job_submit_trains_a_model(ray_head: Head, tiny_data: Path, tmp_path: Path) -> None:
    from stylekit.nn.modelio import load_model

    output = tmp_path / "runs"
    submission = f"stylekit-test-{secrets.token_hex(4)}"
    started = time.monotonic()
    try:
        submit = ray_head.ray(
            "job", "submit", "--address", ray_head.dashboard, "--submission-id", submission,
            "--working-dir", str(REPO), "--",
            "python", "jobs/train.py", "--style", "stylekit/examples/styles/starry_night.jpg",
            "--data", str(tiny_data), "--output", str(output), "--name", "submitted",
            "--vgg-weights", "random", "--image-size", "64", "--max-steps", "2", "--num-workers", "2",
            timeout=JOB_TIMEOUT_S,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        ray_head.ray("job", "stop", "--address", ray_head.dashboard, submission)
        logs = ray_head.ray("job", "logs", "--address", ray_head.dashboard, submission).stdout
        pytest.fail(f"job still running after {JOB_TIMEOUT_S} s; its log ends:\n{logs[-4000:]}")
    elapsed = time.monotonic() - started
    assert submit.returncode == 0, f"ray job submit failed:\n{submit.stdout[-4000:]}\n{submit.stderr[-4000:]}"

    code, body = _get(f"{ray_head.dashboard}/api/jobs/{submission}", ray_head.token)
    assert code == 200 and json.loads(body)["status"] == "SUCCEEDED", body

    model_path = output / "submitted" / "model.safetensors"
    logs = ray_head.ray("job", "logs", "--address", ray_head.dashboard, submission).stdout
    printed = [line for line in logs.splitlines() if line.strip()]
    assert printed and printed[-1].strip() == str(model_path), (
        f"the job should print the model last:\n{logs[-2000:]}"
    )
    loaded = load_model(str(model_path))
    assert loaded.metadata.get("steps") == "2", loaded.metadata
    _check_uploaded_working_dir(ray_head)
    print(f"ray job submit -> SUCCEEDED in {elapsed:.0f} s")


def test_job_submit_stylizes_a_folder(
    ray_head: Head, tiny_data: Path, model_file: Path, tmp_path: Path
) -> None:
    """The bulk job through `ray job submit`: every input stylized, the JSON summary last."""
    output = tmp_path / "styled"
    submission = f"stylekit-bulk-{secrets.token_hex(4)}"
    submit = ray_head.ray(
        "job", "submit", "--address", ray_head.dashboard, "--submission-id", submission,
        "--working-dir", str(REPO), "--",
        "python", "jobs/stylize.py", "--model", str(model_file), "--input", str(tiny_data),
        "--output", str(output), "--format", "png",
        timeout=JOB_TIMEOUT_S,
    )  # fmt: skip
    assert submit.returncode == 0, f"ray job submit failed:\n{submit.stdout[-4000:]}\n{submit.stderr[-4000:]}"
    code, body = _get(f"{ray_head.dashboard}/api/jobs/{submission}", ray_head.token)
    assert code == 200 and json.loads(body)["status"] == "SUCCEEDED", body
    logs = ray_head.ray("job", "logs", "--address", ray_head.dashboard, submission).stdout
    summary = json.loads([line for line in logs.splitlines() if line.strip()][-1])
    inputs = sorted(p.relative_to(tiny_data).with_suffix(".png") for p in tiny_data.rglob("*") if p.is_file())
    assert summary["ok"] == len(inputs) and summary["failed"] == 0, summary
    assert sorted(p.relative_to(output) for p in output.rglob("*.png")) == inputs


def _check_uploaded_working_dir(head: Head) -> None:
    """What `--working-dir .` shipped, as unpacked on the node: the code, without .venv
    (.gitignore) or .git, and small."""
    unpacked = [
        p
        for p in (head.temp_dir / "ray").glob("session_*/runtime_resources/working_dir_files/_ray_pkg_*")
        if p.is_dir()
    ]
    assert unpacked, "no unpacked working dir found on the node"
    for root in unpacked:
        assert (root / "jobs" / "train.py").is_file()
        assert (root / "stylekit" / "train" / "ray_job.py").is_file()
        assert not (root / ".venv").exists() or not any((root / ".venv").iterdir())
        assert not (root / ".git").exists()
        size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
        # The package carries the paper's loss network (30 MB) and the shipped models (~14 MB);
        # anything past that (a .venv, runs/, outputs/) would be a leak. Ray's limit is 100 MiB.
        assert size < 60 * 1024**2, f"the working dir upload is {size / 1024**2:.1f} MiB"
