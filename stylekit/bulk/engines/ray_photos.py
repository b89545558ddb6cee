"""The bulk job's Ray Data stages for photos, each row carrying its status, so one bad input is
a failed row, never a failed job:

- CPU-only: key shards -> blocks of keys -> `StylizeActor`, which reads, decodes, stylizes,
  encodes and writes each block in its own threads (stylekit/bulk/engines/blocks.py);
- GPUs: key shards -> decode tasks -> `StylizeActor` -> write tasks, so the GPU never waits
  for the codecs.
"""

from __future__ import annotations

import io
import os
import time
from typing import TYPE_CHECKING, Any

# Before torch loads its OpenMP runtime in an actor's process (this module is imported first
# there, to unpickle the actor class): OpenMP workers that spin after each parallel region take
# the cores from NNPACK's thread pool and from the codec threads (see stylekit/__main__.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from stylekit.bulk.config import BulkConfig
from stylekit.bulk.engines.backpressure import bound_backlogs
from stylekit.bulk.engines.blocks import BlockContext, BlockRunner
from stylekit.bulk.engines.sizing import ActorPlan
from stylekit.bulk.engines.timeouts import DecodeTimeout, run_within  # noqa: F401 (DecodeTimeout: its home before)
from stylekit.bulk.engines.watch import tick
from stylekit.bulk.plan.layout import RunLayout
from stylekit.bulk.plan.manifest import FAILED, OK, manifest_table
from stylekit.bulk.plan.planner import KEYS_SCHEMA, Plan
from stylekit.files import images, storage
from stylekit.logs import setup_logging
from stylekit.redact import describe, redact

if TYPE_CHECKING:  # torch is imported by the actors, never by codec tasks
    from stylekit.infer.inference import InferenceOptions

DECODED, STYLIZED = "decoded", "stylized"  # in-flight statuses; rows end as ok or failed
EMPTY = np.zeros((0, 0, 3), np.uint8)  # the pixels of a row that has none


def build_dataset(
    config: BulkConfig,
    layout: RunLayout,
    plan: Plan,
    actors: ActorPlan,
    digest: str,
    models: list[ray.ObjectRef],
    actor: type[StylizeActor] | None = None,
    clock: Any = None,
) -> ray.data.Dataset:
    """The lazy Ray Dataset: key shards -> decode tasks -> stylize actors -> write tasks.
    `models` hold the model file's bytes (and the --then model's); `actor` is the stylize
    stage's class (`StylizeActor`, or a subclass a benchmark times); each stage ticks `clock`
    (bulk/engines/watch.py's StageClock) with the rows it finished."""
    options = config.storage_options.resolved()
    # One block per key shard, read by a task of its own (read_parquet would merge small shards
    # into one block), then cut into batches, so the decode work of a shard spreads over many
    # tasks. The cut of a shard is one task that decoding waits for on a small cluster: the
    # first shards are small (planner.FIRST_SHARD_KEYS), so the first outputs do not wait long.
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
    actor_args = {
        "model": models,  # in a list: Ray resolves only top-level refs, and not for Ray Data
        "name": config.model,
        "inference": config.inference_options,
        "threads": None if actors.num_gpus else actors.threads,
        "cpus": actors.num_cpus,
        "output": redact(layout.output_root),
        "clock": clock,
    }
    compute = ray.data.ActorPoolStrategy(min_size=actors.min_size, max_size=actors.max_size)
    if actors.codecs_inside:
        rows = block_rows(config, plan, actors)
        ds = ds.repartition(target_num_rows_per_block=rows)
        block = BlockContext.for_run(config, layout, options, digest)
        ds = ds.map_batches(
            actor or StylizeActor,
            fn_constructor_kwargs={**actor_args, "block": block},
            compute=compute,
            batch_size=rows,
            batch_format="pyarrow",
            num_cpus=actors.num_cpus,
            **actors.ray_args,
        )
        bound_backlogs(ds.context)
        return ds
    ds = ds.repartition(target_num_rows_per_block=config.run_options.batch_size)
    ds = ds.map_batches(
        decode_batch,
        fn_kwargs={
            "input_root": layout.input_root,
            "options": options,
            "decode": config.decode_options,
            "timeout": config.decode_timeout,
            "clock": clock,
            "max_bytes": config.max_bytes,
        },
        batch_size=config.run_options.batch_size,
        batch_format="numpy",
        num_cpus=actors.task_cpus,
        memory=decode_memory(config, actors.node_memory),
    )
    # Decode blocks are already model batches (the repartition above; decoding keeps every
    # row). Decoding stays out of the actors, where it would run between model calls, because
    # its remote arguments differ (`memory`): Ray fuses a task stage into an actor stage only
    # when they are equal.
    ds = ds.map_batches(
        actor or StylizeActor,
        fn_constructor_kwargs=actor_args,
        compute=compute,
        batch_size=config.run_options.batch_size,
        batch_format="numpy",
        num_cpus=actors.num_cpus,
        num_gpus=actors.num_gpus,
        **actors.ray_args,
    )
    ds = ds.map_batches(
        write_batch,
        fn_kwargs={
            "layout": layout,
            "options": options,
            "quality": config.encode_options.quality,
            "digest": digest,
            "clock": clock,
        },
        batch_size=config.run_options.batch_size,
        batch_format="numpy",
        # No CPU reserved: Ray Data hands a small cluster's CPUs to the upstream stages first,
        # so a write stage that needs one waited for every decode to finish. Writes run only
        # as batches leave the actors, at most `writes_in_flight` at a time.
        num_cpus=0,
        compute=ray.data.TaskPoolStrategy(size=actors.writes_in_flight),
    )
    bound_backlogs(ds.context)  # each stage at most a few batches ahead of the next
    return ds


# Inputs per block on CPU actors: many, so Ray's cost per block (a task, its object-store
# round trips, a manifest table) spreads over them; few enough that every actor gets many
# blocks (MIN_BLOCKS_PER_ACTOR), so a small night still spreads over the pool and its manifest
# rows (progress, what a stalled or killed run has settled) come in often.
MAX_BLOCK_ROWS = 256
MIN_BLOCKS_PER_ACTOR = 16


def block_rows(config: BulkConfig, plan: Plan, actors: ActorPlan) -> int:
    """Inputs per block for actors that run whole blocks (`ActorPlan.codecs_inside`)."""
    per_actor = -(-(plan.todo - plan.videos) // (MIN_BLOCKS_PER_ACTOR * max(1, actors.max_size)))
    return max(config.run_options.batch_size, min(MAX_BLOCK_ROWS, per_actor))


def read_keys(batch: pa.Table, options: storage.StorageOptions) -> pa.Table:
    """The key rows of the shard(s) named in `batch` (with storage's retries)."""
    return pa.concat_tables(
        [
            pq.read_table(io.BytesIO(storage.read_bytes(str(shard), options)), schema=KEYS_SCHEMA)
            for shard in batch.column("shard").to_pylist()
        ]
    )


def decode_memory(config: BulkConfig, node_memory: float) -> int:
    """Bytes a decode task reserves: a batch of images at --max-pixels as uint8 RGB, all held
    until the batch is returned, so Ray packs no more decode tasks onto a node than fit.
    At most half the largest node's memory (`node_memory`, 0 if unknown), so one task can
    always be placed on one node."""
    most = int(config.decode_options.max_pixels * 3 * config.run_options.batch_size)
    return min(most, int(node_memory / 2)) if node_memory > 0 else most


def decode_batch(
    batch: dict[str, np.ndarray],
    input_root: str,
    options: storage.StorageOptions,
    decode: images.DecodeOptions,
    timeout: float = 120.0,
    clock: Any = None,
    max_bytes: int | None = None,
) -> dict[str, np.ndarray]:
    """Read and decode each input (at most `max_bytes` of it); a failure, or an input taking
    over `timeout` seconds, is recorded on its row, never raised."""
    n = len(batch["key"])
    pixels = _objects([EMPTY] * n)
    status, error = np.full(n, DECODED, dtype=object), np.full(n, "", dtype=object)
    hashes = np.full(n, "", dtype=object)
    seconds = np.zeros(n, dtype=np.float64)

    def read(i: int, location: str) -> np.ndarray:
        data = storage.read_bytes(location, options, limit=max_bytes)
        hashes[i] = storage.content_hash(data)
        return images.decode(data, decode)

    for i, key in enumerate(batch["key"]):
        t0 = time.perf_counter()
        location = storage.join(input_root, str(key))
        try:
            pixels[i] = run_within(timeout, lambda i=i, loc=location: read(i, loc))
        except Exception as e:
            pixels[i], status[i], error[i] = EMPTY, FAILED, describe(e)
        seconds[i] = time.perf_counter() - t0
    sizes = [p.shape[:2] for p in pixels]
    tick(clock, "decode", n)
    return {
        "key": batch["key"],
        "output_key": batch["output_key"],
        "input_bytes": batch["input_bytes"],
        "input_hash": hashes,
        **{
            name: batch.get(name, np.full(n, "", dtype=object))
            for name in ("input_version", "record_version", "record_hash")
        },
        "status": status,
        "error": error,
        "width": np.array([w for _, w in sizes], dtype=np.int32),
        "height": np.array([h for h, _ in sizes], dtype=np.int32),
        "seconds": seconds,
        "pixels": pixels,
    }


def _objects(arrays: list[np.ndarray]) -> np.ndarray:
    """A 1-D object array of images of any sizes (Ray stores it as a variable-shape tensor
    column); element-wise, as numpy would otherwise try to stack same-shape arrays."""
    out = np.empty(len(arrays), dtype=object)
    for i, a in enumerate(arrays):
        out[i] = a
    return out


class StylizeActor:
    """Holds one model on one device (loaded once per actor) and stylizes decoded rows; with
    `block` (CPU actors), runs whole blocks of keys instead: read, decode, stylize, encode and
    write in its own threads (stylekit/bulk/engines/blocks.py), returning manifest rows."""

    def __init__(
        self,
        model: list[ray.ObjectRef],
        name: str,
        inference: InferenceOptions,
        threads: int | None,
        cpus: float = 1.0,
        output: str = "",
        clock: Any = None,
        block: BlockContext | None = None,
    ):
        from stylekit.bulk.engines.models import BulkModels
        from stylekit.bulk.metrics import ActorMetrics

        setup_logging()
        # `threads`: the actor's share of its node's CPUs, no more.
        self.models = BulkModels([ray.get(m) for m in model], name, inference, threads, cpus)
        self.stylizer, self.then = self.models.stylizer, self.models.then
        self.metrics = ActorMetrics(output)  # the stage's busy share, on Ray's metrics endpoint
        self.clock = clock
        # Codec threads: at least two, so a read or write waiting on storage hides behind another.
        self.blocks = (
            BlockRunner(block, self._timed_stylize, threads=max(2, threads or 1), tick=self._tick)
            if block
            else None
        )

    def __call__(self, batch: dict[str, np.ndarray] | pa.Table) -> dict[str, np.ndarray] | pa.Table:
        if self.blocks is not None:
            return self.blocks(batch)  # type: ignore[arg-type]
        return self._stylize_rows(batch)  # type: ignore[arg-type]

    def _tick(self, stage: str, rows: int) -> None:
        tick(self.clock, stage, rows)

    def _timed_stylize(self, pixels: list[np.ndarray]) -> list[np.ndarray | Exception]:
        t0 = time.perf_counter()
        try:
            return self._stylize(pixels)
        finally:
            self.metrics.busy(time.perf_counter() - t0)

    def _stylize_rows(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["key"])
        todo = [i for i in range(n) if batch["status"][i] == DECODED]
        t0 = time.perf_counter()
        results = self._stylize([batch["pixels"][i] for i in todo])
        busy = time.perf_counter() - t0
        self.metrics.busy(busy)
        share = busy / max(1, len(todo))
        pixels = _objects([EMPTY] * n)
        status, error = np.array(batch["status"], dtype=object), np.array(batch["error"], dtype=object)
        seconds = np.array(batch["seconds"], dtype=np.float64)
        for i, result in zip(todo, results, strict=True):
            seconds[i] += share
            if isinstance(result, Exception):
                status[i], error[i] = FAILED, f"stylizing failed: {describe(result)}"
            else:
                pixels[i], status[i] = result, STYLIZED
        tick(self.clock, "stylize", n)
        return {**batch, "status": status, "error": error, "seconds": seconds, "pixels": pixels}

    def _stylize(self, pixels: list[np.ndarray]) -> list[np.ndarray | Exception]:
        return self.models.stylize(pixels)


def write_batch(
    batch: dict[str, np.ndarray],
    layout: RunLayout,
    options: storage.StorageOptions,
    quality: int,
    digest: str,
    clock: Any = None,
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
    tick(clock, "write", n)
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
        **{name: [str(v) for v in batch[name]] if name in batch else [""] * n for name in RECORD_COLUMNS},
    }
    return manifest_table(columns, layout, digest)


RECORD_COLUMNS = ("input_version", "input_hash", "record_version", "record_hash")
