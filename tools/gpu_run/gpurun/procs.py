"""The GPU run's processes: each leads a process group of its own and is stopped at its deadline
(SIGINT, then SIGKILL); each part reports what it measured as `@@result` lines in its log."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from gpurun.setting import REPO, TOOL

PYTHON = sys.executable
RUNNER = TOOL / "gpu_run.py"  # the parts' processes are this script with --child
GRACE = 12  # from SIGINT at a deadline to SIGKILL
RESULT = "@@result "


def emit(**fields: Any) -> None:
    """One machine-readable result line in the part's log (the summary is built from these)."""
    print(RESULT + json.dumps(fields, default=str), flush=True)


def results_in(log: Path) -> list[dict[str, Any]]:
    found = []
    if log.is_file():
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith(RESULT):
                with contextlib.suppress(ValueError):
                    found.append(json.loads(line[len(RESULT) :]))
    return found


# Each child leads a process group of its own (same session: the GPU machine ends what is left
# when the command returns), so a stop reaches everything it started.
OWN_GROUP: dict[str, Any] = (
    {"process_group": 0} if sys.version_info >= (3, 11) else {"preexec_fn": os.setpgrp}
)


def kill_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def stop_at(proc: subprocess.Popen, deadline: float, grace: float = GRACE) -> int | None:
    """Wait for `proc` until `deadline`; then SIGINT its process group, SIGKILL after `grace`.
    Returns its exit code, or None when it had to be stopped."""
    try:
        return proc.wait(timeout=max(0.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
        pass
    except KeyboardInterrupt:  # we are being stopped: so is what we started
        kill_group(proc, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=min(grace, GRACE / 2))
        kill_group(proc, signal.SIGKILL)
        raise
    print(f"[gpu_run] budget reached: stopping pid {proc.pid}", flush=True)
    kill_group(proc, signal.SIGINT)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        kill_group(proc, signal.SIGKILL)
        proc.wait()
    return None


def tee(cmd: list[str], seconds: float, env: dict[str, str] | None = None) -> tuple[int | None, str]:
    """Run `cmd` in its own process group, echoing its output to ours; stop it after `seconds`.
    Returns (exit code or None if stopped, its output)."""
    print(f"$ {shlex.join(cmd)}   # at most {seconds:.0f} s", flush=True)
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        errors="replace", bufsize=1, **OWN_GROUP,
    )  # fmt: skip
    lines: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            sys.stdout.write(line)
            sys.stdout.flush()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    rc = stop_at(proc, time.time() + seconds, grace=5)  # within its part's own grace
    reader.join(timeout=5)
    return rc, "".join(lines)


def child_env(extra_path: list[Path] | None = None) -> dict[str, str]:
    """Children import this checkout's stylekit (it is not installed on the GPU machine)."""
    env = dict(os.environ)
    paths = [str(REPO), *(str(p) for p in extra_path or [])]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("BENCH_DATE", datetime.date.today().isoformat())
    env.setdefault("PYTHONWARNINGS", "ignore")
    return env
