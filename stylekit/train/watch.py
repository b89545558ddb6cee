"""The training run's stall watchdog: rank 0 ticks a small clock actor at every step, and the
driver ends the run with one line when no step came for --stall-timeout seconds (workers that
cannot be placed, a hung read, a collective that never returns). The run's checkpoints stay:
the same command resumes from the last one."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import ray

from stylekit import exitcodes
from stylekit.errors import StylekitError
from stylekit.nodes import NoNodeFits
from stylekit.ray_env import describe_pending, leave_quietly

log = logging.getLogger(__name__)

POLL = 5.0  # seconds between the driver's looks at the clock


class Stalled(StylekitError):
    """No step reported for --stall-timeout seconds; the same command resumes."""

    exit_code = exitcodes.STALLED


@ray.remote(num_cpus=0)
class StepClock:
    """The last step rank 0 finished, and how long ago (on this actor's own clock, so clocks
    of other nodes do not matter)."""

    def __init__(self) -> None:
        self.step, self.at = 0, time.monotonic()

    def tick(self, step: int) -> None:
        self.step, self.at = step, time.monotonic()

    def last(self) -> tuple[int, float]:
        return self.step, time.monotonic() - self.at


def fit_watched(
    trainer: Any, clock: Any, stall_timeout: float, check_nodes: Callable[[], object], poll: float = POLL
) -> Any:
    """`trainer.fit()`, ended with a one-line StylekitError once `clock` saw no step for
    `stall_timeout` seconds (0: never). `check_nodes()` raises NoNodeFits when the workers
    no longer fit the nodes (said in the line)."""
    if stall_timeout <= 0:
        return trainer.fit()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as e:  # re-raised on the caller's thread
            outcome["error"] = e

    thread = threading.Thread(target=run, name="stylekit-fit", daemon=True)
    thread.start()
    while True:
        thread.join(poll)
        if not thread.is_alive():
            break
        try:
            step, idle = ray.get(clock.last.remote(), timeout=30)
        except Exception:  # the clock is busy or gone for a moment: look again next time
            continue
        if idle > stall_timeout:
            line = stall_line(step, idle, stall_timeout, check_nodes)
            leave_quietly()
            raise Stalled(line)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def stall_line(step: int, idle: float, stall_timeout: float, check_nodes: Callable[[], object]) -> str:
    """The one line a stalled run ends with: where it stopped, what it waits for, what to do."""
    where = f"after step {step}" if step else "before its first step"
    why = ""
    try:
        check_nodes()
    except NoNodeFits as e:
        why = f": the workers no longer fit the nodes ({e})"
    except Exception:
        pass
    if not why:
        pending = describe_pending()
        why = (
            f": {pending}"
            if pending
            else ": the workers are up but report no step (a hung read or collective?)"
        )
    return (
        f"training stalled {where}, no step for {idle:.0f} s (--stall-timeout {stall_timeout:g}){why}; "
        "run the same command again to resume from the last checkpoint"
    )
