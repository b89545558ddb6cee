"""The bulk job's stall watchdog.

Each stage ticks a small `StageClock` actor (on the driver's node) with the rows it finished;
the driver reads the pipeline's output in a helper thread and, when no input settled and no
stage moved for --stall-timeout seconds, ends the job with one line naming the stage that
stopped and what it waits for: work Ray cannot place (the pending demand), or a stage whose
tasks or actors are placed but return nothing (a store that stopped answering, a dead actor
holding its pool slot: ray-project/ray#62746). Every settled row is in the manifest by then
(the writer flushes on the way out), so a rerun does the rest.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import ray

from stylekit import exitcodes
from stylekit.errors import StylekitError
from stylekit.ray_env import describe_pending, leave_quietly, on_head

log = logging.getLogger(__name__)

PENDING_GRACE = 6  # seconds the stall line waits for Ray's pending demand to show
STAGES = ("decode", "stylize", "write")  # in the order rows pass them
WAITS = {
    "decode": "its read/decode tasks return nothing (an input store that stopped answering?)",
    "stylize": "its actors are placed but return nothing (a dead actor holding its pool slot, "
    "ray-project/ray#62746, or a model call that hangs)",
    "write": "its write tasks return nothing (an output store that stopped answering?)",
    "video": "its actors are placed but return nothing (a dead actor holding its pool slot, "
    "ray-project/ray#62746, or a video that hangs)",
}


class Stalled(StylekitError):
    """Nothing settled for --stall-timeout seconds."""

    exit_code = exitcodes.STALLED


@ray.remote(num_cpus=0)
class StageClock:
    """Rows each stage finished, and when it last moved (this actor's own clock)."""

    def __init__(self) -> None:
        self.rows: dict[str, int] = {}
        self.at: dict[str, float] = {}

    def tick(self, stage: str, rows: int) -> None:
        self.rows[stage] = self.rows.get(stage, 0) + rows
        self.at[stage] = time.monotonic()

    def report(self) -> dict[str, tuple[int, float]]:
        """{stage: (rows, seconds since it last moved)}."""
        now = time.monotonic()
        return {s: (n, now - self.at[s]) for s, n in self.rows.items()}


def start_clock() -> Any:
    """A StageClock on the head node, which outlives any worker node."""
    return StageClock.options(**on_head()).remote()


def tick(clock: Any, stage: str, rows: int) -> None:
    """Tell the clock (if any) that `stage` finished `rows`; never waits, never fails."""
    if clock is not None:
        with contextlib.suppress(Exception):  # the watchdog must never fail the work it watches
            clock.tick.remote(stage, rows)


def watched(
    batches: Iterator[Any],
    stall_timeout: float,
    clock: Any,
    settled: Callable[[], int],
    poll: float = 5.0,
) -> Iterator[Any]:
    """The items of `batches` (read in a helper thread); raises `Stalled` with one line when
    none came and no stage moved for `stall_timeout` seconds (0: plain iteration)."""
    if stall_timeout <= 0:
        yield from batches
        return
    items: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=2)  # keeps Ray's backpressure

    def pump() -> None:
        try:
            for item in batches:
                items.put(("item", item))
            items.put(("end", None))
        except BaseException as e:  # re-raised on the consumer's thread
            items.put(("error", e))

    threading.Thread(target=pump, name="stylekit-bulk-results", daemon=True).start()
    last = time.monotonic()
    while True:
        try:
            kind, value = items.get(timeout=poll)
        except queue.Empty:
            idle = min(time.monotonic() - last, _stage_idle(clock))
            if idle > stall_timeout:
                line = stall_line(idle, stall_timeout, clock, settled())
                leave_quietly()
                raise Stalled(line) from None
            continue
        if kind == "end":
            return
        if kind == "error":
            raise value
        last = time.monotonic()
        yield value


def _stage_idle(clock: Any) -> float:
    """Seconds since any stage moved (a long video or a huge photo in progress still ticks)."""
    report = _report(clock)
    return min((idle for _, idle in report.values()), default=float("inf"))


def _report(clock: Any) -> dict[str, tuple[int, float]]:
    if clock is None:
        return {}
    try:
        return ray.get(clock.report.remote(), timeout=30)
    except Exception:
        return {}


def stalled_stage(report: dict[str, tuple[int, float]], stages: tuple[str, ...] = STAGES) -> str:
    """The first stage holding rows it has not passed on (fewer rows than the stage before it)."""
    before = None
    for stage in stages:
        rows = report.get(stage, (0, 0.0))[0]
        if (before is not None and rows < before) or (before is None and rows == 0):
            return stage
        before = rows
    return stages[-1]


def stall_line(idle: float, stall_timeout: float, clock: Any, settled: int) -> str:
    report = _report(clock)
    stages = ("video",) if "video" in report else STAGES
    stage = stalled_stage(report, stages)
    counts = ", ".join(f"{s} {report.get(s, (0, 0.0))[0]}" for s in stages)
    pending = describe_pending()
    for _ in range(PENDING_GRACE):  # a lost node's actor shows as pending once Ray restarts it
        if pending:
            break
        time.sleep(1.0)
        pending = describe_pending()
    why = pending if pending else WAITS[stage]
    return (
        f"stalled: no input settled for {idle:.0f} s (--stall-timeout {stall_timeout:g}); the {stage} "
        f"stage stopped (rows done: {counts}): {why}; the {settled} input(s) settled are in the "
        "manifest, run the same command again to do the rest"
    )
