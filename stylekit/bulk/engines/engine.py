"""What an engine is, and what it sees of the driver.

An engine stylizes every input still to do in a run's plan (`BulkRun.plan`) and hands each
one's manifest row to the driver's row sink as it settles; the driver writes the manifest,
logs progress and ends the run. The engines: `local.LocalEngine` (the job's own process) and
`ray_engine.RayEngine` (photos as CPU blocks or GPU stages, then videos, on Ray). A benchmark
measures a run by handing `run_bulk` (or `run_night`) an engine of its own (one of these with
its own actor class, or one that wraps them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import pyarrow as pa

    from stylekit.bulk.run import BulkRun
    from stylekit.errors import StylekitError


class RowSink(Protocol):
    """The driver's side of a run, as an engine sees it."""

    def photos(self, table: pa.Table) -> None:
        """Manifest rows of photos that settled (ok or failed): each input once."""

    def videos(self, table: pa.Table) -> None:
        """Manifest rows of videos that settled."""

    @property
    def settled(self) -> int:
        """Inputs accounted for in the manifest so far, the planner's skipped and failed ones
        included."""

    def stop(self, reason: StylekitError) -> None:
        """End the run at once with `reason`, from any thread (bulk/stop.py)."""


class Engine(Protocol):
    def start(self) -> None:
        """Start what the engine runs on (Ray), before the run records anything: a one-line
        error here ends the run with nothing written."""

    def run(self, run: BulkRun, rows: RowSink) -> None:
        """Every input still to do in `run.plan`, each as one manifest row to `rows`."""
