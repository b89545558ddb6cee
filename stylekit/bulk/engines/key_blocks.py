"""A run's key shards as a Ray Dataset of key blocks, with no CPU reserved on the way.

One read task per shard (read_parquet would merge small shards into one block), cut by the
same task into blocks of the rows each actor call takes, so the work of a shard spreads over
many calls. No stage here reserves a CPU (a shard of keys is a small read, its cut a slice):
after a node's loss Ray restarts its actors on the nodes left, where they take the CPUs their
peers left, and a read or cut that needed one, including the re-run of one whose blocks were
lost with the node, would wait for the rest of the run.
"""

from __future__ import annotations

import io
from dataclasses import fields, is_dataclass

import pyarrow as pa
import pyarrow.parquet as pq
import ray

from stylekit.bulk.plan.planner import KEYS_SCHEMA
from stylekit.files import storage


def key_blocks(shards: list[str], rows: int, options: storage.StorageOptions, tasks: int) -> ray.data.Dataset:
    """The keys of `shards` (planner.KEYS_SCHEMA) in blocks of `rows`, at most `tasks` reads
    at a time."""
    compute = ray.data.TaskPoolStrategy(size=max(1, tasks))
    ds = ray.data.from_items([{"shard": shard} for shard in shards], override_num_blocks=max(1, len(shards)))
    ds = ds.map_batches(
        read_keys,
        fn_kwargs={"options": options},
        batch_size=1,
        batch_format="pyarrow",
        num_cpus=0,
        compute=compute,
    )
    return _cut(ds, rows, compute)


def read_keys(batch: pa.Table, options: storage.StorageOptions) -> pa.Table:
    """The key rows of the shard(s) named in `batch` (with storage's retries)."""
    return pa.concat_tables(
        [
            pq.read_table(io.BytesIO(storage.read_bytes(str(shard), options)), schema=KEYS_SCHEMA)
            for shard in batch.column("shard").to_pylist()
        ]
    )


def _cut(ds: ray.data.Dataset, rows: int, compute: ray.data.TaskPoolStrategy) -> ray.data.Dataset:
    """`ds.repartition(target_num_rows_per_block=rows)` with no CPU reserved, in the reads' own
    pool (`compute`), so Ray Data fuses the cut into the reads' tasks. Ray Data's API gives a
    repartition one CPU a task and no argument to change it, so this sets it on the stage the
    call just made (nothing else holds it yet)."""
    cut = ds.repartition(target_num_rows_per_block=rows)
    stage = cut._logical_plan.dag
    if not (is_dataclass(stage) and {"ray_remote_args", "compute"} <= {f.name for f in fields(stage)}):
        raise RuntimeError(
            f"Ray {ray.__version__} cannot cut key blocks without reserving a CPU; "
            "install a newer Ray: pip install -U 'ray[default,data,train]>=2.60'"
        )
    object.__setattr__(stage, "ray_remote_args", {"num_cpus": 0})
    object.__setattr__(stage, "compute", compute)
    return cut
