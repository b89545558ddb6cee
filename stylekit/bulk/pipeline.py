"""Nightly bulk stylization with Ray Data: every image under IN -> OUT at the same relative key.

Design, in the order data flows:

1. Listing and skip check, on the driver (`bulk_plan`): the listing of IN is streamed (S3 pages
   of 1000 keys) and each page is merged against one range listing of OUT in a helper thread;
   inputs still to do go into Parquet key shards (256 keys, doubling up to 20,000) under
   OUT/_manifest/_keys/<run-id>/, the rest straight into the manifest. Listing is a sequential
   walk in any case (S3 continuation tokens), so the check hides inside it and costs about one
   request per 1000 inputs; a glob by Ray instead would hold every path in the driver, and an
   existence check per row inside Ray would cost a HEAD per input and per night, plus a pass
   of every done input through the pipeline. Ray is started (or joined) only if there is
   work. The listing completes before stylizing starts: a wait of a minute or two per million
   S3 keys, traded for a plain, restartable plan.
2. The key shards, one read task and one block each (`read_keys`), cut into blocks of
   --batch-size rows so that decoding spreads over the cluster's CPUs.
3. Read + decode in CPU tasks (`decode_batch`): EXIF orientation, modes, 16-bit, --max-side and
   --max-pixels through `images.decode`. A bad image becomes a row with status failed.
4. Stylize in an actor pool (`StylizeActor`): each actor loads the model once (the bytes the
   driver checked, through the object store) and runs the same `inference.Stylizer` as
   `python -m stylekit stylize`, so pixels are the CLI's. Actors get
   GPUs when the cluster has any, else a share of CPUs that leaves some to the codec tasks.
   The decode tasks are kept out of the actor (Ray would otherwise fuse them into it), and Ray
   queues several batches per actor, so the model does not wait for codec work.
   With --then SR_MODEL each actor also holds a super-resolution model and upscales every
   result in the same pass (stylize at a low resolution, then super-resolve: a 4K result for a
   fraction of the style network's cost at 4K); the run's digest covers both models.
5. Encode + atomic write in tasks (`write_batch`), returning manifest rows.
6. The driver consumes the small manifest rows as they stream out, writes them as Parquet parts
   under OUT/_manifest/run=<run-id>/ and logs progress. The key shards are deleted at the end.

Each stage runs at most a few batches ahead of the next (stylekit/bulk/backpressure.py), so
the first outputs are written within seconds of the actors' start and the object store holds
a bounded number of decoded batches, whatever the number of inputs.

Videos under IN take their own path after the photos: one video per actor call, decoded,
stylized and encoded inside the actor (stylekit/bulk/video.py).

Incremental reruns, interrupted runs and the manifest's format are described in `bulk_plan`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import ray.data.exceptions

from stylekit.bulk.backpressure import bound_backlogs
from stylekit.bulk.plan import (
    FAILED,
    KEYS_SCHEMA,
    MANIFEST_DIR,
    OK,
    SKIPPED,
    BulkConfig,
    ManifestWriter,
    Plan,
    RunLayout,
    check_output_settings,
    manifest_table,
    plan_inputs,
    record_output_settings,
)
from stylekit.bulk.video import build_video_dataset, consume_videos
from stylekit.errors import ConfigError, StylekitError, first_line
from stylekit.files import images, storage, zoo
from stylekit.logs import format_duration, setup_logging
from stylekit.nn.sr import output_scale
from stylekit.ray_env import init_ray

if TYPE_CHECKING:  # torch is imported by the actors and the driver, never by codec tasks
    from stylekit.infer.inference import InferenceOptions

log = logging.getLogger(__name__)

DECODED, STYLIZED = "decoded", "stylized"  # in-flight statuses; rows end as ok or failed
EMPTY = np.zeros((0, 0, 3), np.uint8)  # the pixels of a row that has none
MAX_CPU_THREADS = 4  # torch scales poorly past this on CPU; more actors do better


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
        return json.dumps(asdict(self), ensure_ascii=False)


def run_bulk(config: BulkConfig) -> Summary:
    """Stylize every image under config.input that is not done yet; returns the summary."""
    from stylekit.files.modelio import load_model_bytes

    started = time.time()
    options = config.storage_options.resolved()
    layout = RunLayout.for_config(config)
    for flag, location in (("--input", layout.input_root), ("--output", layout.output_root)):
        storage.require_shared(location, flag)
    storage.require_shared(config.model, "--model")
    # Before any work; the probe goes where the manifest will, not among the outputs.
    storage.check_writable(storage.join(layout.output_root, MANIFEST_DIR), options, folder=True)
    model_bytes = storage.read_bytes(zoo.resolve(config.model), options)  # unknown names: one line
    loaded = load_model_bytes(model_bytes, name=config.model)  # a bad model fails here, at once
    if output_scale(loaded.model) != 1 and config.inference_options.controls_active:
        raise ConfigError("--strength, --preserve-color and --style-scale apply to style models only")
    models, digest = [model_bytes], loaded.digest
    if config.then:  # a two-model chain: the outputs depend on both models
        then_bytes = storage.read_bytes(zoo.resolve(config.then), options)
        then = load_model_bytes(then_bytes, name=config.then)
        if output_scale(then.model) == 1:
            raise ConfigError(f"--then {config.then} is not a super-resolution model; give e.g. sr_x4")
        models.append(then_bytes)
        digest = hashlib.sha256(f"{loaded.digest}+{then.digest}".encode()).hexdigest()[:16]
    log.info(
        "run %s: model %s%s (digest %s), %s -> %s",
        layout.run_id,
        storage.redact(config.model),
        f" then {storage.redact(config.then)}" if config.then else "",
        digest,
        storage.redact(layout.input_root),
        storage.redact(layout.output_root),
    )
    check_output_settings(config, layout, digest, options)
    with ManifestWriter(layout.manifest_dir, options) as manifest:
        plan = plan_inputs(config, layout, manifest, digest)
        log.info(
            "%d inputs: %d to stylize, %d done before, %d failed before stylizing",
            plan.listed,
            plan.todo,
            plan.skipped,
            plan.failed,
        )
        if plan.todo:  # Ray only when there is work: a night with nothing new starts nothing
            init_ray()
            actors = plan_actors(config, ray.cluster_resources())
            log.info("stylizing with %s", actors.describe())
            # The actors get the very bytes checked here, through the object store: the same
            # model everywhere, and a local model file works on a multi-node cluster too.
            refs = [ray.put(m) for m in models]
            if plan.todo > plan.videos:
                dataset = build_dataset(config, layout, plan, actors, digest, refs)
                _consume(dataset, manifest, plan, config.progress_every)
            if plan.videos:  # one video per task, after the photos (stylekit/bulk/video.py)
                videos = build_video_dataset(config, layout, plan, actors, digest, refs[0])
                consume_videos(videos, manifest, plan.videos)
    storage.delete_tree(layout.keys_dir, options)
    if config.overwrite:
        record_output_settings(config, layout, digest, options)
    return _summary(manifest, layout, digest, time.time() - started)


# --- sizing the actor pool --------------------------------------------------------------------


@dataclass(frozen=True)
class ActorPlan:
    """How many stylizing actors, and what each reserves."""

    min_size: int
    max_size: int
    num_cpus: float
    num_gpus: float
    task_cpus: float  # per decode / encode task

    @property
    def writes_in_flight(self) -> int:
        """Write tasks at once: enough to keep up with each actor's batches (an encode of a
        batch can take longer than a GPU's model call)."""
        return max(2, 4 * self.max_size)

    @property
    def threads(self) -> int:
        return max(1, int(self.num_cpus))

    def describe(self) -> str:
        size = f"{self.min_size}" if self.min_size == self.max_size else f"{self.min_size}-{self.max_size}"
        device = (
            f"{self.num_gpus:g} GPU + {self.num_cpus:g} CPU" if self.num_gpus else f"{self.num_cpus:g} CPU"
        )
        return f"{size} actor(s) of {device} each"


def plan_actors(config: BulkConfig, resources: dict[str, float]) -> ActorPlan:
    """Size the pool from the cluster: GPUs when there are any (unless --gpus-per-actor 0),
    else CPUs, always leaving CPUs to the decode and encode tasks so nothing deadlocks."""
    cpus, gpus = float(resources.get("CPU", 1)), float(resources.get("GPU", 0))
    per_gpu = config.gpus_per_actor if config.gpus_per_actor is not None else (1.0 if gpus >= 1 else 0.0)
    task_cpus = 1.0 if cpus >= 2 else 0.5
    if per_gpu > 0:
        if gpus < per_gpu:
            raise ConfigError(
                f"--gpus-per-actor {per_gpu:g} asked for, but the Ray cluster has {gpus:g} GPUs; "
                "use --gpus-per-actor 0 to run on CPUs"
            )
        per_cpu = config.cpus_per_actor or 1.0
        most = math.floor(gpus / per_gpu + 1e-9)
        low, high = config.actor_range or (1, most)
        _check_fits(low, per_gpu, gpus, "GPUs")
        _check_fits(low, per_cpu, cpus - task_cpus, "CPUs (one kept for decoding)")
        return ActorPlan(low, high, per_cpu, per_gpu, task_cpus)
    spare = max(cpus - _codec_cpus(cpus), task_cpus)
    per_cpu = config.cpus_per_actor or max(min(float(MAX_CPU_THREADS), spare), task_cpus)
    low, high = config.actor_range or (max(1, math.floor(spare / per_cpu)),) * 2
    _check_fits(low, per_cpu, cpus - task_cpus, "CPUs (one kept for decoding)")
    return ActorPlan(low, high, per_cpu, 0.0, task_cpus)


def _codec_cpus(cpus: float) -> float:
    """CPUs kept for decode/encode tasks on a CPU-only cluster: a quarter, at least one."""
    return max(1.0, math.floor(cpus / 4)) if cpus >= 2 else cpus / 2


def _check_fits(actors: int, each: float, available: float, what: str) -> None:
    if actors * each > available + 1e-9:
        raise ConfigError(
            f"{actors} actor(s) x {each:g} need more than the {max(available, 0):g} {what} of "
            "this Ray cluster; lower --actors or the per-actor resources"
        )


# --- the pipeline -----------------------------------------------------------------------------


def build_dataset(
    config: BulkConfig,
    layout: RunLayout,
    plan: Plan,
    actors: ActorPlan,
    digest: str,
    models: list[ray.ObjectRef],
) -> ray.data.Dataset:
    """The lazy Ray Dataset: key shards -> decode tasks -> stylize actors -> write tasks.
    `models` hold the model file's bytes (and the --then model's)."""
    options = config.storage_options.resolved()
    # One block per key shard, read by a task of its own (read_parquet would merge small shards
    # into one block), then cut into batches, so the decode work of a shard spreads over many
    # tasks. The cut of a shard is one task that decoding waits for on a small cluster: the
    # first shards are small (plan.FIRST_SHARD_KEYS), so the first outputs do not wait long.
    ds = ray.data.from_items(
        [{"shard": shard} for shard in plan.shards], override_num_blocks=len(plan.shards)
    )
    ds = ds.map_batches(
        read_keys,
        fn_kwargs={"options": options},
        batch_size=1,
        batch_format="pyarrow",
        num_cpus=actors.task_cpus,
    )
    ds = ds.repartition(target_num_rows_per_block=config.batch_size)
    ds = ds.map_batches(
        decode_batch,
        fn_kwargs={
            "input_root": layout.input_root,
            "options": options,
            "decode": config.decode_options,
            "timeout": config.decode_timeout,
        },
        batch_size=config.batch_size,
        batch_format="numpy",
        num_cpus=actors.task_cpus,
        memory=decode_memory(config, ray.cluster_resources()),
    )
    # Decode blocks are already model batches (the repartition above; decoding keeps every
    # row). Decoding stays out of the actors, where it would run between model calls, because
    # its remote arguments differ (`memory`): Ray fuses a task stage into an actor stage only
    # when they are equal.
    ds = ds.map_batches(
        StylizeActor,
        fn_constructor_kwargs={
            "model": models,  # in a list: Ray resolves only top-level refs, and not for Ray Data
            "name": config.model,
            "inference": config.inference_options,
            "threads": None if actors.num_gpus else actors.threads,
            "cpus": actors.num_cpus,
        },
        compute=ray.data.ActorPoolStrategy(min_size=actors.min_size, max_size=actors.max_size),
        batch_size=config.batch_size,
        batch_format="numpy",
        num_cpus=actors.num_cpus,
        num_gpus=actors.num_gpus,
    )
    ds = ds.map_batches(
        write_batch,
        fn_kwargs={
            "layout": layout,
            "options": options,
            "quality": config.quality,
            "digest": digest,
        },
        batch_size=config.batch_size,
        batch_format="numpy",
        # No CPU reserved: Ray Data hands a small cluster's CPUs to the upstream stages first,
        # so a write stage that needs one waited for every decode to finish. Writes run only
        # as batches leave the actors, at most `writes_in_flight` at a time.
        num_cpus=0,
        compute=ray.data.TaskPoolStrategy(size=actors.writes_in_flight),
    )
    bound_backlogs(ds.context)  # each stage at most a few batches ahead of the next
    return ds


def read_keys(batch: pa.Table, options: storage.StorageOptions) -> pa.Table:
    """The key rows of the shard(s) named in `batch` (with storage's retries)."""
    return pa.concat_tables(
        [
            pq.read_table(io.BytesIO(storage.read_bytes(str(shard), options)), schema=KEYS_SCHEMA)
            for shard in batch.column("shard").to_pylist()
        ]
    )


def decode_memory(config: BulkConfig, resources: dict[str, float]) -> int:
    """Bytes a decode task reserves: a batch of images at --max-pixels as uint8 RGB, all held
    until the batch is returned, so Ray packs no more decode tasks onto a node than fit.
    At most half the cluster's memory, so one task can always be scheduled."""
    most = int(config.max_pixels * 3 * config.batch_size)
    return min(most, int(resources.get("memory", most * 2) / 2))


def decode_batch(
    batch: dict[str, np.ndarray],
    input_root: str,
    options: storage.StorageOptions,
    decode: images.DecodeOptions,
    timeout: float = 120.0,
) -> dict[str, np.ndarray]:
    """Read and decode each input; a failure, or an input taking over `timeout` seconds, is
    recorded on its row, never raised."""
    n = len(batch["key"])
    pixels = _objects([EMPTY] * n)
    status, error = np.full(n, DECODED, dtype=object), np.full(n, "", dtype=object)
    seconds = np.zeros(n, dtype=np.float64)
    for i, key in enumerate(batch["key"]):
        t0 = time.perf_counter()
        location = storage.join(input_root, str(key))
        try:
            pixels[i] = _within(
                timeout, lambda loc=location: images.decode(storage.read_bytes(loc, options), decode)
            )
        except Exception as e:
            pixels[i], status[i], error[i] = EMPTY, FAILED, describe(e)
        seconds[i] = time.perf_counter() - t0
    sizes = [p.shape[:2] for p in pixels]
    return {
        "key": batch["key"],
        "output_key": batch["output_key"],
        "input_bytes": batch["input_bytes"],
        "status": status,
        "error": error,
        "width": np.array([w for _, w in sizes], dtype=np.int32),
        "height": np.array([h for h, _ in sizes], dtype=np.int32),
        "seconds": seconds,
        "pixels": pixels,
    }


class DecodeTimeout(StylekitError):
    """Reading and decoding one input took longer than --decode-timeout."""


def _within(seconds: float, call: Callable[[], np.ndarray]) -> np.ndarray:
    """`call()` in a helper thread, given up on after `seconds`. Python cannot stop a thread:
    a hung decode is left behind as a daemon thread (it ends with the worker process), but
    the batch, and the task, go on without it."""
    result: list[np.ndarray] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(call())
        except BaseException as e:
            failure.append(e)

    thread = threading.Thread(target=run, name="stylekit-decode", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise DecodeTimeout(
            f"reading and decoding took longer than {seconds:g} s (--decode-timeout); given up"
        )
    if failure:
        raise failure[0]
    return result[0]


def _objects(arrays: list[np.ndarray]) -> np.ndarray:
    """A 1-D object array of images of any sizes (Ray stores it as a variable-shape tensor
    column); element-wise, as numpy would otherwise try to stack same-shape arrays."""
    out = np.empty(len(arrays), dtype=object)
    for i, a in enumerate(arrays):
        out[i] = a
    return out


class StylizeActor:
    """Holds one model on one device (loaded once per actor) and stylizes decoded rows."""

    def __init__(
        self,
        model: list[ray.ObjectRef],
        name: str,
        inference: InferenceOptions,
        threads: int | None,
        cpus: float = 1.0,
    ):
        import torch

        from stylekit.files.modelio import load_model_bytes
        from stylekit.infer import memory
        from stylekit.infer.inference import Stylizer

        setup_logging()
        if threads:
            torch.set_num_threads(threads)  # the CPUs Ray reserved for this actor, no more
        if inference.max_memory is None:  # the actor's CPU share of what its node has free
            free = memory.available_bytes()
            if free is not None:
                share = min(1.0, cpus / max(1, len(os.sched_getaffinity(0))))
                budget = memory.resident_bytes() + int(free * memory.DEFAULT_SHARE * share)
                inference = replace(inference, max_memory=budget)
        loaded = load_model_bytes(ray.get(model[0]), name=name)
        self.stylizer = Stylizer(loaded.model, inference)
        # --then: a super-resolution model upscales each result (the controls are the first's).
        plain = dataclasses.replace(inference, strength=1.0, preserve_color=False, style_scale=1.0)
        self.then = Stylizer(load_model_bytes(ray.get(model[1])).model, plain) if len(model) > 1 else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["key"])
        todo = [i for i in range(n) if batch["status"][i] == DECODED]
        t0 = time.perf_counter()
        results = self._stylize([batch["pixels"][i] for i in todo])
        share = (time.perf_counter() - t0) / max(1, len(todo))
        pixels = _objects([EMPTY] * n)
        status, error = np.array(batch["status"], dtype=object), np.array(batch["error"], dtype=object)
        seconds = np.array(batch["seconds"], dtype=np.float64)
        for i, result in zip(todo, results, strict=True):
            seconds[i] += share
            if isinstance(result, Exception):
                status[i], error[i] = FAILED, f"stylizing failed: {describe(result)}"
            else:
                pixels[i], status[i] = result, STYLIZED
        return {**batch, "status": status, "error": error, "seconds": seconds, "pixels": pixels}

    def _stylize(self, pixels: list[np.ndarray]) -> list[np.ndarray | Exception]:
        """All at once; if that fails (say, out of GPU memory), one by one, so only the images
        that fail alone are marked failed."""
        if not pixels:
            return []
        try:
            out = self.stylizer.stylize(pixels)
            return list(self.then.stylize(out) if self.then is not None else out)
        except Exception as e:
            if len(pixels) == 1:
                return [e]
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return [self._stylize([p])[0] for p in pixels]


def write_batch(
    batch: dict[str, np.ndarray],
    layout: RunLayout,
    options: storage.StorageOptions,
    quality: int,
    digest: str,
) -> pa.Table:
    """Encode and atomically write each stylized row; returns the rows as manifest rows."""
    n = len(batch["key"])
    status, error = [str(s) for s in batch["status"]], [str(e) for e in batch["error"]]
    out_bytes, seconds = [0] * n, [float(s) for s in batch["seconds"]]
    for i in range(n):
        if status[i] != STYLIZED:
            continue
        t0 = time.perf_counter()
        out = str(batch["output_key"][i])
        try:
            data = images.encode(np.asarray(batch["pixels"][i]), images.format_of(out), quality)
            storage.write_bytes(layout.output_uri(out), data, options)
            status[i], out_bytes[i] = OK, len(data)
        except Exception as e:
            status[i], error[i] = FAILED, f"writing failed: {describe(e)}"
        seconds[i] += time.perf_counter() - t0
    ok = [s == OK for s in status]
    columns = {
        "key": [str(k) for k in batch["key"]],
        "output_key": [str(k) for k in batch["output_key"]],
        "status": status,
        "error": error,
        # Sizes of the stylized (= oriented, possibly --max-side scaled) image, of written rows.
        "width": [int(w) if good else 0 for w, good in zip(batch["width"], ok, strict=True)],
        "height": [int(h) if good else 0 for h, good in zip(batch["height"], ok, strict=True)],
        "input_bytes": [int(b) for b in batch["input_bytes"]],
        "output_bytes": out_bytes,
        "seconds": seconds,
    }
    return manifest_table(columns, layout, digest)


def describe(e: BaseException) -> str:
    """A one-line error for the manifest, with any credentials masked."""
    message = first_line(str(e), 500) or type(e).__name__
    if not isinstance(e, StylekitError):
        message = f"{type(e).__name__}: {message}"
    return storage.redact(message)


# --- the driver's side ------------------------------------------------------------------------


def _consume(dataset: ray.data.Dataset, manifest: ManifestWriter, plan: Plan, every: float) -> None:
    """Stream the manifest rows to storage and log progress as they come."""
    progress = _Progress(plan.todo - plan.videos, every)
    try:
        for table in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
            manifest.add(table)
            progress.update(table)
    except (ray.exceptions.RayError, ray.data.exceptions.SystemException) as e:
        raise StylekitError(f"the Ray pipeline failed: {_root_cause(e)}") from None
    progress.log_line(final=True)


class _Progress:
    """Counts finished rows and logs `done/total, rate, ETA` every `every` seconds."""

    FAILURES_SHOWN = 20

    def __init__(self, total: int, every: float):
        self.total, self.every = total, every
        self.ok = self.failed = self.failures_shown = 0
        self.started = self.last = time.monotonic()
        self.logged = -1  # rows done at the last line

    def update(self, table: pa.Table) -> None:
        for row in table.select(["input", "status", "error"]).to_pylist():
            if row["status"] == OK:
                self.ok += 1
                continue
            self.failed += 1
            if self.failures_shown < self.FAILURES_SHOWN:
                self.failures_shown += 1
                log.warning("failed: %s: %s", row["input"], row["error"])
        if time.monotonic() - self.last >= self.every:
            self.log_line()

    def log_line(self, final: bool = False) -> None:
        """One progress line; the final one only when rows finished since the last."""
        done = self.ok + self.failed
        if final and done == self.logged:
            return
        self.last, self.logged = time.monotonic(), done
        rate = done / max(self.last - self.started, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        log.info(
            "stylized %d/%d (%d ok, %d failed), %.2f images/s, about %s left",
            done,
            self.total,
            self.ok,
            self.failed,
            rate,
            format_duration(eta),
        )


def _root_cause(e: BaseException) -> str:
    while e.__cause__ is not None:
        e = e.__cause__
    lines = [line for line in str(e).strip().splitlines() if line.strip()]
    return storage.redact(lines[-1] if lines else type(e).__name__)


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
        manifest=storage.redact(layout.manifest_dir),
        run_id=layout.run_id,
        model_digest=digest,
        input=storage.redact(layout.input_root),
        output=storage.redact(layout.output_root),
    )
