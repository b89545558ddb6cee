"""Nightly bulk stylization: every image and video under IN -> OUT at the same relative key.

The driver: take the output's lease, plan on the driver (listing, skip check and key shards:
bulk/plan/) while the models are checked, run the plan through an engine (bulk/engines/: the
job's own process, or Ray), take the manifest rows as they stream back, then the summary. The
morning report reads the finished manifest afterwards (bulk/night.py composes the two). How it
fits together and why: docs/bulk.md, "Architecture".
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass

import pyarrow as pa

from stylekit.bulk.config import BulkConfig
from stylekit.bulk.engines.engine import Engine
from stylekit.bulk.engines.local import LOCAL_MAX_CPUS, LocalEngine, machine_cpus
from stylekit.bulk.engines.ray_engine import RayEngine
from stylekit.bulk.metrics import RunMetrics
from stylekit.bulk.plan.layout import MANIFEST_DIR
from stylekit.bulk.plan.lease import OutputLease
from stylekit.bulk.plan.manifest import FAILED, OK, SKIPPED, ManifestWriter
from stylekit.bulk.plan.planner import Plan, plan_inputs
from stylekit.bulk.plan.records import SUMMARY_FILE
from stylekit.bulk.plan.settings import check_output_settings
from stylekit.bulk.run import BulkRun
from stylekit.bulk.stop import RunStopper
from stylekit.errors import ConfigError, StylekitError
from stylekit.files import storage
from stylekit.logs import Progress, format_duration
from stylekit.ray_env import cluster_to_join
from stylekit.redact import describe, redact

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Summary:
    """The job's result; `to_json` is the last line the job prints."""

    ok: int
    failed: int
    skipped: int
    images_per_s: float
    seconds: float
    manifest: str
    run_id: str
    model_digest: str
    input: str
    output: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)  # its locations are shown forms


def run_bulk(config: BulkConfig, engine: Engine | None = None) -> Summary:
    """Stylize every input under config.input that is not done yet; returns the summary.
    `engine`: where the inputs are stylized (None: as --engine says; a benchmark hands its own,
    bulk/engines/engine.py)."""
    started = time.time()
    run = BulkRun.open(config)
    log.info(
        "run %s: model %s (digest %s), %s -> %s",
        run.layout.run_id,
        redact(f"{config.model} then {config.then}" if config.then else config.model),
        run.digest,
        run.layout.shown_input,
        run.layout.shown_output,
    )
    # A lease lost to another run, or the Ray cluster gone, ends the run at once (bulk/stop.py).
    stopper = RunStopper()
    # One run per output at a time (bulk/plan/lease.py): waits for, or refuses, a run that holds it.
    lease = OutputLease(
        run.layout.output_root,
        run.layout.run_id,
        run.options,
        ttl=config.lease_ttl,
        wait=config.lease_wait,
        take=config.take_lease,
        manifest_dir=MANIFEST_DIR,
        on_lost=stopper.stop,
    )
    stopper.lease = lease
    with stopper, lease:
        return _run_leased(run, engine, started, stopper)


def _run_leased(run: BulkRun, engine: Engine | None, started: float, stopper: RunStopper) -> Summary:
    """The run itself, while it holds the output's lease: plan -> engine -> manifest."""
    layout, options = run.layout, run.options
    # The key shards are the plan's, read by this run alone: gone once it ends, however it ends
    # (a killed driver leaves its own run's, which no later run reads).
    try:
        # The models are checked (torch imported, the networks built: seconds) in a helper
        # thread, beside the listing and Ray's start; a bad model still ends the run before any
        # output, and before a first run records its settings.
        with ThreadPoolExecutor(1, "stylekit-model-check") as pool:
            cuda = pool.submit(run.check_models)
            settings = check_output_settings(run.config, layout, run.digest, options)
            metrics = RunMetrics(layout.shown_output)  # Ray's Prometheus endpoint
            with ManifestWriter(layout.manifest_dir, options, on_rows=metrics.rows) as manifest:
                stopper.manifest = manifest
                run = run.planned(plan_inputs(run.config, layout, manifest, run.digest))
                plan = run.plan
                log.info(
                    "%d inputs%s: %d to stylize, %d done before, %d failed before stylizing",
                    plan.listed,
                    f" x {len(run.config.styles)} styles" if run.config.per_style else "",
                    plan.todo,
                    plan.skipped,
                    plan.failed,
                )
                _refuse_videos_per_style(run.config, plan)
                # An engine only when there is work (a night with nothing new starts nothing).
                engine = (engine or ENGINES[_engine(run.config, plan, cuda)]()) if plan.todo else None
                if engine is not None:
                    engine.start()
                cuda.result()
                with settings.commit():
                    if engine is not None:
                        metrics.flush()  # the listing's rows, counted before Ray was up
                        engine.run(run, _Rows(run, manifest, metrics, stopper))
    finally:
        try:
            storage.delete_tree(layout.keys_dir, options)
        except Exception as e:  # never hides how the run ended, nor fails one that ended well
            log.warning(
                "key shards of run %s left under %s: %s", layout.run_id, layout.shown_output, describe(e)
            )
    summary = _summary(manifest, run, time.time() - started)
    # The run ended: its manifest lists every input (bulk/plan/records.py reads no run before it).
    storage.write_bytes(storage.join(layout.manifest_dir, SUMMARY_FILE), summary.to_json().encode(), options)
    return summary


ENGINES: dict[str, Callable[[], Engine]] = {"local": LocalEngine, "ray": RayEngine}


def _engine(config: BulkConfig, plan: Plan, checked: Future[bool]) -> str:
    """--engine, with auto decided: local on a small machine (at most LOCAL_MAX_CPUS CPUs, no
    GPU) with no Ray cluster to join and no videos in the night, where Ray's start costs more
    than it gives (bulk/engines/local.py); else ray."""
    if config.engine == "local":
        if plan.videos:
            raise ConfigError(
                f"--engine local stylizes photos only, and this night has {plan.videos} video(s); "
                "use --engine ray (or auto)"
            )
        return "local"
    if config.engine == "ray" or plan.videos or cluster_to_join() or machine_cpus() > LOCAL_MAX_CPUS:
        return "ray"
    return "ray" if checked.result() else "local"  # the model check says whether CUDA is here


def _refuse_videos_per_style(config: BulkConfig, plan: Plan) -> None:
    """Several --style selections stylize photos only: a night with videos is one line."""
    if config.per_style and plan.videos:
        raise ConfigError(
            "--style with several selections writes photos only, and this night has videos to "
            f"do; stylize them one selection at a time (--style "
            f"{config.styles[0]} --output another folder), or give --input a folder without them"
        )


class _Rows:
    """The driver's row sink (bulk/engines/engine.py): every row into the manifest; photos'
    counted on the progress line, a line per video."""

    def __init__(self, run: BulkRun, manifest: ManifestWriter, metrics: RunMetrics, stopper: RunStopper):
        self.run, self.manifest, self.metrics, self.stopper = run, manifest, metrics, stopper

    def photos(self, tables: Iterable[pa.Table]) -> None:
        progress = _Progress(self.run.plan.photos, self.run.config.progress_every, self.metrics)
        for table in tables:
            self.manifest.add(table)
            progress.update(table)
        progress.log_line(final=True)

    def videos(self, tables: Iterable[pa.Table]) -> None:
        done = frames = 0
        started = time.monotonic()
        for table in tables:
            self.manifest.add(table)
            for row in table.select(["input", "status", "frames"]).to_pylist():
                done += 1
                frames += row["frames"] or 0
                rate = frames / max(time.monotonic() - started, 1e-9)
                log.info(
                    "videos %d/%d done (%s: %s), %.2f frames/s",
                    done,
                    self.run.plan.videos,
                    row["input"],
                    row["status"],
                    rate,
                )

    @property
    def settled(self) -> int:
        return sum(self.manifest.counts.values())

    def stop(self, reason: StylekitError) -> None:
        self.stopper.stop(reason)


class _Progress:
    """Counts finished rows and logs `done/total, rate, ETA` every `every` seconds (the
    counting and timing are logs.Progress; this words the line and shows the failures)."""

    FAILURES_SHOWN = 20

    def __init__(self, total: int, every: float, run_metrics: RunMetrics | None = None):
        self.total, self.meter, self.metrics = total, Progress(total, every), run_metrics
        self.ok = self.failed = self.failures_shown = 0
        self.logged = -1  # rows done at the last line

    def update(self, table: pa.Table) -> None:
        for row in table.select(["input", "status", "error"]).to_pylist():
            self.meter.add()
            if row["status"] == OK:
                self.ok += 1
                continue
            self.failed += 1
            if self.failures_shown < self.FAILURES_SHOWN:
                self.failures_shown += 1
                log.warning("failed: %s: %s", row["input"], row["error"])
        if self.metrics is not None:
            self.metrics.progress(self.meter.rate(), self.total - self.meter.done)
        if self.meter.due():
            self.log_line()

    def log_line(self, final: bool = False) -> None:
        """One progress line; the final one only when rows finished since the last."""
        done = self.meter.done
        if final and done == self.logged:
            return
        self.logged = done
        log.info(
            "stylized %d/%d (%d ok, %d failed), %.2f images/s, about %s left",
            done,
            self.total,
            self.ok,
            self.failed,
            self.meter.rate(),
            format_duration(self.meter.left()),
        )


def _summary(manifest: ManifestWriter, run: BulkRun, seconds: float) -> Summary:
    layout, counts = run.layout, manifest.counts
    if counts[FAILED]:
        log.warning("%d input(s) failed; see status = 'failed' in %s", counts[FAILED], layout.shown_manifest)
    return Summary(
        ok=counts[OK],
        failed=counts[FAILED],
        skipped=counts[SKIPPED],
        images_per_s=round(counts[OK] / max(seconds, 1e-9), 3),
        seconds=round(seconds, 3),
        manifest=layout.shown_manifest,
        run_id=layout.run_id,
        model_digest=run.digest,
        input=layout.shown_input,
        output=layout.shown_output,
    )
