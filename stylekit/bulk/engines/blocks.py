"""A block of inputs from start to finish inside one stylizing actor: read and decode in the
actor's own threads, stylize, encode and write in its own threads, one manifest row per input.

This is the bulk job's path on CPU-only nodes (`stages.build_dataset`), the way
`python -m stylekit stylize` overlaps its codecs with the network: the network gets every CPU
of the actor, and the codecs (which mostly release the GIL) run between and beside its calls.
Separate Ray tasks for decoding and writing would cost a task, an object-store round trip of
decoded pixels and a block per stage for every batch (measured: about 150 ms of CPU per tiny
image, benchmarks/RESULTS.md "One node"), and on a small node they keep CPUs from the network.
On GPU nodes the codecs stay in CPU tasks of their own, so the GPU never waits for them.

Memory stays bounded whatever the block's size: at most `ahead` inputs are read and decoded
ahead of the network and `ahead` results wait for their write. Each input ends as `ok` or
`failed` (with its error) on its own row; one that takes longer than the decode timeout to
read and decode fails alone.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from stylekit.bulk.config import BulkConfig
from stylekit.bulk.engines.timeouts import run_within
from stylekit.bulk.plan.layout import RunLayout
from stylekit.bulk.plan.manifest import FAILED, OK, manifest_table
from stylekit.files import images, storage
from stylekit.redact import describe

TICK_EVERY = 1.0  # seconds between the watchdog clock's updates from one block runner

# Stylize a list of images; each result an image or the exception that image failed with.
StylizeFn = Callable[[list[np.ndarray]], list[np.ndarray | Exception]]


@dataclass(frozen=True)
class BlockContext:
    """What a block needs besides its keys (the same for every block of a run)."""

    layout: RunLayout
    options: storage.StorageOptions
    decode: images.DecodeOptions
    timeout: float
    quality: int
    digest: str
    batch_size: int
    max_bytes: int = 256_000_000  # --max-bytes: an input read whole is at most this

    @classmethod
    def for_run(
        cls, config: BulkConfig, layout: RunLayout, options: storage.StorageOptions, digest: str
    ) -> BlockContext:
        """The context of every block of a run of `config` (Ray's block actors and the local engine)."""
        return cls(
            layout=layout,
            options=options,
            decode=config.decode_options,
            timeout=config.decode_timeout,
            quality=config.encode_options.quality,
            digest=digest,
            batch_size=config.run_options.batch_size,
            max_bytes=config.max_bytes,
        )


@dataclass
class StageClock:
    """Seconds spent per stage of the blocks an actor ran (thread time of the stage's own
    work; the benchmark's breakdown): read, decode, stylize, encode, write, rows."""

    read: float = 0.0
    decode: float = 0.0
    stylize: float = 0.0
    encode: float = 0.0
    write: float = 0.0
    rows: float = 0.0
    images: int = 0


class BlockRunner:
    """Runs blocks with `threads` reader and `threads` writer threads, kept for the actor's life."""

    def __init__(
        self,
        context: BlockContext,
        stylize: StylizeFn,
        threads: int = 2,
        tick: Callable[[str, int], None] | None = None,
    ):
        self.context, self.stylize, self.threads = context, stylize, max(1, threads)
        self._send = tick  # the stall watchdog's clock (bulk/engines/watch.py): a Ray call each
        self._pending: dict[str, int] = {}
        self._sent = 0.0
        self.readers = ThreadPoolExecutor(self.threads, "stylekit-read")
        self.writers = ThreadPoolExecutor(self.threads, "stylekit-write")
        self.clock = StageClock()

    def tick(self, stage: str, rows: int, flush: bool = False) -> None:
        """Rows a stage finished, passed on to the watchdog's clock at most once a second
        (a call per chunk of tiny images cost more CPU than the images' own bookkeeping)."""
        if self._send is None:
            return
        self._pending[stage] = self._pending.get(stage, 0) + rows
        now = time.monotonic()
        if flush or now - self._sent >= TICK_EVERY:
            self._sent = now
            for name, n in self._pending.items():
                self._send(name, n)
            self._pending.clear()

    @property
    def ahead(self) -> int:
        """Inputs decoded ahead of the network (and results queued for writing), at most."""
        return self.context.batch_size + self.threads

    def __call__(self, keys: pa.Table) -> pa.Table:
        """Every input of `keys` (a key shard's rows: planner.KEYS_SCHEMA) read, stylized and
        written; returns its manifest rows, in the block's order."""
        ctx, clock = self.context, self.clock
        names, outs = keys.column("key").to_pylist(), keys.column("output_key").to_pylist()
        n = len(names)
        status, error = [FAILED] * n, [""] * n
        width, height, out_bytes, seconds = [0] * n, [0] * n, [0] * n, [0.0] * n
        hashes = [""] * n  # of the bytes read: what an ok row's output is made from

        def read(i: int) -> np.ndarray:
            t0 = time.thread_time()
            data = storage.read_bytes(ctx.layout.input_uri(names[i]), ctx.options, limit=ctx.max_bytes)
            hashes[i] = storage.content_hash(data)
            t1 = time.thread_time()
            pixels = images.decode(data, ctx.decode)
            clock.read += t1 - t0
            clock.decode += time.thread_time() - t1
            return pixels

        def decode(i: int) -> np.ndarray:
            t0 = time.perf_counter()
            try:
                return run_within(ctx.timeout, lambda: read(i))
            finally:
                seconds[i] += time.perf_counter() - t0

        def write(i: int, pixels: np.ndarray) -> None:
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                data = images.encode(pixels, images.format_of(outs[i]), ctx.quality)
                c1 = time.thread_time()
                clock.encode += c1 - c0
                storage.write_bytes(ctx.layout.output_uri(outs[i]), data, ctx.options)
                clock.write += time.thread_time() - c1
                status[i], out_bytes[i] = OK, len(data)
                height[i], width[i] = pixels.shape[:2]
            except Exception as e:
                status[i], error[i] = FAILED, f"writing failed: {describe(e)}"
            seconds[i] += time.perf_counter() - t0

        decoding: collections.deque[tuple[int, Future[np.ndarray]]] = collections.deque()
        writing: collections.deque[Future[None]] = collections.deque()
        following = iter(range(n))
        settled = 0  # inputs read (or failed) since the last tick
        for i in following:  # prime the read-ahead
            decoding.append((i, self.readers.submit(decode, i)))
            if len(decoding) >= self.ahead:
                break
        while decoding:
            chunk: list[tuple[int, np.ndarray]] = []
            while decoding and len(chunk) < ctx.batch_size:
                i, future = decoding.popleft()
                nxt = next(following, None)
                if nxt is not None:
                    decoding.append((nxt, self.readers.submit(decode, nxt)))
                settled += 1
                try:
                    chunk.append((i, future.result()))
                except Exception as e:
                    error[i] = describe(e)
            self.tick("decode", settled)
            settled = 0
            if not chunk:
                continue
            t0, c0 = time.perf_counter(), time.thread_time()
            results = self.stylize([pixels for _, pixels in chunk])
            clock.stylize += time.thread_time() - c0
            share = (time.perf_counter() - t0) / len(chunk)
            self.tick("stylize", len(chunk))
            for (i, _), result in zip(chunk, results, strict=True):
                seconds[i] += share
                if isinstance(result, Exception):
                    error[i] = f"stylizing failed: {describe(result)}"
                    continue
                while len(writing) >= self.ahead:
                    writing.popleft().result()
                writing.append(self.writers.submit(write, i, result))
        for future in writing:
            future.result()
        self.tick("write", n, flush=True)
        c0 = time.thread_time()
        columns = {
            "key": names,
            "output_key": outs,
            "status": status,
            "error": error,
            "width": width,
            "height": height,
            "input_bytes": keys.column("input_bytes").to_pylist(),
            "output_bytes": out_bytes,
            "seconds": seconds,
            "input_hash": hashes,
            **{name: _strings(keys, name) for name in ("input_version", "record_version", "record_hash")},
        }
        table = manifest_table(columns, ctx.layout, ctx.digest)
        clock.rows += time.thread_time() - c0
        clock.images += n
        return table

    def close(self) -> None:
        """Let the threads go, without waiting for a read or write still under way (a run that
        ends early; a decode past its timeout lives on in its own daemon thread)."""
        self.readers.shutdown(wait=False, cancel_futures=True)
        self.writers.shutdown(wait=False, cancel_futures=True)


def _strings(keys: pa.Table, name: str) -> list[str]:
    """A key shard's string column ("" for each row of a table without it)."""
    if name not in keys.column_names:
        return [""] * keys.num_rows
    return [v or "" for v in keys.column(name).to_pylist()]
