"""Lines written straight to this process's stderr (file descriptor 2) by native code, which no
Python logger or warning filter ever sees, kept off the console.

Why: Ray's C++ core worker in the driver writes one ERROR line whenever Ray Data starts an actor
pool (core_worker.cc, `... has constructor arguments in the object store and max_restarts > 0`,
ray-project/ray#53727). Ray Data itself passes its map transformer by reference
(actor_pool_map_operator.py, `map_transformer=self._map_transformer_ref`) and keeps that
reference for the operator's life, so the restart it warns about works; the warning asks nothing
of a user, and Ray's driver log file under the session keeps it. Nothing in Python can drop it:
spdlog writes it to fd 2 itself.

How: fd 2 becomes a pipe read by a small filter process, which writes every line to the real
stderr except those containing one of the given texts. A separate process, not a thread: if
this process dies (a crash, SIGKILL) the filter still drains what was written, sees the pipe
close and exits, so no last line is lost. It runs in a session of its own, so a terminal's
Ctrl-C reaches only the job, which prints its own last line through it. At exit the real fd 2
is restored and the filter is waited for (briefly), so the shell's prompt follows the last line.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import subprocess
import sys

# The filter process: lines from stdin to stdout, those holding any argv text dropped. A line
# arrives in one write (spdlog and Python's logging write whole lines, pipes keep writes of up
# to 4 KiB whole), so a read's partial last line is printed at once rather than held back.
_FILTER = r"""
import os, sys
drop = [a.encode() for a in sys.argv[1:]]
while True:
    chunk = os.read(0, 65536)
    if not chunk:
        break
    lines = chunk.split(b"\n")
    out = [l + b"\n" for l in lines[:-1] if not any(d in l for d in drop)]
    if lines[-1]:
        out.append(lines[-1])
    try:
        os.write(1, b"".join(out))
    except OSError:
        pass  # the console is gone: keep draining, so the job never blocks on its stderr
"""

_installed: subprocess.Popen[bytes] | None = None


def drop_native_lines(texts: tuple[str, ...]) -> bool:
    """Route fd 2 through the filter (once per process; later calls do nothing). Returns whether
    it is in place; where it cannot be (no fd 2, no way to start a process) stderr is left as
    it is and the lines show."""
    global _installed
    if _installed is not None:
        return True
    try:
        real = os.dup(2)
    except OSError:
        return False
    read, write = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-S", "-c", _FILTER, *texts],
            stdin=read,
            stdout=real,
            stderr=real,
            start_new_session=True,  # a terminal's Ctrl-C is for the job, not its filter
        )
    except OSError:
        for fd in (read, write, real):
            os.close(fd)
        return False
    os.close(read)
    sys.stderr.flush()
    os.dup2(write, 2)
    os.close(write)
    _installed = proc
    atexit.register(_restore, real, proc)
    return True


def _restore(real: int, proc: subprocess.Popen[bytes]) -> None:
    """At exit: everything written so far through the filter, then the real stderr back."""
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    os.dup2(real, 2)  # closes this process's end of the pipe: the filter reads to its end
    os.close(real)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
