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
counts as done when its output exists and was made from the input as it is now: the same size
and store version (S3 ETag, GCS generation, Azure etag; locally mtime, ctime and inode) as an
earlier run recorded (bulk/plan/records.py), or, where only the version moved (a `touch`, a copy of
the same bytes), the same content hash. An output no run recorded (its run ended before its
row was written, or an older stylekit wrote it) counts as done when it is not older than its
input, and is recorded now; so does every output of a key list without versions. Outputs are
written atomically, so an existing output is a complete one, and a rerun after an interruption
finishes exactly what is missing. OUT/_manifest/_outputs.json records the model digest and the
settings that change pixels; a rerun with other ones refuses to mix styles unless --overwrite.

Names that cannot be inputs become failed rows, never gaps: dangling links, folders that
cannot be listed, links out of a local IN (unless --follow-links), photos over --max-bytes.

With several --style selections each input has an output per selection (OUT/<label>/KEY), and
each is settled on its own: a row per input and selection, skipped where that selection's
output is up to date. An input goes into the key shards once, with the selections still to do,
so the engine reads and decodes it once for all of them.
"""

from __future__ import annotations

import collections
import io
import itertools
import logging
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from stylekit.bulk.config import BulkConfig
from stylekit.bulk.plan.keylist import key_entries, unsafe_key
from stylekit.bulk.plan.keys import CollisionGuard, output_key, style_output_key
from stylekit.bulk.plan.layout import RunLayout
from stylekit.bulk.plan.manifest import FAILED, ROW_FIELDS, SKIPPED, ManifestWriter, manifest_table
from stylekit.bulk.plan.records import Record, Records
from stylekit.errors import StylekitError
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

# A key shard's rows, one per input: the input, its output key (before any selection's folder)
# and listed size, the input's "<size> <version>" as listed (the ok rows' record), and for each
# selection still to do (its folder, "" for OUT itself) the record of its output already there
# (a failed row's).
KEYS_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("output_key", pa.string()),
        ("input_bytes", pa.int64()),
        ("input_version", pa.string()),
        ("style", pa.list_(pa.string())),
        ("record_version", pa.list_(pa.string())),
        ("record_hash", pa.list_(pa.string())),
    ]
)


@dataclass
class Plan:
    """What the listing found: the key shards Ray reads and the counts so far."""

    shards: list[str] = field(default_factory=list)
    video_shards: list[str] = field(default_factory=list)  # one video per row (bulk/engines/ray_videos.py)
    listed: int = 0  # inputs
    # Rows: one per input and --style selection.
    todo: int = 0  # photos and videos
    videos: int = 0  # of which videos
    skipped: int = 0
    failed: int = 0
    adopted: int = 0  # outputs found that no run had recorded (counted among skipped)

    @property
    def photos(self) -> int:
        """Photos to do (the to-do inputs that are not videos)."""
        return self.todo - self.videos


def image_entries(config: BulkConfig, layout: RunLayout) -> Iterator[storage.FileEntry]:
    """The inputs: image keys under IN (or, with --keys, in the key list: bulk/plan/keylist.py),
    minus OUT's own keys when OUT lies inside IN, and names that cannot be read (a folder that
    cannot be listed, a dangling link to an image name: entries with an error)."""
    inside = locations.relative_key(layout.output_root, layout.input_root)
    if config.keys:
        listed = key_entries(config.keys, layout.input_root, config.storage_options)
    else:
        listed = storage.list_entries(
            layout.input_root, config.storage_options, follow_links=config.follow_links
        )

    # Followed links may lead into OUT by another path: its files are outputs, never inputs.
    out_real = locations.identity(layout.output_root).path if config.follow_links else None

    def wanted(e: storage.FileEntry) -> bool:
        if inside and e.key.startswith(inside):
            return False
        if out_real and locations.below(layout.input_uri(e.key), out_real) is not None:
            return False
        return images.is_image_key(e.key) or is_video_key(e.key) or bool(e.error and e.key.endswith("/"))

    return itertools.islice(filter(wanted, listed), config.limit)


def stamp(entry: storage.FileEntry) -> str:
    """An input's "<size> <version>" as a record holds it ("" when its store gives no version)."""
    return f"{entry.size} {entry.version}" if entry.version else ""


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

    def add(self, entry: storage.FileEntry, out: str, todo: dict[str, Record | None]) -> None:
        """An input with the selections still to do: {folder: the record of its output there}."""
        records = [_record_values(r) for r in todo.values()]
        values = (
            entry.key,
            out,
            entry.size,
            stamp(entry),
            list(todo),
            *map(list, zip(*records, strict=True)),
        )
        for name, value in zip(KEYS_SCHEMA.names, values, strict=True):
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


@dataclass
class _Checked:
    """What the check of one page found: the outputs there (by their keys under OUT), the
    records of its inputs (by key and folder), and the content hash of each input whose version
    moved since an output of it was made."""

    outputs: dict[str, storage.FileEntry]
    records: dict[tuple[str, str], Record]
    hashes: dict[str, str]


class _Planner:
    def __init__(self, config: BulkConfig, layout: RunLayout, manifest: ManifestWriter, digest: str):
        self.config, self.layout, self.manifest, self.digest = config, layout, manifest, digest
        self.options = config.storage_options
        self.plan = Plan()
        self.shards = _ShardWriter(layout, self.options, self.plan)
        self.video_shards = _ShardWriter(layout, self.options, self.plan, videos=True)
        self.guard = CollisionGuard()
        self.records = Records.load(layout, self.options)
        self.folders = config.folders

    def check(self, page: list[storage.FileEntry], outs: list[str]) -> _Checked:
        """In a helper thread: the page's outputs, records and (where needed) content hashes."""
        existing: dict[str, storage.FileEntry] = {}
        if not self.config.overwrite:
            for folder in self.folders:  # one range listing per folder
                styled = [style_output_key(out, folder) for out in outs]
                existing.update(storage.stat_keys(self.layout.output_root, styled, self.options))
        records = {
            (e.key, f): r for e in page for f in self.folders if (r := self.records.get(e.key, f)) is not None
        }
        hashes = {}
        for entry, out in zip(page, outs, strict=True):
            moved = [
                record
                for folder in self.folders
                if style_output_key(out, folder) in existing
                and (record := records.get((entry.key, folder))) is not None
                and record.hash
                and stamp(entry) != record.version
            ]
            if moved and entry.version and not entry.error and entry.size <= self.config.max_bytes:
                try:  # only the version moved? (a touch, a copy of the same bytes)
                    location = self.layout.input_uri(entry.key)
                    data = storage.read_bytes(location, self.options, limit=self.config.max_bytes)
                    hashes[entry.key] = storage.content_hash(data)
                except StylekitError:
                    pass  # unreadable now: stylized again, where its row says why it fails
        return _Checked(existing, records, hashes)

    def run(self) -> Plan:
        progress = Every(self.config.progress_every)
        pending: collections.deque[tuple[list[storage.FileEntry], Future[_Checked]]] = collections.deque()
        with ThreadPoolExecutor(CHECK_THREADS) as pool:
            for page in _pages(image_entries(self.config, self.layout), PAGE_KEYS):
                outs = [output_key(e.key, self.config.format) for e in page]
                pending.append((page, pool.submit(self.check, page, outs)))
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
        if self.plan.adopted:
            log.info(
                "%d output(s) had no record of the input they were made from (their run ended "
                "before writing their rows, or an older stylekit made them): kept, as they are "
                "not older than their inputs, and recorded now",
                self.plan.adopted,
            )
        return self.plan

    def made_from(
        self, entry: storage.FileEntry, found: storage.FileEntry, checked: _Checked, folder: str
    ) -> Record | None:
        """The record an existing output stands for if it is up to date with its input, else None."""
        record = checked.records.get((entry.key, folder))
        if record is None or not entry.version:  # no record, or no version to compare: by age
            if found.mtime < entry.mtime:
                return None
            self.plan.adopted += record is None
            return Record(stamp(entry), record.hash if record else "")
        if stamp(entry) == record.version:
            return record
        if record.hash and checked.hashes.get(entry.key) == record.hash:
            return Record(stamp(entry), record.hash)  # the same bytes under a new version
        return None

    def settle(self, page: list[storage.FileEntry], checked: _Checked) -> None:
        """Decide each input of a page, in listing order (the collision guard relies on it)."""
        rows: dict[str, list[Any]] = {name: [] for name in (*ROW_FIELDS, *_RECORD_FIELDS)}
        for entry in page:
            out = output_key(entry.key, self.config.format)
            unsafe = entry.error or unsafe_key(entry.key)
            earlier = None if unsafe else self.guard.claim(entry.key, out)
            todo: dict[str, Record | None] = {}
            for folder in self.folders:
                todo_record = self.settle_one(rows, entry, out, folder, checked, unsafe, earlier)
                if todo_record is not False:
                    todo[folder] = todo_record
            if todo:
                video = is_video_key(entry.key)
                (self.video_shards if video else self.shards).add(entry, out, todo)
                self.plan.todo += len(todo)
                self.plan.videos += len(todo) if video else 0
        self.plan.listed += len(page)
        self.manifest.add(manifest_table(rows, self.layout, self.digest))

    def settle_one(
        self,
        rows: dict[str, list[Any]],
        entry: storage.FileEntry,
        out: str,
        folder: str,
        checked: _Checked,
        unsafe: str | None,
        earlier: str | None,
    ) -> Record | Literal[False] | None:
        """One input's output in one selection's folder: a skipped or failed row into `rows`
        (False), or to do (the record of the output already there, if any)."""
        styled = style_output_key(out, folder)
        record = checked.records.get((entry.key, folder))
        found = checked.outputs.get(styled)
        made = self.made_from(entry, found, checked, folder) if found is not None and not unsafe else None
        limit = self.config.max_bytes
        if unsafe:
            error = unsafe
        elif earlier is not None:
            error = f"output {out!r} is also the output of input {earlier!r}; rename one of them"
        elif made is not None:
            _add_row(rows, entry, styled, folder, SKIPPED, "", found.size if found else 0, made)
            self.plan.skipped += 1
            return False
        elif entry.size > limit and not is_video_key(entry.key):
            error = f"{entry.size:,} bytes, over --max-bytes {limit:,}; raise it to stylize this input"
        else:
            return record
        shown = "" if unsafe and entry.key.endswith("/") else styled
        _add_row(rows, entry, shown, folder, FAILED, error, record=record)
        self.plan.failed += 1
        return False


_RECORD_FIELDS = ("input_version", "input_hash", "record_version", "record_hash", "style")


def _record_values(record: Record | None) -> tuple[str, str]:
    return (record.version, record.hash) if record is not None else ("", "")


def _add_row(
    rows: dict[str, list[Any]],
    entry: storage.FileEntry,
    out: str,
    folder: str,
    status: str,
    error: str,
    out_bytes: int = 0,
    made: Record | None = None,
    record: Record | None = None,
) -> None:
    """A row the planner settles: a skipped one with the record `made` of the output it keeps,
    a failed one with the `record` of the output already there (if any)."""
    values = (entry.key, out, status, error, 0, 0, entry.size, out_bytes, 0.0)
    values += (*_record_values(made), *_record_values(record), folder)
    for name, value in zip((*ROW_FIELDS, *_RECORD_FIELDS), values, strict=True):
        rows[name].append(value)
