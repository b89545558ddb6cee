"""The bulk job's manifest: one Parquet row per input and run, under OUT/_manifest/run=<id>/.

Its URIs are redacted (stylekit/redact.py): a run's identity needs no secret. Each row also
says what the output at its key was made from (`input_version`, `input_hash`: the input's size
and store version, and a hash of its bytes), so a rerun redoes an input that changed whatever
its modification time says (bulk/plan/records.py).
"""

from __future__ import annotations

import collections
import io
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from stylekit.errors import StylekitError
from stylekit.files import images, storage
from stylekit.redact import redact
from stylekit.video.media import is_video_key

if TYPE_CHECKING:
    from stylekit.bulk.plan.layout import RunLayout

OK, FAILED, SKIPPED = "ok", "failed", "skipped"

MANIFEST_SCHEMA = pa.schema(
    [
        ("input", pa.string()),
        ("output", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("input_bytes", pa.int64()),
        ("output_bytes", pa.int64()),
        ("seconds", pa.float64()),
        ("format", pa.string()),
        ("model_digest", pa.string()),
        ("run_id", pa.string()),
        ("finished_at", pa.timestamp("ms", tz="UTC")),
        # Videos only (stylekit/bulk/engines/ray_videos.py): frames written and seconds of video.
        ("frames", pa.int64()),
        ("duration", pa.float64()),
        # What the output at `output` was made from (null: unknown, or no output): the input's
        # "<size> <version>" (S3 ETag, GCS generation, Azure etag; locally mtime, ctime and
        # inode) and content hash (storage.content_hash) as the stylizing read it; a skipped or
        # failed row carries the earlier output's.
        ("input_version", pa.string()),
        ("input_hash", pa.string()),
        # The --style selection the output paints, with several (its folder: OUT/<style>/KEY);
        # null with one. Parts written before this column have none: read it as null.
        ("style", pa.string()),
    ]
)

# A manifest row's columns as the writers fill them (the video rows add "frames", "duration").
ROW_FIELDS = (
    "key",
    "output_key",
    "status",
    "error",
    "width",
    "height",
    "input_bytes",
    "output_bytes",
    "seconds",
)


def manifest_table(columns: dict[str, list[Any]], layout: RunLayout, digest: str) -> pa.Table:
    """Manifest rows from per-row `key`, `output_key`, `status`, `error`, `width`, `height`,
    `input_bytes`, `output_bytes`, `seconds` lists, for videos `frames` and `duration`, and
    optionally `input_version` and `input_hash` (the input as read: an ok or skipped row's
    record), `record_version` and `record_hash` (the earlier output's: a failed row's) and
    `style` (the selection's folder, "" for OUT itself) ("" and 0 mean unknown)."""
    keys, outs = columns["key"], columns["output_key"]
    n = len(keys)
    now = int(time.time() * 1000)
    shown_in, shown_out = redact(layout.input_root), redact(layout.output_root)

    def or_none(values: list[Any]) -> list[Any]:
        return [v if v else None for v in values]

    def made_from(name: str) -> list[Any]:
        read, earlier = columns.get(f"input_{name}", [""] * n), columns.get(f"record_{name}", [""] * n)
        return or_none(
            [e if s == FAILED else r for s, r, e in zip(columns["status"], read, earlier, strict=True)]
        )

    data = {
        "input": [storage.join(shown_in, k) for k in keys],
        "output": [storage.join(shown_out, o) if o else None for o in outs],
        "status": columns["status"],
        "error": [redact(e) if e else None for e in columns["error"]],
        "width": or_none(columns["width"]),
        "height": or_none(columns["height"]),
        "input_bytes": columns["input_bytes"],
        "output_bytes": or_none(columns["output_bytes"]),
        "seconds": or_none(columns["seconds"]),
        "format": [_format_of(o) if o else None for o in outs],
        "model_digest": [digest] * n,
        "run_id": [layout.run_id] * n,
        "finished_at": [now] * n,
        "frames": or_none(columns.get("frames", [0] * n)),
        "duration": or_none(columns.get("duration", [0.0] * n)),
        "input_version": made_from("version"),
        "input_hash": made_from("hash"),
        "style": or_none(columns.get("style", [""] * n)),
    }
    return pa.Table.from_pydict(data, schema=MANIFEST_SCHEMA)


def _format_of(output_key: str) -> str:
    """The manifest's format: a photo's image format, a video's container ("mp4")."""
    if is_video_key(output_key):
        return os.path.splitext(output_key)[1].lower().lstrip(".")
    return images.format_of(output_key)


class ManifestWriter:
    """Appends manifest rows as Parquet parts (part-00000.parquet, ...) under the run's folder.

    The open part is written whole (atomically) every `flush_every` seconds while rows come in,
    and closed once it has `rows_per_part` rows or is `seconds_per_part` old (the next rows
    start the next part), so a run that ends without warning (its node or the Ray head gone)
    loses at most the last few seconds of rows; the next run finds and records the outputs
    those rows were for (bulk/plan/planner.py). Error texts are redacted here, in the driver, which
    knows the command line's secrets. Thread-safe: a watchdog may flush while rows come in."""

    def __init__(
        self,
        location: str,
        options: storage.StorageOptions,
        rows_per_part: int = 50_000,
        seconds_per_part: float = 60.0,
        on_rows: Callable[[pa.Table], None] | None = None,
        flush_every: float = 5.0,
    ):
        self.location, self.options = location, options
        self.rows_per_part, self.seconds_per_part = rows_per_part, seconds_per_part
        self.flush_every = flush_every
        self.on_rows = on_rows  # sees every table added (the job's metrics)
        self.counts: collections.Counter[str] = collections.Counter()
        self.parts = 0
        self._buffer: list[pa.Table] = []
        self._rows = 0
        self._unwritten = False  # rows added since the open part was last written
        self._opened = self._written = time.monotonic()
        self._lock = threading.RLock()
        self.closed = False
        self.stopped: StylekitError | None = None  # why it was closed early (bulk/stop.py)

    def add(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        table = _redacted_errors(table)
        with self._lock:
            if self.stopped is not None:  # the run is ending (bulk/stop.py): no row past that
                raise self.stopped
            if self.closed:
                raise ValueError("rows added to a closed manifest")
            self.counts.update(table.column("status").to_pylist())
            if self.on_rows is not None:
                self.on_rows(table)
            if not self._buffer:
                self._opened = time.monotonic()
            self._buffer.append(table)
            self._rows += table.num_rows
            self._unwritten = True
            now = time.monotonic()
            if self._rows >= self.rows_per_part or now - self._opened > self.seconds_per_part:
                self.flush()
            elif now - self._written >= self.flush_every:
                self._write()

    def _write(self) -> None:
        """The open part, whole, under its name (replacing its earlier, shorter self)."""
        buf = io.BytesIO()
        pq.write_table(pa.concat_tables(self._buffer), buf, compression="zstd")
        name = f"part-{self.parts:05d}.parquet"
        storage.write_bytes(storage.join(self.location, name), buf.getvalue(), self.options)
        self._written, self._unwritten = time.monotonic(), False

    def flush(self) -> None:
        """Write the open part and close it."""
        with self._lock:
            if not self._buffer:
                return
            if self._unwritten:
                self._write()
            self.parts += 1
            self._buffer, self._rows = [], 0

    def close(self, reason: StylekitError | None = None) -> None:
        """Flush, and take no more rows (with `reason`, adding one raises it)."""
        with self._lock:
            self.stopped = self.stopped or reason
            if not self.closed:
                self.closed = True
                self.flush()

    def __enter__(self) -> ManifestWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()  # also on an interrupt: the rows buffered are true


def _redacted_errors(table: pa.Table) -> pa.Table:
    errors = table.column("error")
    if errors.null_count == len(errors):
        return table
    values = [None if e is None else redact(e) for e in errors.to_pylist()]
    return table.set_column(table.schema.get_field_index("error"), "error", pa.array(values, pa.string()))
