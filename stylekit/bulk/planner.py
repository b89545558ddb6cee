"""The plan of a bulk run: what to stylize, on the driver, without Ray.

Planning runs on the driver as one stream: list IN (S3 pages of 1000 keys, or a sorted walk of
a folder), keep image keys, map each to its output key, decide done-or-not per page, and write
the keys still to do into bounded Parquet shards under OUT/_manifest/_keys/<run-id>/ that Ray
Data then reads. Nothing is held whole: one page, one shard buffer and one manifest part at a
time. Skipped inputs (and inputs that lose an output-key collision) go straight into the
manifest, so they never cost a Ray task.

The skip check is a merge of each page against the output listing: one range listing of OUT
covering the page's output keys (see `storage.stat_keys`), run in a few threads while the
listing of IN goes on, so it adds about one request per 1000 inputs and no wall time. An input
counts as done when its output exists and is not older than the input; outputs are written
atomically, so an existing output is a complete one, and a rerun after an interruption finishes
exactly what is missing. OUT/_manifest/_outputs.json records the model digest and the settings
that change pixels; a rerun with other ones refuses to mix styles unless --overwrite.
"""

from __future__ import annotations

import collections
import io
import itertools
import logging
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from stylekit.bulk.config import BulkConfig
from stylekit.bulk.keylist import key_entries, unsafe_key
from stylekit.bulk.layout import CollisionGuard, RunLayout, output_key
from stylekit.bulk.manifest import FAILED, ROW_FIELDS, SKIPPED, ManifestWriter, manifest_table
from stylekit.files import images, locations, storage
from stylekit.logs import Every
from stylekit.video.media import is_video_key

log = logging.getLogger(__name__)

PAGE_KEYS = 1000  # keys per skip check: one S3 listing page
SHARD_KEYS = 20_000  # keys per Parquet shard Ray reads (about 1 MB)
# The first shard's keys; each next shard doubles, up to SHARD_KEYS. One Ray task cuts a shard
# into batches, and decoding starts on a small cluster only once it is done (about 0.1 s a
# batch on 2 CPUs): small first shards make the first outputs come in seconds, not minutes.
FIRST_SHARD_KEYS = 256
CHECK_THREADS = 4

KEYS_SCHEMA = pa.schema([("key", pa.string()), ("output_key", pa.string()), ("input_bytes", pa.int64())])


@dataclass
class Plan:
    """What the listing found: the key shards Ray reads and the counts so far."""

    shards: list[str] = field(default_factory=list)
    video_shards: list[str] = field(default_factory=list)  # one video per row (bulk/video.py)
    listed: int = 0
    todo: int = 0  # photos and videos
    videos: int = 0  # of which videos
    skipped: int = 0
    failed: int = 0


def image_entries(config: BulkConfig, layout: RunLayout) -> Iterator[storage.FileEntry]:
    """The inputs: image keys under IN (or, with --keys, in the key list: bulk/keylist.py),
    minus OUT's own keys when OUT lies inside IN."""
    inside = locations.relative_key(layout.output_root, layout.input_root)
    if config.keys:
        listed = key_entries(config.keys, layout.input_root, config.storage_options)
    else:
        listed = storage.list_entries(layout.input_root, config.storage_options)
    entries = (
        e
        for e in listed
        if (images.is_image_key(e.key) or is_video_key(e.key)) and not (inside and e.key.startswith(inside))
    )
    return itertools.islice(entries, config.limit)


def _pages(entries: Iterable[storage.FileEntry], size: int) -> Iterator[list[storage.FileEntry]]:
    it = iter(entries)
    while page := list(itertools.islice(it, size)):
        yield page


class _ShardWriter:
    """Buffers to-do keys and writes them as bounded Parquet shards under the run's _keys/."""

    def __init__(
        self, layout: RunLayout, options: storage.StorageOptions, plan: Plan, *, videos: bool = False
    ):
        self.layout, self.options, self.plan = layout, options, plan
        self.shards, self.prefix = (plan.video_shards, "videos") if videos else (plan.shards, "keys")
        self.rows: dict[str, list[Any]] = {name: [] for name in KEYS_SCHEMA.names}

    def add(self, key: str, out: str, size: int) -> None:
        for name, value in zip(KEYS_SCHEMA.names, (key, out, size), strict=True):
            self.rows[name].append(value)
        if len(self.rows["key"]) >= min(SHARD_KEYS, FIRST_SHARD_KEYS << min(len(self.shards), 10)):
            self.flush()

    def flush(self) -> None:
        if not self.rows["key"]:
            return
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pydict(self.rows, schema=KEYS_SCHEMA), buf)
        location = storage.join(self.layout.keys_dir, f"{self.prefix}-{len(self.shards):05d}.parquet")
        storage.write_bytes(location, buf.getvalue(), self.options)
        self.shards.append(location)
        self.rows = {name: [] for name in KEYS_SCHEMA.names}


def plan_inputs(config: BulkConfig, layout: RunLayout, manifest: ManifestWriter, digest: str) -> Plan:
    """List IN and settle each input as to-do (into key shards), skipped or failed (into the
    manifest), checking OUT a page at a time in a few threads while the listing goes on."""
    return _Planner(config, layout, manifest, digest).run()


class _Planner:
    def __init__(self, config: BulkConfig, layout: RunLayout, manifest: ManifestWriter, digest: str):
        self.config, self.layout, self.manifest, self.digest = config, layout, manifest, digest
        self.options = config.storage_options
        self.plan = Plan()
        self.shards = _ShardWriter(layout, self.options, self.plan)
        self.video_shards = _ShardWriter(layout, self.options, self.plan, videos=True)
        self.guard = CollisionGuard()

    def run(self) -> Plan:
        progress = Every(self.config.progress_every)
        check = _no_outputs if self.config.overwrite else storage.stat_keys
        pending: collections.deque[tuple[list[storage.FileEntry], Future[dict[str, storage.FileEntry]]]]
        pending = collections.deque()
        with ThreadPoolExecutor(CHECK_THREADS) as pool:
            for page in _pages(image_entries(self.config, self.layout), PAGE_KEYS):
                outs = [output_key(e.key, self.config.format) for e in page]
                pending.append((page, pool.submit(check, self.layout.output_root, outs, self.options)))
                # Pages are settled in listing order, at most CHECK_THREADS checks behind.
                if len(pending) > CHECK_THREADS:
                    page_done, future = pending.popleft()
                    self.settle(page_done, future.result())
                if progress.due():
                    p = self.plan
                    log.info(
                        "listed %d inputs so far: %d to stylize, %d done before", p.listed, p.todo, p.skipped
                    )
            while pending:
                page_done, future = pending.popleft()
                self.settle(page_done, future.result())
        self.shards.flush()
        self.video_shards.flush()
        return self.plan

    def settle(self, page: list[storage.FileEntry], existing: dict[str, storage.FileEntry]) -> None:
        """Decide each input of a page, in listing order (the collision guard relies on it)."""
        rows: dict[str, list[Any]] = {name: [] for name in ROW_FIELDS}
        for entry in page:
            out = output_key(entry.key, self.config.format)
            unsafe = unsafe_key(entry.key)
            earlier = None if unsafe else self.guard.claim(entry.key, out)
            found = existing.get(out)
            if unsafe is not None:
                _add_row(rows, entry, out, FAILED, unsafe)
                self.plan.failed += 1
            elif earlier is not None:
                error = f"output {out!r} is also the output of input {earlier!r}; rename one of them"
                _add_row(rows, entry, out, FAILED, error)
                self.plan.failed += 1
            elif found is not None and found.mtime >= entry.mtime:
                _add_row(rows, entry, out, SKIPPED, "", found.size)
                self.plan.skipped += 1
            elif is_video_key(entry.key):
                self.video_shards.add(entry.key, out, entry.size)
                self.plan.todo += 1
                self.plan.videos += 1
            else:
                self.shards.add(entry.key, out, entry.size)
                self.plan.todo += 1
        self.plan.listed += len(page)
        self.manifest.add(manifest_table(rows, self.layout, self.digest))


def _no_outputs(location: str, keys: list[str], options: storage.StorageOptions) -> dict[str, Any]:
    return {}  # --overwrite: treat every output as missing


def _add_row(
    rows: dict[str, list[Any]],
    entry: storage.FileEntry,
    out: str,
    status: str,
    error: str,
    out_bytes: int = 0,
) -> None:
    values = (entry.key, out, status, error, 0, 0, entry.size, out_bytes, 0.0)
    for name, value in zip(ROW_FIELDS, values, strict=True):
        rows[name].append(value)
