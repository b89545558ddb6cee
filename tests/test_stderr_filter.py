"""stylekit/stderr_filter.py: lines native code writes straight to fd 2 (Ray's C++ core worker)
kept off the console, everything else through in order, nothing lost when the process dies."""

from __future__ import annotations

import subprocess
import textwrap

from conftest import PYTHON, REPO

SCRIPT = """
import logging, os, signal, sys
from stylekit.stderr_filter import drop_native_lines

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
assert drop_native_lines(("has constructor arguments in the object store",))
assert drop_native_lines(("ignored: once per process",))
os.write(2, b"first\\n")
os.write(2, b"[2026 E 1 1] core_worker.cc:2465: Actor A has constructor arguments in the object store and max_restarts > 0\\n")
logging.getLogger("stylekit.x").info("a logged line")
print("a printed line", file=sys.stderr)
os.write(2, b"a partial line, no newline")
sys.stderr.flush()
print("stdout untouched")
if sys.argv[1] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
"""


def run(how: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-c", textwrap.dedent(SCRIPT), how], cwd=REPO, capture_output=True, text=True, timeout=60
    )


def test_native_routine_lines_are_dropped_and_the_rest_kept_in_order() -> None:
    result = run("exit")
    assert result.returncode == 0, result.stderr
    assert result.stderr == "first\nINFO a logged line\na printed line\na partial line, no newline"
    assert result.stdout == "stdout untouched\n"


def test_nothing_written_is_lost_when_the_process_is_killed() -> None:
    result = run("kill")
    assert result.returncode == -9
    assert result.stderr.startswith("first\nINFO a logged line\na printed line\n"), result.stderr
    assert "core_worker" not in result.stderr
