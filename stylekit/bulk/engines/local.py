"""--engine local: a night's photos stylized in the job's own process, without Ray.

On a small machine with no Ray cluster to join, starting a local Ray (its processes, a worker
for the actor that imports torch again, Ray Data's executor) costs more than it gives: on 2
CPUs, about 10 s to the first output where `python -m stylekit stylize` needs 3
(benchmarks/RESULTS.md, "One node"). Here the key shards are read one after the other and
their inputs run through the same block runner as the CPU actors (bulk/engines/blocks.py):
reads and decodes in threads, the network on every CPU, encodes and atomic writes in threads,
manifest rows a block at a time. Everything else is the job's: the listing and skip check, the
manifest, progress, the settings guard, reruns, decode timeouts, the report, the pixels.
Ray's own metrics are not exported (there is no Ray); `--engine ray` has them.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Generator
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from stylekit.bulk.engines.blocks import BlockRunner, StylizeFn
from stylekit.bulk.engines.models import BulkModels
from stylekit.bulk.engines.rows import RowContext
from stylekit.bulk.plan.planner import KEYS_SCHEMA
from stylekit.files import storage

if TYPE_CHECKING:
    from stylekit.bulk.engines.engine import RowSink
    from stylekit.bulk.run import BulkRun

log = logging.getLogger(__name__)

BLOCK_ROWS = 64  # inputs per block: manifest rows and progress come in at least this often
LOCAL_MAX_CPUS = 5  # above this, Ray's several actors beat one process (sizing.MAX_CPU_THREADS + 1)


def machine_cpus() -> int:
    return len(os.sched_getaffinity(0))


class LocalEngine:
    """Every photo still to do, in this process: the key shards one after the other, each in
    blocks of BLOCK_ROWS inputs through one block runner. A benchmark may subclass it and
    replace `networks`."""

    def start(self) -> None:
        pass  # nothing to start: no Ray

    def run(self, run: BulkRun, rows: RowSink) -> None:
        blocks = self.blocks(run)
        try:
            rows.photos(blocks)
        finally:
            blocks.close()  # the runner's threads go now, also when the run ends early

    def blocks(self, run: BulkRun) -> Generator[pa.Table, None, None]:
        """The manifest rows of each block, as it is done (the models load on the first)."""
        cpus = machine_cpus()
        runner = BlockRunner(RowContext.of(run), self.networks(run, cpus), threads=max(2, cpus))
        log.info("stylizing in this process (no Ray), %d CPU threads", cpus)
        try:
            for shard in run.plan.shards:
                keys = pq.read_table(io.BytesIO(storage.read_bytes(shard, run.options)), schema=KEYS_SCHEMA)
                for start in range(0, keys.num_rows, BLOCK_ROWS):
                    yield runner(keys.slice(start, BLOCK_ROWS))
        finally:
            runner.close()

    def networks(self, run: BulkRun, cpus: int) -> StylizeFn:
        """The run's networks, loaded once, on `cpus` torch threads."""
        config = run.config
        held = BulkModels(
            run.models,
            config.model,
            config.style_choice,
            config.inference_options,
            threads=cpus,
            cpus=float(cpus),
        )
        return held.stylize
