"""The bulk job's own metrics, through `ray.util.metrics`: each Ray node exports them with
Ray's own on its Prometheus endpoint (`metrics_export_port`), so Ray's Grafana dashboards and
alerts see a night as it runs. Prometheus shows them with Ray's `ray_` prefix
(`ray_stylekit_bulk_inputs_total`) and Ray's labels (NodeAddress, WorkerId, SessionName):

- `stylekit_bulk_inputs_total{status}`: inputs accounted for, by manifest status (ok, failed,
  skipped), counted from the manifest rows as the driver writes them: the same numbers as the
  manifest and the summary line.
- `stylekit_bulk_bytes_read_total`, `stylekit_bulk_bytes_written_total`: input bytes of the inputs
  processed (ok or failed), output bytes written (by this run).
- `stylekit_bulk_images_per_second`: the driver's rate since stylizing began (its progress line).
- `stylekit_bulk_inputs_todo`: inputs this run has left to stylize (0 at the end).
- `stylekit_bulk_stylize_busy_seconds_total`, `stylekit_bulk_stylize_alive_seconds_total`: each
  stylizing actor's seconds in model calls and seconds alive; their rates' ratio is the stage's
  busy share over the whole pool (`rate(busy[5m]) / rate(alive[5m])`): near 1, the model is
  the limit (add GPUs); low, the actors wait for decoding or storage.
- `stylekit_bulk_stylize_busy_share`: one actor's busy share since it started (Ray's WorkerId
  label tells the actors apart).

Every metric carries `output` (the output root, redacted): nights over several buckets stay apart.
"""

from __future__ import annotations

import collections
import time
from functools import lru_cache
from typing import Any

import pyarrow as pa
import ray
from ray.util import metrics

from stylekit.bulk.plan.manifest import FAILED, OK


@lru_cache(maxsize=1)
def _driver_metrics() -> dict[str, Any]:
    keys = ("output",)
    return {
        "inputs": metrics.Counter(
            "stylekit_bulk_inputs", "Inputs accounted for, by manifest status", tag_keys=(*keys, "status")
        ),
        "read": metrics.Counter(
            "stylekit_bulk_bytes_read", "Input bytes of the inputs processed", tag_keys=keys
        ),
        "written": metrics.Counter("stylekit_bulk_bytes_written", "Output bytes written", tag_keys=keys),
        "rate": metrics.Gauge("stylekit_bulk_images_per_second", "Images stylized per second", tag_keys=keys),
        "todo": metrics.Gauge(
            "stylekit_bulk_inputs_todo", "Inputs left to stylize in this run", tag_keys=keys
        ),
    }


class RunMetrics:
    """The driver's side: fed every manifest table and each progress update. Ray starts only
    when a night has work, after the listing has added its skipped rows: counts are held until
    Ray is up, then recorded (a night with nothing to do starts no Ray and exports nothing)."""

    def __init__(self, output: str):
        self.tags = {"output": output}
        self.pending: collections.Counter[str] = collections.Counter()

    def rows(self, table: pa.Table) -> None:
        """Count a manifest table's rows by status, and their bytes."""
        statuses = table.column("status").to_pylist()
        self.pending.update({f"status:{s}": statuses.count(s) for s in set(statuses)})
        self.pending["read"] += sum(
            b or 0
            for b, s in zip(table.column("input_bytes").to_pylist(), statuses, strict=True)
            if s in (OK, FAILED)
        )
        self.pending["written"] += sum(  # a skipped row's output_bytes is the earlier night's
            b or 0 for b, s in zip(table.column("output_bytes").to_pylist(), statuses, strict=True) if s == OK
        )
        self.flush()

    def progress(self, images_per_s: float, todo: int) -> None:
        if not ray.is_initialized():
            return
        m = _driver_metrics()
        m["rate"].set(images_per_s, self.tags)
        m["todo"].set(max(todo, 0), self.tags)
        self.flush()

    def flush(self) -> None:
        if not ray.is_initialized():
            return
        m = _driver_metrics()
        for key, value in self.pending.items():
            if value <= 0:
                continue
            if key.startswith("status:"):
                m["inputs"].inc(value, {**self.tags, "status": key.removeprefix("status:")})
            else:
                m[key].inc(value, self.tags)
        self.pending.clear()


@lru_cache(maxsize=1)
def _actor_metrics() -> dict[str, Any]:
    keys = ("output",)
    return {
        "busy": metrics.Counter(
            "stylekit_bulk_stylize_busy_seconds",
            "Seconds stylizing actors spent in model calls",
            tag_keys=keys,
        ),
        "alive": metrics.Counter(
            "stylekit_bulk_stylize_alive_seconds", "Seconds stylizing actors were alive", tag_keys=keys
        ),
        "share": metrics.Gauge(
            "stylekit_bulk_stylize_busy_share",
            "Share of an actor's time in model calls since it started",
            tag_keys=keys,
        ),
    }


class ActorMetrics:
    """A stylizing actor's busy time: `busy(seconds)` after each model call."""

    def __init__(self, output: str):
        self.tags = {"output": output}
        self.m = _actor_metrics()
        self.started = self.last = time.monotonic()
        self.busy_total = 0.0

    def busy(self, seconds: float) -> None:
        if seconds <= 0:
            return
        now = time.monotonic()
        self.busy_total += seconds
        self.m["busy"].inc(seconds, self.tags)
        self.m["alive"].inc(max(now - self.last, 1e-9), self.tags)
        self.last = now
        share = self.busy_total / max(now - self.started, 1e-9)
        self.m["share"].set(min(share, 1.0), self.tags)
