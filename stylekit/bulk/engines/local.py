"""--engine local: a night's photos stylized in the job's own process, without Ray.

On a small machine with no Ray cluster to join, starting a local Ray (its processes, a worker
for the actor that imports torch again, Ray Data's executor) costs more than it gives: about
10 s before the first output on this 2-core machine, where `python -m stylekit stylize` needs
3 (benchmarks/RESULTS.md, "One node"). Here the key shards are read one after the other and
their inputs run through the same block runner as the CPU actors (bulk/engines/blocks.py): reads and
decodes in threads, the network on every CPU, encodes and atomic writes in threads, manifest
rows a block at a time. Everything else is the job's: the listing and skip check, the
manifest, progress, the settings guard, reruns, decode timeouts, the report, the pixels.
Ray's own metrics are not exported (there is no Ray); `--engine ray` has them.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from stylekit.bulk.config import BulkConfig
from stylekit.bulk.engines.blocks import BlockContext, BlockRunner
from stylekit.bulk.engines.models import BulkModels
from stylekit.bulk.plan.layout import RunLayout
from stylekit.bulk.plan.planner import KEYS_SCHEMA, Plan
from stylekit.files import storage

log = logging.getLogger(__name__)

BLOCK_ROWS = 64  # inputs per block: manifest rows and progress come in at least this often
LOCAL_MAX_CPUS = 5  # above this, Ray's several actors beat one process (sizing.MAX_CPU_THREADS + 1)


def machine_cpus() -> int:
    return len(os.sched_getaffinity(0))


def stylize_here(
    config: BulkConfig,
    layout: RunLayout,
    plan: Plan,
    digest: str,
    models: list[bytes],
    on_rows: Callable[[pa.Table], None],
) -> None:
    """Every to-do photo of `plan`, in this process; each block's manifest rows to `on_rows`."""
    cpus = machine_cpus()
    options = config.storage_options.resolved()
    held = BulkModels(models, config.model, config.inference_options, threads=cpus, cpus=float(cpus))
    context = BlockContext.for_run(config, layout, options, digest)
    runner = BlockRunner(context, held.stylize, threads=max(2, cpus))
    log.info("stylizing in this process (no Ray), %d CPU threads", cpus)
    try:
        for shard in plan.shards:
            keys = pq.read_table(io.BytesIO(storage.read_bytes(shard, options)), schema=KEYS_SCHEMA)
            for start in range(0, keys.num_rows, BLOCK_ROWS):
                on_rows(runner(keys.slice(start, BLOCK_ROWS)))
    finally:
        runner.close()
