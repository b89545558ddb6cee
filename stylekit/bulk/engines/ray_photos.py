"""Photos on Ray Data, each row carrying its status, so one bad input is a failed row, never a
failed job. Two pipelines over the same key shards and the same actor class:

- `CpuBlocks` (CPU-only nodes): key shards -> blocks of keys -> `StylizeActor`, which reads,
  decodes, stylizes, encodes and writes each block in its own threads (bulk/engines/blocks.py);
- `GpuStages` (GPUs): key shards -> decode tasks -> `StylizeActor` -> write tasks, so the GPU
  never waits for the codecs.

Either way an input is read and decoded once; with several --style selections the actor runs
it through each selection's network still to do for it, and each output is a row of its own
from there on (rows.expand).
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

# Before torch loads its OpenMP runtime in an actor's process (this module is imported first
# there, to unpickle the actor class): OpenMP workers that spin after each parallel region take
# the cores from NNPACK's thread pool and from the codec threads (see stylekit/__main__.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pyarrow as pa
import ray
import ray.data.exceptions

from stylekit.bulk.config import BulkConfig
from stylekit.bulk.engines.backpressure import bound_backlogs
from stylekit.bulk.engines.blocks import BlockRunner
from stylekit.bulk.engines.key_blocks import key_blocks
from stylekit.bulk.engines.pool import RayPool
from stylekit.bulk.engines.rows import Outcomes, RowContext, expand
from stylekit.bulk.engines.watch import tick, watched
from stylekit.bulk.plan.manifest import FAILED, OK
from stylekit.errors import RunFailed
from stylekit.logs import setup_logging
from stylekit.redact import describe, redact, root_cause

if TYPE_CHECKING:  # torch is imported by the actors, never by codec tasks
    from stylekit.bulk.engines.engine import RowSink
    from stylekit.bulk.engines.sizing import ActorPlan
    from stylekit.bulk.run import BulkRun
    from stylekit.infer.inference import InferenceOptions
    from stylekit.infer.options import StyleChoice

DECODED, STYLIZED = "decoded", "stylized"  # in-flight statuses; rows end as ok or failed
EMPTY = np.zeros((0, 0, 3), np.uint8)  # the pixels of a row that has none

# Inputs per block on CPU actors: many, so Ray's cost per block (a task, its object-store
# round trips, a manifest table) spreads over them; few enough that every actor gets many
# blocks (MIN_BLOCKS_PER_ACTOR), so a small night still spreads over the pool and its manifest
# rows (progress, what a stalled or killed run has settled) come in often.
MAX_BLOCK_ROWS = 256
MIN_BLOCKS_PER_ACTOR = 16


def photo_engine(pool: RayPool, actor: type[StylizeActor] | None = None) -> RayPhotos:
    """The photo pipeline for the pool's actors: whole blocks inside CPU actors, or the codecs
    in tasks of their own beside GPU actors (`ActorPlan.codecs_inside`)."""
    engine = CpuBlocks if pool.actors.codecs_inside else GpuStages
    return engine(pool, actor or StylizeActor)


class RayPhotos:
    """The photos still to do through a pool of `actor`s (`StylizeActor`, or a subclass);
    `dataset` is the lazy pipeline, `run` streams its manifest rows to the driver."""

    def __init__(self, pool: RayPool, actor: type[StylizeActor]):
        self.pool, self.actor = pool, actor

    def dataset(self, run: BulkRun) -> ray.data.Dataset:
        raise NotImplementedError

    def run(self, run: BulkRun, rows: RowSink) -> None:
        """The rows to the driver as they come; a pipeline that stops moving for
        --stall-timeout ends the job with one line (bulk/engines/watch.py)."""
        batches = self.dataset(run).iter_batches(batch_format="pyarrow", batch_size=None)
        try:
            rows.photos(watched(batches, run.config.stall_timeout, self.pool.clock, lambda: rows.settled))
        except (ray.exceptions.RayError, ray.data.exceptions.SystemException) as e:
            raise RunFailed(f"the Ray pipeline failed: {root_cause(e)}") from None

    def actor_args(self, run: BulkRun) -> dict[str, Any]:
        """The stylize stage's constructor arguments."""
        actors = self.pool.actors
        return {
            "model": self.pool.models,  # in a list: Ray resolves only top-level refs, and not for Ray Data
            "name": run.config.model,
            "choice": run.config.style_choice,
            "inference": run.config.inference_options,
            "threads": None if actors.num_gpus else actors.threads,
            "cpus": actors.num_cpus,
            "output": redact(run.layout.output_root),
            "clock": self.pool.clock,
        }


class CpuBlocks(RayPhotos):
    """CPU actors, each running whole blocks of keys: read, decode, stylize, encode, write."""

    def dataset(self, run: BulkRun) -> ray.data.Dataset:
        actors = self.pool.actors
        rows = block_rows(run, actors)
        ds = key_blocks(run.plan.shards, rows, run.options, actors.reads_in_flight)
        ds = ds.map_batches(
            self.actor,
            fn_constructor_kwargs={**self.actor_args(run), "block": RowContext.of(run)},
            compute=ray.data.ActorPoolStrategy(min_size=actors.min_size, max_size=actors.max_size),
            batch_size=rows,
            batch_format="pyarrow",
            num_cpus=actors.num_cpus,
            **actors.ray_args,
        )
        bound_backlogs(ds.context)
        return ds


class GpuStages(RayPhotos):
    """Decode tasks -> GPU actors -> write tasks, in batches of --batch-size."""

    def dataset(self, run: BulkRun) -> ray.data.Dataset:
        actors, config, clock = self.pool.actors, run.config, self.pool.clock
        batch = config.run_options.batch_size
        context = RowContext.of(run)
        ds = key_blocks(run.plan.shards, batch, run.options, actors.reads_in_flight)
        ds = ds.map_batches(
            decode_batch,
            fn_kwargs={"context": context, "clock": clock},
            batch_size=batch,
            batch_format="numpy",
            num_cpus=actors.task_cpus,
            memory=decode_memory(config, actors.node_memory),
        )
        # Decode blocks are already model batches (key_blocks cuts them; decoding keeps every
        # row). Decoding stays out of the actors, where it would run between model calls, because
        # its remote arguments differ (`memory`): Ray fuses a task stage into an actor stage only
        # when they are equal.
        ds = ds.map_batches(
            self.actor,
            fn_constructor_kwargs={**self.actor_args(run), "context": context},
            compute=ray.data.ActorPoolStrategy(min_size=actors.min_size, max_size=actors.max_size),
            batch_size=batch,
            batch_format="numpy",
            num_cpus=actors.num_cpus,
            num_gpus=actors.num_gpus,
            **actors.ray_args,
        )
        ds = ds.map_batches(
            write_batch,
            fn_kwargs={"context": context, "clock": clock},
            batch_size=batch,
            batch_format="numpy",
            # No CPU reserved: Ray Data hands a small cluster's CPUs to the upstream stages first,
            # so a write stage that needs one waited for every decode to finish. Writes run only
            # as batches leave the actors, at most `writes_in_flight` at a time.
            num_cpus=0,
            compute=ray.data.TaskPoolStrategy(size=actors.writes_in_flight),
        )
        bound_backlogs(ds.context)  # each stage at most a few batches ahead of the next
        return ds


def block_rows(run: BulkRun, actors: ActorPlan) -> int:
    """Inputs per block for actors that run whole blocks (`ActorPlan.codecs_inside`)."""
    per_actor = -(-run.plan.photos // (MIN_BLOCKS_PER_ACTOR * max(1, actors.max_size)))
    return max(run.config.run_options.batch_size, min(MAX_BLOCK_ROWS, per_actor))


def decode_memory(config: BulkConfig, node_memory: float) -> int:
    """Bytes a decode task reserves: a batch of images at --max-pixels as uint8 RGB, all held
    until the batch is returned, so Ray packs no more decode tasks onto a node than fit.
    At most half the largest node's memory (`node_memory`, 0 if unknown), so one task can
    always be placed on one node."""
    most = int(config.decode_options.max_pixels * 3 * config.run_options.batch_size)
    return min(most, int(node_memory / 2)) if node_memory > 0 else most


def decode_batch(
    batch: dict[str, np.ndarray], context: RowContext, clock: Any = None
) -> dict[str, np.ndarray]:
    """Read and decode each input (bulk/engines/rows.py); a failure, or an input taking over
    --decode-timeout, is recorded on its row, never raised."""
    n = len(batch["key"])
    pixels = _objects([EMPTY] * n)
    status, error = np.full(n, DECODED, dtype=object), np.full(n, "", dtype=object)
    hashes = np.full(n, "", dtype=object)
    seconds = np.zeros(n, dtype=np.float64)
    for i, key in enumerate(batch["key"]):
        t0 = time.perf_counter()
        try:
            pixels[i], hashes[i] = context.read(str(key))
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
            for name in ("input_version", "style", "record_version", "record_hash")
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
    """Holds one model on one device (loaded once per actor) and stylizes decoded rows (GPU
    stages); with `block` (CPU blocks), runs whole blocks of keys instead: read, decode,
    stylize, encode and write in its own threads (bulk/engines/blocks.py), returning manifest
    rows. A benchmark may subclass it (bulk/engines/engine.py)."""

    def __init__(
        self,
        model: list[ray.ObjectRef],
        name: str,
        choice: StyleChoice,
        inference: InferenceOptions,
        threads: int | None,
        cpus: float = 1.0,
        output: str = "",
        clock: Any = None,
        block: RowContext | None = None,
        context: RowContext | None = None,
    ):
        from stylekit.bulk.engines.models import BulkModels
        from stylekit.bulk.metrics import ActorMetrics

        setup_logging()
        # `threads`: the actor's share of its node's CPUs, no more.
        self.models = BulkModels([ray.get(m) for m in model], name, choice, inference, threads, cpus)
        self.context = block or context  # which network paints each output's folder
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

    def _timed_stylize(self, pixels: list[np.ndarray], slot: int) -> list[np.ndarray | Exception]:
        t0 = time.perf_counter()
        try:
            return self._stylize(pixels, slot)
        finally:
            self.metrics.busy(time.perf_counter() - t0)

    def _stylize_rows(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Decoded inputs -> one row per output: each input through the network of each
        selection still to do for it."""
        outs = expand(batch)
        source = outs.pop("source")
        n = len(source)
        per_input = np.bincount(np.asarray(source, dtype=np.int64), minlength=len(batch["key"]))
        status = np.array([batch["status"][i] for i in source], dtype=object)
        error = np.array([batch["error"][i] for i in source], dtype=object)
        seconds = np.array([batch["seconds"][i] / per_input[i] for i in source], dtype=np.float64)
        pixels = _objects([EMPTY] * n)
        slots = [self.context.slot(folder) if self.context else 0 for folder in outs["style"]]
        for slot in sorted(set(slots)):
            todo = [j for j in range(n) if slots[j] == slot and status[j] == DECODED]
            t0 = time.perf_counter()
            results = self._stylize([batch["pixels"][source[j]] for j in todo], slot)
            busy = time.perf_counter() - t0
            self.metrics.busy(busy)
            for j, result in zip(todo, results, strict=True):
                seconds[j] += busy / len(todo)
                if isinstance(result, Exception):
                    status[j], error[j] = FAILED, f"stylizing failed: {describe(result)}"
                else:
                    pixels[j], status[j] = result, STYLIZED
        tick(self.clock, "stylize", n)
        return {
            **{name: np.array(values, dtype=object) for name, values in outs.items()},
            "input_bytes": np.array(outs["input_bytes"], dtype=np.int64),
            "input_hash": np.array([batch["input_hash"][i] for i in source], dtype=object),
            "width": np.array([batch["width"][i] for i in source], dtype=np.int32),
            "height": np.array([batch["height"][i] for i in source], dtype=np.int32),
            "status": status,
            "error": error,
            "seconds": seconds,
            "pixels": pixels,
        }

    def _stylize(self, pixels: list[np.ndarray], slot: int = 0) -> list[np.ndarray | Exception]:
        return self.models.stylize(pixels, slot)


def write_batch(batch: dict[str, np.ndarray], context: RowContext, clock: Any = None) -> pa.Table:
    """Encode and atomically write each stylized row; returns the batch's manifest rows."""
    n = len(batch["key"])
    done = Outcomes(
        status=[str(s) for s in batch["status"]],
        error=[str(e) for e in batch["error"]],
        width=[0] * n,
        height=[0] * n,
        output_bytes=[0] * n,
        seconds=[float(s) for s in batch["seconds"]],
        input_hash=[str(h) for h in batch["input_hash"]] if "input_hash" in batch else [""] * n,
    )
    for i in range(n):
        if done.status[i] != STYLIZED:
            continue
        t0 = time.perf_counter()
        try:
            done.output_bytes[i] = context.write(str(batch["output_key"][i]), np.asarray(batch["pixels"][i]))
            done.status[i] = OK
            # The size decoded (oriented, possibly --max-side scaled) of a written row.
            done.width[i], done.height[i] = int(batch["width"][i]), int(batch["height"][i])
        except Exception as e:
            done.status[i], done.error[i] = FAILED, f"writing failed: {describe(e)}"
        done.seconds[i] += time.perf_counter() - t0
    tick(clock, "write", n)
    return done.rows(batch, context)
