"""Nightly bulk stylization with Ray Data: every image under IN -> OUT at the same relative key.

The driver's part: take the output's lease, plan on the driver (listing, skip check and key
shards: `bulk/plan/planner.py`) while the models are checked and Ray starts, run the plan through an
engine (Ray Data's actor pool, `bulk/engines/ray_photos.py` and `bulk/engines/ray_videos.py`, or the job's own process,
`bulk/engines/local.py`), write the manifest as its rows stream back, then the summary and the report.
How the stages fit together and why: docs/bulk.md, "Architecture".
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass

import pyarrow as pa
import ray
import ray.data.exceptions

from stylekit.bulk.config import BulkConfig
from stylekit.bulk.engines.local import LOCAL_MAX_CPUS, machine_cpus, stylize_here
from stylekit.bulk.engines.ray_photos import StylizeActor, build_dataset
from stylekit.bulk.engines.ray_videos import build_video_dataset, consume_videos
from stylekit.bulk.engines.sizing import plan_actors
from stylekit.bulk.engines.watch import start_clock, watched
from stylekit.bulk.metrics import RunMetrics
from stylekit.bulk.plan.layout import MANIFEST_DIR, RunLayout
from stylekit.bulk.plan.lease import OutputLease
from stylekit.bulk.plan.manifest import FAILED, OK, SKIPPED, ManifestWriter
from stylekit.bulk.plan.planner import Plan, plan_inputs
from stylekit.bulk.plan.records import SUMMARY_FILE
from stylekit.bulk.plan.settings import check_output_settings, record_output_settings
from stylekit.bulk.report.build import write_report_quietly
from stylekit.bulk.stop import RunStopper
from stylekit.errors import ConfigError, RunFailed, StylekitError
from stylekit.files import storage
from stylekit.logs import Progress, format_duration
from stylekit.nn import zoo
from stylekit.nn.sr import output_scale
from stylekit.ray_env import ClusterWatch, cluster_to_join, init_ray, plan_on_nodes
from stylekit.redact import redact, root_cause

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
        return redact(json.dumps(asdict(self), ensure_ascii=False))


@dataclass(frozen=True)
class Probes:
    """Where a benchmark measures a run without patching the driver: `actor`, the photo stage's
    class (a subclass of `StylizeActor` that times its model calls: bench_bulk.py), and
    `around_photos`, a context manager entered while the photo pipeline's rows stream in
    (bench_streaming.py: first output, object-store peak)."""

    actor: type[StylizeActor] = StylizeActor
    around_photos: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext


def run_bulk(config: BulkConfig, probes: Probes = Probes()) -> Summary:
    """Stylize every image under config.input that is not done yet; returns the summary."""
    from stylekit.nn.modelio import file_digest

    started = time.time()
    options = config.storage_options.resolved()
    layout = RunLayout.for_config(config)
    for flag, location in (("--input", layout.input_root), ("--output", layout.output_root)):
        storage.require_shared(location, flag)
    storage.require_shared(config.model, "--model")
    if config.keys:
        storage.require_shared(config.keys, "--keys")
    # Before any work; the probe goes where the manifest will, not among the outputs.
    storage.check_writable(storage.join(layout.output_root, MANIFEST_DIR), options, folder=True)
    sources = [config.model, config.then] if config.then else [config.model]  # --then: a chain
    models = [storage.read_bytes(zoo.resolve(m), options) for m in sources]  # unknown names: one line
    for source, data in zip(sources, models, strict=True):
        if (shipped := zoo.shipped_name(source)) is not None:
            zoo.verify(shipped, data)  # a damaged or replaced file: one line, as `stylize` says
    digests = [file_digest(m) for m in models]
    digest = digests[0] if len(digests) == 1 else hashlib.sha256("+".join(digests).encode()).hexdigest()[:16]
    log.info(
        "run %s: model %s%s (digest %s), %s -> %s",
        layout.run_id,
        redact(config.model),
        f" then {redact(config.then)}" if config.then else "",
        digest,
        redact(layout.input_root),
        redact(layout.output_root),
    )
    # A lease lost to another run, or the Ray cluster gone, ends the run at once (bulk/stop.py).
    stopper = RunStopper()
    # One run per output at a time (bulk/plan/lease.py): waits for, or refuses, a run that holds it.
    lease = OutputLease(
        layout.output_root,
        layout.run_id,
        options,
        ttl=config.lease_ttl,
        wait=config.lease_wait,
        take=config.take_lease,
        manifest_dir=MANIFEST_DIR,
        on_lost=stopper.stop,
    )
    stopper.lease = lease
    with stopper, lease:
        return _run_leased(config, probes, layout, options, models, digest, started, stopper)


def _run_leased(
    config: BulkConfig,
    probes: Probes,
    layout: RunLayout,
    options: storage.StorageOptions,
    models: list[bytes],
    digest: str,
    started: float,
    stopper: RunStopper,
) -> Summary:
    """The run itself, while it holds the output's lease."""
    # The models are checked (torch imported, the networks built: seconds) in a helper thread,
    # beside the listing and Ray's start; a bad model still ends the run before any output,
    # and before a first run records its settings.
    with ThreadPoolExecutor(1, "stylekit-model-check") as pool:
        checked = pool.submit(_check_models, config, models)
        first_run = check_output_settings(config, layout, digest, options, record=False)
        run_metrics = RunMetrics(redact(layout.output_root))  # Ray's Prometheus endpoint
        with ManifestWriter(layout.manifest_dir, options, on_rows=run_metrics.rows) as manifest:
            stopper.manifest = manifest
            plan = plan_inputs(config, layout, manifest, digest)
            log.info(
                "%d inputs: %d to stylize, %d done before, %d failed before stylizing",
                plan.listed,
                plan.todo,
                plan.skipped,
                plan.failed,
            )
            try:
                # Ray only when there is work (a night with nothing new starts nothing), and
                # only where it pays: a small machine with no cluster runs it here (bulk/engines/local.py).
                engine = _engine(config, plan, checked) if plan.todo else "none"
                if engine == "ray":
                    init_ray()
                checked.result()
            except StylekitError:
                storage.delete_tree(layout.keys_dir, options)
                raise
            if first_run:
                record_output_settings(config, layout, digest, options)
            if engine == "ray":
                with ClusterWatch(stopper.stop):  # the head gone: one line, not Ray's exit 1
                    _stylize(config, layout, plan, digest, models, manifest, run_metrics, probes)
            elif engine == "local":
                progress = _Progress(plan.todo, config.progress_every)

                def rows(table: pa.Table) -> None:
                    manifest.add(table)
                    progress.update(table)

                with probes.around_photos():
                    stylize_here(config, layout, plan, digest, models, rows)
                progress.log_line(final=True)
    storage.delete_tree(layout.keys_dir, options)
    if config.overwrite:
        record_output_settings(config, layout, digest, options)
    # The morning report, OUT/_manifest/run=<id>/_report.html; never fails the night.
    write_report_quietly(layout.output_root, layout.run_id, options, layout.input_root)
    summary = _summary(manifest, layout, digest, time.time() - started)
    # The run ended: its manifest lists every input (bulk/plan/records.py reads no run before it).
    storage.write_bytes(storage.join(layout.manifest_dir, SUMMARY_FILE), summary.to_json().encode(), options)
    return summary


def _engine(config: BulkConfig, plan: Plan, checked: Future[bool]) -> str:
    """--engine, with auto decided: local on a small machine (at most LOCAL_MAX_CPUS CPUs, no
    GPU) with no Ray cluster to join and no videos in the night; else ray."""
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


def _check_models(config: BulkConfig, models: list[bytes]) -> bool:
    """Load each model file as the actors will: a bad file, or a chain that cannot work, is
    a one-line error here, before any Ray work. True when this machine has a CUDA GPU."""
    import torch

    from stylekit.nn.modelio import load_model_bytes

    loaded = load_model_bytes(models[0], name=config.model)
    if output_scale(loaded.model) != 1 and config.style_controls.active:
        raise ConfigError("--strength, --preserve-color and --style-scale apply to style models only")
    if config.then:
        then = load_model_bytes(models[1], name=config.then)
        if output_scale(then.model) == 1:
            raise ConfigError(f"--then {config.then} is not a super-resolution model; give e.g. sr_x4")
    return torch.cuda.is_available()


def _stylize(
    config: BulkConfig,
    layout: RunLayout,
    plan: Plan,
    digest: str,
    models: list[bytes],
    manifest: ManifestWriter,
    run_metrics: RunMetrics,
    probes: Probes,
) -> None:
    """The Ray part: photos through the actor pool, then videos."""
    run_metrics.flush()  # the listing's rows, counted before Ray was up
    actors = plan_on_nodes(lambda nodes: plan_actors(config, nodes), config.wait_for_nodes)
    log.info("stylizing with %s", actors.describe())
    # The actors get the very bytes checked here, through the object store: the same
    # model everywhere, and a local model file works on a multi-node cluster too.
    refs = [ray.put(m) for m in models]
    clock = start_clock()  # the stall watchdog's (bulk/engines/watch.py)
    if plan.todo > plan.videos:
        dataset = build_dataset(config, layout, plan, actors, digest, refs, actor=probes.actor, clock=clock)
        with probes.around_photos():
            _consume(dataset, manifest, plan, config, clock, run_metrics)
    if plan.videos:  # one video per task, after the photos (stylekit/bulk/engines/ray_videos.py)
        videos = build_video_dataset(config, layout, plan, actors, digest, refs, clock)
        consume_videos(videos, manifest, plan.videos, config.stall_timeout, clock)


# --- the driver's side ------------------------------------------------------------------------


def _consume(
    dataset: ray.data.Dataset,
    manifest: ManifestWriter,
    plan: Plan,
    config: BulkConfig,
    clock: object,
    run_metrics: RunMetrics | None = None,
) -> None:
    """Stream the manifest rows to storage and log progress as they come; a pipeline that
    stops moving for --stall-timeout ends the job with one line (bulk/engines/watch.py)."""
    progress = _Progress(plan.todo - plan.videos, config.progress_every, run_metrics)
    batches = dataset.iter_batches(batch_format="pyarrow", batch_size=None)
    settled = lambda: sum(manifest.counts.values())  # noqa: E731
    try:
        for table in watched(batches, config.stall_timeout, clock, settled):
            manifest.add(table)
            progress.update(table)
    except (ray.exceptions.RayError, ray.data.exceptions.SystemException) as e:
        raise RunFailed(f"the Ray pipeline failed: {root_cause(e)}") from None
    progress.log_line(final=True)


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


def _summary(manifest: ManifestWriter, layout: RunLayout, digest: str, seconds: float) -> Summary:
    counts = manifest.counts
    if counts[FAILED]:
        log.warning("%d input(s) failed; see status = 'failed' in %s", counts[FAILED], layout.manifest_dir)
    return Summary(
        ok=counts[OK],
        failed=counts[FAILED],
        skipped=counts[SKIPPED],
        images_per_s=round(counts[OK] / max(seconds, 1e-9), 3),
        seconds=round(seconds, 3),
        manifest=redact(layout.manifest_dir),
        run_id=layout.run_id,
        model_digest=digest,
        input=redact(layout.input_root),
        output=redact(layout.output_root),
    )
