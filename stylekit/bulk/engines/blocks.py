"""A block of inputs from start to finish inside one stylizing actor: read and decode in the
actor's own threads, stylize, encode and write in its own threads, one manifest row per input.

This is the bulk job's path on CPU-only nodes (`ray_photos.CpuBlocks`) and in the job's own
process (`local.LocalEngine`), the way `python -m stylekit stylize` overlaps its codecs with the
network: the network gets every CPU of the actor, and the codecs (which mostly release the GIL)
run between and beside its calls. Separate Ray tasks for decoding and writing would cost a task,
an object-store round trip of decoded pixels and a block per stage for every batch (measured:
about 150 ms of CPU per tiny image, benchmarks/RESULTS.md "One node"), and on a small node they
keep CPUs from the network. On GPU nodes the codecs stay in CPU tasks of their own, so the GPU
never waits for them.

Memory stays bounded whatever the block's size: at most `ahead` inputs are read and decoded
ahead of the network and `ahead` results wait for their write. Each input ends as `ok` or
`failed` (with its error) on its own row; one that takes longer than the decode timeout to
read and decode fails alone. With several --style selections an input is read and decoded
once and goes through each selection's network still to do for it, giving a row per selection
(rows.expand).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pyarrow as pa

from stylekit.bulk.engines.rows import Outcomes, RowContext, expand
from stylekit.bulk.plan.manifest import FAILED, OK
from stylekit.redact import describe

TICK_EVERY = 1.0  # seconds between the watchdog clock's updates from one block runner

# Stylize a list of images with the run's network in slot `slot` (one per --style selection,
# rows.RowContext.slot); each result an image or the exception that image failed with.
StylizeFn = Callable[[list[np.ndarray], int], list[np.ndarray | Exception]]


class BlockRunner:
    """Runs blocks with `threads` reader and `threads` writer threads, kept for the actor's life."""

    def __init__(
        self,
        context: RowContext,
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
        """Every input of `keys` (a key shard's rows: planner.KEYS_SCHEMA) read once, stylized
        for each selection still to do and written; returns its manifest rows, one per output,
        in the block's order."""
        ctx = self.context
        names = keys.column("key").to_pylist()
        outs = expand(keys.to_pydict())
        slots = [ctx.slot(folder) for folder in outs["style"]]
        of_input: list[list[int]] = [[] for _ in names]  # each input's outputs
        for j, i in enumerate(outs["source"]):
            of_input[i].append(j)
        done = Outcomes.failed(len(slots))

        def read(i: int) -> np.ndarray:
            t0 = time.perf_counter()
            try:
                pixels, content = ctx.read(names[i])
                for j in of_input[i]:
                    done.input_hash[j] = content
                return pixels
            finally:
                share = (time.perf_counter() - t0) / len(of_input[i])
                for j in of_input[i]:
                    done.seconds[j] += share

        def write(j: int, pixels: np.ndarray) -> None:
            t0 = time.perf_counter()
            try:
                done.output_bytes[j] = ctx.write(outs["output_key"][j], pixels)
                done.status[j] = OK
                done.height[j], done.width[j] = pixels.shape[:2]
            except Exception as e:
                done.status[j], done.error[j] = FAILED, f"writing failed: {describe(e)}"
            done.seconds[j] += time.perf_counter() - t0

        decoding: collections.deque[tuple[int, Future[np.ndarray]]] = collections.deque()
        writing: collections.deque[Future[None]] = collections.deque()
        following = iter(range(len(names)))
        settled = 0  # inputs read (or failed) since the last tick
        for i in following:  # prime the read-ahead
            decoding.append((i, self.readers.submit(read, i)))
            if len(decoding) >= self.ahead:
                break
        while decoding:
            chunk: list[tuple[int, np.ndarray]] = []  # (output, the input's pixels)
            taken = 0  # inputs in the chunk: up to a batch for each network
            while decoding and taken < ctx.batch_size:
                i, future = decoding.popleft()
                nxt = next(following, None)
                if nxt is not None:
                    decoding.append((nxt, self.readers.submit(read, nxt)))
                settled += 1
                try:
                    pixels = future.result()
                except Exception as e:
                    for j in of_input[i]:
                        done.error[j] = describe(e)
                    continue
                chunk += [(j, pixels) for j in of_input[i]]
                taken += 1
            self.tick("decode", settled)
            settled = 0
            for slot in sorted({slots[j] for j, _ in chunk}):  # each selection's network in turn
                group = [(j, pixels) for j, pixels in chunk if slots[j] == slot]
                t0 = time.perf_counter()
                results = self.stylize([pixels for _, pixels in group], slot)
                share = (time.perf_counter() - t0) / len(group)
                self.tick("stylize", len(group))
                for (j, _), result in zip(group, results, strict=True):
                    done.seconds[j] += share
                    if isinstance(result, Exception):
                        done.error[j] = f"stylizing failed: {describe(result)}"
                        continue
                    while len(writing) >= self.ahead:
                        writing.popleft().result()
                    writing.append(self.writers.submit(write, j, result))
        for future in writing:
            future.result()
        self.tick("write", len(slots), flush=True)
        return done.rows(outs, ctx)

    def close(self) -> None:
        """Let the threads go, without waiting for a read or write still under way (a run that
        ends early; a decode past its timeout lives on in its own daemon thread)."""
        self.readers.shutdown(wait=False, cancel_futures=True)
        self.writers.shutdown(wait=False, cancel_futures=True)
