"""The bulk job's manifest: one Parquet row per input and run, under OUT/_manifest/run=<id>/."""

from __future__ import annotations

import collections
import io
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from stylekit.files import images, storage
from stylekit.redact import redact
from stylekit.video.media import is_video_key

if TYPE_CHECKING:
    from stylekit.bulk.layout import RunLayout

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
        # Videos only (stylekit/bulk/video.py): frames written and seconds of video.
        ("frames", pa.int64()),
        ("duration", pa.float64()),
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
    `input_bytes`, `output_bytes`, `seconds` lists, and for videos `frames` and `duration`
    ("" and 0 mean unknown)."""
    keys, outs = columns["key"], columns["output_key"]
    n = len(keys)
    now = int(time.time() * 1000)

    def or_none(values: list[Any]) -> list[Any]:
        return [v if v else None for v in values]

    data = {
        "input": [layout.input_uri(k) for k in keys],
        "output": [layout.output_uri(o) for o in outs],
        "status": columns["status"],
        "error": [redact(e) if e else None for e in columns["error"]],
        "width": or_none(columns["width"]),
        "height": or_none(columns["height"]),
        "input_bytes": columns["input_bytes"],
        "output_bytes": or_none(columns["output_bytes"]),
        "seconds": or_none(columns["seconds"]),
        "format": [_format_of(o) for o in outs],
        "model_digest": [digest] * n,
        "run_id": [layout.run_id] * n,
        "finished_at": [now] * n,
        "frames": or_none(columns.get("frames", [0] * n)),
        "duration": or_none(columns.get("duration", [0.0] * n)),
    }
    return pa.Table.from_pydict(data, schema=MANIFEST_SCHEMA)


def _format_of(output_key: str) -> str:
    """The manifest's format: a photo's image format, a video's container ("mp4")."""
    if is_video_key(output_key):
        return os.path.splitext(output_key)[1].lower().lstrip(".")
    return images.format_of(output_key)


class ManifestWriter:
    """Appends manifest rows as Parquet parts (part-00000.parquet, ...) under the run's folder.

    A part is written whole (atomically) once it has `rows_per_part` rows or is
    `seconds_per_part` old, so an interrupted run leaves a manifest of what it finished, minus
    at most the last part's rows."""

    def __init__(
        self,
        location: str,
        options: storage.StorageOptions,
        rows_per_part: int = 50_000,
        seconds_per_part: float = 60.0,
        on_rows: Callable[[pa.Table], None] | None = None,
    ):
        self.location, self.options = location, options
        self.rows_per_part, self.seconds_per_part = rows_per_part, seconds_per_part
        self.on_rows = on_rows  # sees every table added (the job's metrics)
        self.counts: collections.Counter[str] = collections.Counter()
        self.parts = 0
        self._buffer: list[pa.Table] = []
        self._rows = 0
        self._since = time.monotonic()

    def add(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        self.counts.update(table.column("status").to_pylist())
        if self.on_rows is not None:
            self.on_rows(table)
        self._buffer.append(table)
        self._rows += table.num_rows
        if self._rows >= self.rows_per_part or time.monotonic() - self._since > self.seconds_per_part:
            self.flush()

    def flush(self) -> None:
        self._since = time.monotonic()
        if not self._buffer:
            return
        buf = io.BytesIO()
        pq.write_table(pa.concat_tables(self._buffer), buf, compression="zstd")
        name = f"part-{self.parts:05d}.parquet"
        storage.write_bytes(storage.join(self.location, name), buf.getvalue(), self.options)
        self.parts += 1
        self._buffer, self._rows = [], 0

    def __enter__(self) -> ManifestWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()  # also on an interrupt: the rows buffered are true
