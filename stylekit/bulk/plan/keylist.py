"""The inputs from a list of keys (`--keys LOCATION`) instead of a listing of IN, so a night over
a bucket of tens of millions of objects never lists it.

LOCATION (a local path or any fsspec URL) is one of:

- a Parquet file with a string column `key` (optional `size` in bytes and `last_modified`, a
  timestamp or epoch seconds);
- a CSV file (optionally .csv.gz) whose header row names a `key` column (and optionally `size`
  and `last_modified`, ISO 8601 or epoch seconds);
- a text file, one key per line (blank lines ignored);
- an S3 Inventory report: the `manifest.json` AWS writes for each report, whose `files` are
  gzipped CSV (columns as in its `fileSchema`, keys URL-encoded) or Parquet (`bucket`, `key`,
  `size`, `last_modified_date`, ...). The files are read from the `destinationBucket` (on the
  scheme of LOCATION: `s3://`), or, for a copy of a report in a folder, from the nearest folder
  above the manifest that holds them. Rows of another bucket than IN's, or outside IN's prefix,
  are left out (counted in one line); delete markers and versions that are not the latest are
  left out as S3 would list them.

Keys of a plain list are relative to IN, as a listing's would be; an inventory's are the
bucket's, and IN's prefix is taken off. Everything is streamed: Parquet a row group batch at a
time, CSV in 1 MiB blocks through pyarrow, text a line at a time, and sorted within each batch
of rows (`BATCH_ROWS`) so that inputs sharing an output key are found (bulk/plan/keys.py's
CollisionGuard needs them near each other, as a sorted listing has them). A list that is not
sorted overall is said so once: such collisions across batches can then go unseen.

Without a listing the size and modification time of an input are what the list says (0 when it
says nothing): an input then counts as done when its output exists, so a replaced input is
redone only if the list carries `last_modified` (an S3 Inventory with its LastModifiedDate
field does). A key that is not in the bucket becomes a failed row (`...: not found`) when the
decode stage reads it, never a fatal error; a list that cannot be read is one line before any
stylizing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import posixpath
from collections.abc import Iterator
from datetime import datetime
from typing import IO, Any
from urllib.parse import unquote_plus, urlparse

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from stylekit.errors import StylekitError
from stylekit.files import storage
from stylekit.redact import redact

log = logging.getLogger(__name__)

BATCH_ROWS = 10_000
CSV_BLOCK = 1 << 20
INVENTORY_MANIFEST = "manifest.json"


class KeyListError(StylekitError):
    """A key list that cannot be read as one."""


def key_entries(
    location: str, input_root: str, options: storage.StorageOptions = storage.StorageOptions()
) -> Iterator[storage.FileEntry]:
    """The entries a key list names, relative to `input_root`, in batches sorted by key."""
    storage.filesystem(location, options)  # a missing protocol package: its own line
    if not storage.exists(location, options):
        raise KeyListError(f"--keys {redact(location)}: not found")
    name = location.rstrip("/").rsplit("/", 1)[-1].lower()
    if name == INVENTORY_MANIFEST:
        batches = _inventory(location, input_root, options)
    elif name.endswith((".parquet", ".parq", ".pq")):
        batches = _parquet(location, options, ("key", "size", "last_modified"))
    elif name.endswith((".csv", ".csv.gz")):
        batches = _csv(location, options)
    else:
        batches = _text(location, options)
    last = ""
    warned = False
    for batch in batches:
        if not batch:
            continue
        batch.sort(key=lambda e: e.key)
        if batch[0].key < last and not warned:
            warned = True
            log.warning(
                "--keys %s is not sorted by key: inputs sharing an output key (a.tif and a.png "
                "-> a.png) are caught only within %d rows of each other",
                redact(location),
                BATCH_ROWS,
            )
        last = batch[-1].key
        yield from batch


def unsafe_key(key: str) -> str | None:
    """Why a listed key cannot be an input below IN (its output would land outside OUT), or
    None. A listing never yields one; a key list may."""
    if key.startswith("/") or "\\" in key or any(part in ("", ".", "..") for part in key.split("/")):
        return f"key {key!r} from --keys is not a plain key below --input (no leading '/', '.' or '..' parts)"
    return None


# --- plain lists ------------------------------------------------------------------------------


@contextlib.contextmanager
def _open(location: str, options: storage.StorageOptions) -> Iterator[IO[bytes]]:
    fs, path = storage.filesystem(location, options)
    compression = "gzip" if location.lower().endswith(".gz") else None
    try:
        with fs.open(path, "rb", compression=compression) as f:
            yield f
    except FileNotFoundError:
        raise KeyListError(f"--keys {redact(location)}: not found") from None


def _text(location: str, options: storage.StorageOptions) -> Iterator[list[storage.FileEntry]]:
    batch: list[storage.FileEntry] = []
    with _open(location, options) as f:
        for number, raw in enumerate(f, 1):
            try:
                key = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise KeyListError(
                    f"--keys {redact(location)}: line {number} is not UTF-8 text; give one key per "
                    "line, or a .csv, .parquet or S3 Inventory manifest.json"
                ) from None
            if key:
                batch.append(storage.FileEntry(key, 0, 0.0))
            if len(batch) >= BATCH_ROWS:
                yield batch
                batch = []
    yield batch


def _csv(location: str, options: storage.StorageOptions) -> Iterator[list[storage.FileEntry]]:
    with _open(location, options) as f:
        try:
            reader = pacsv.open_csv(
                f,
                read_options=pacsv.ReadOptions(block_size=CSV_BLOCK),
                convert_options=pacsv.ConvertOptions(
                    column_types={"key": pa.string(), "last_modified": pa.string()}
                ),
            )
        except (pa.ArrowInvalid, OSError) as e:
            raise KeyListError(f"--keys {redact(location)}: not a CSV file ({_short(e)})") from None
        names = [n.strip().lower() for n in reader.schema.names]
        if "key" not in names:
            raise KeyListError(
                f"--keys {redact(location)}: no 'key' column (its header: {', '.join(names)[:200]}); a "
                "CSV key list needs a header row naming a key column"
            )
        columns = {
            n: reader.schema.names[names.index(n)] for n in ("key", "size", "last_modified") if n in names
        }
        for record_batch in _batches(reader, location):
            yield _entries(record_batch, columns, location)


def _batches(reader: Any, location: str) -> Iterator[pa.RecordBatch]:
    while True:
        try:
            yield reader.read_next_batch()
        except StopIteration:
            return
        except (pa.ArrowInvalid, OSError) as e:
            raise KeyListError(f"--keys {redact(location)}: cannot be read: {_short(e)}") from None


def _parquet(
    location: str,
    options: storage.StorageOptions,
    wanted: tuple[str, str, str],
    filters: dict[str, str] | None = None,
    **where: Any,
) -> Iterator[list[storage.FileEntry]]:
    """Entries from a Parquet file's `wanted` (key, size, last_modified) columns, a batch at a
    time; `filters` names the bucket, is_latest and is_delete_marker columns of an inventory,
    `where` the bucket, prefix and left_out of `_entries`."""
    filters = filters or {}
    with _open(location, options) as f:
        try:
            parquet = pq.ParquetFile(f)
        except (pa.ArrowInvalid, OSError) as e:
            raise KeyListError(f"--keys {redact(location)}: not a Parquet file ({_short(e)})") from None
        names = {n.lower(): n for n in parquet.schema_arrow.names}
        key, size, modified = wanted
        if key not in names:
            raise KeyListError(
                f"{redact(location)}: no {key!r} column (its columns: {', '.join(names)[:200]})"
            )
        columns = {"key": names[key]}
        for role, name in (("size", size), ("last_modified", modified), *filters.items()):
            if name in names:
                columns[role] = names[name]
        try:
            for record_batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=list(columns.values())):
                yield _entries(record_batch, columns, location, **where)
        except (pa.ArrowInvalid, OSError) as e:
            raise KeyListError(f"{redact(location)}: cannot be read: {_short(e)}") from None


def _entries(
    batch: pa.RecordBatch,
    columns: dict[str, str],
    location: str,
    *,
    url_encoded: bool = False,
    bucket: str | None = None,
    prefix: str = "",
    left_out: list[int] | None = None,
) -> list[storage.FileEntry]:
    """The batch's rows as entries; with `bucket`/`prefix`, only rows of that bucket below that
    prefix (counted in `left_out` otherwise), the prefix taken off."""
    table = pa.Table.from_batches([batch])
    keep = pa.array([True] * table.num_rows)
    if "is_latest" in columns:
        keep = pc.and_(keep, pc.fill_null(_bools(table[columns["is_latest"]]), True))
    if "is_delete_marker" in columns:
        keep = pc.and_(keep, pc.invert(pc.fill_null(_bools(table[columns["is_delete_marker"]]), False)))
    if bucket is not None and "bucket" in columns:
        keep = pc.and_(keep, pc.equal(table[columns["bucket"]].cast(pa.string()), bucket))
    dropped = table.num_rows - pc.sum(pc.cast(keep, pa.int64())).as_py() if table.num_rows else 0
    table = table.filter(keep)
    keys = table[columns["key"]].cast(pa.string()).to_pylist()
    sizes = _sizes(table[columns["size"]]) if "size" in columns else [0] * len(keys)
    mtimes = _mtimes(table[columns["last_modified"]], location) if "last_modified" in columns else None
    out = []
    for i, key in enumerate(keys):
        if key is None:
            continue
        if url_encoded:
            key = unquote_plus(key)
        if prefix:
            if not key.startswith(prefix):
                dropped += 1
                continue
            key = key[len(prefix) :]
        if key and not key.endswith("/"):
            out.append(storage.FileEntry(key, sizes[i] or 0, mtimes[i] if mtimes else 0.0))
    if left_out is not None:
        left_out[0] += dropped
    return out


def _bools(column: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_boolean(column.type):
        return column
    return pc.equal(pc.utf8_lower(column.cast(pa.string())), "true")


def _sizes(column: pa.ChunkedArray) -> list[int | None]:
    try:
        return column.cast(pa.int64()).to_pylist()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return [None] * len(column)


def _mtimes(column: pa.ChunkedArray, location: str) -> list[float]:
    """Epoch seconds from a timestamp, number or ISO 8601 string column (0 when missing)."""
    if pa.types.is_timestamp(column.type):
        return [v.timestamp() if v is not None else 0.0 for v in column.to_pylist()]
    values = []
    for v in column.to_pylist():
        if v is None or v == "":
            values.append(0.0)
        elif isinstance(v, (int, float)):
            values.append(float(v))
        else:
            try:
                values.append(float(v))
            except ValueError:
                try:
                    values.append(datetime.fromisoformat(str(v).replace("Z", "+00:00")).timestamp())
                except ValueError:
                    raise KeyListError(
                        f"--keys {redact(location)}: last_modified {str(v)[:40]!r} is neither a "
                        "date (ISO 8601) nor epoch seconds"
                    ) from None
    return values


# --- S3 Inventory -----------------------------------------------------------------------------

# The CSV fileSchema's field names (AWS's spelling) and the Parquet columns they are.
_CSV_FIELDS = {
    "key": "Key",
    "size": "Size",
    "last_modified": "LastModifiedDate",
    "bucket": "Bucket",
    "is_latest": "IsLatest",
    "is_delete_marker": "IsDeleteMarker",
}
_PARQUET_FILTERS = {"bucket": "bucket", "is_latest": "is_latest", "is_delete_marker": "is_delete_marker"}


def _inventory(
    location: str, input_root: str, options: storage.StorageOptions
) -> Iterator[list[storage.FileEntry]]:
    try:
        manifest = json.loads(storage.read_bytes(location, options))
        file_format = str(manifest["fileFormat"]).lower()
        files = [str(f["key"]) for f in manifest["files"]]
        destination = str(manifest.get("destinationBucket", ""))
        source = str(manifest.get("sourceBucket", ""))
    except (ValueError, KeyError, TypeError):
        raise KeyListError(
            f"--keys {redact(location)}: not an S3 Inventory manifest.json (it needs fileFormat and "
            "files[].key, as AWS writes them)"
        ) from None
    if file_format not in ("csv", "parquet"):
        raise KeyListError(
            f"--keys {redact(location)}: an inventory in {manifest['fileFormat']} format; stylekit "
            "reads CSV and Parquet inventories (set the inventory's output format to one of them)"
        )
    bucket, prefix = source or None, ""  # a local copy: IN is the bucket's root
    if storage.scheme_of(input_root) in ("s3", "s3a"):
        parsed = urlparse(input_root)
        bucket, prefix = parsed.netloc, parsed.path.lstrip("/")
        prefix = prefix + "/" if prefix and not prefix.endswith("/") else prefix
        if source and source != bucket:
            raise KeyListError(
                f"--keys {redact(location)} is an inventory of bucket {source}, not of --input's "
                f"bucket {bucket}"
            )
    schema = [s.strip() for s in str(manifest.get("fileSchema", "")).split(",")]
    if file_format == "csv" and "Key" not in schema:
        raise KeyListError(f"--keys {redact(location)}: its fileSchema names no Key field")
    left_out = [0]
    for key in files:
        data = _inventory_file(location, destination, key, options)
        if file_format == "csv":
            yield from _inventory_csv(data, schema, bucket, prefix, options, left_out)
        else:
            wanted = ("key", "size", "last_modified_date")
            yield from _parquet(
                data, options, wanted, _PARQUET_FILTERS, bucket=bucket, prefix=prefix, left_out=left_out
            )
    if left_out[0]:
        log.info(
            "--keys: %d inventory row(s) left out (another bucket, outside --input's prefix, "
            "delete markers or older versions)",
            left_out[0],
        )


def _inventory_csv(
    data: str,
    schema: list[str],
    bucket: str | None,
    prefix: str,
    options: storage.StorageOptions,
    left_out: list[int],
) -> Iterator[list[storage.FileEntry]]:
    with _open(data, options) as f:
        try:
            reader = pacsv.open_csv(
                f,
                read_options=pacsv.ReadOptions(column_names=schema, block_size=CSV_BLOCK),
                convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(schema, pa.string())),
            )
        except (pa.ArrowInvalid, OSError) as e:
            raise KeyListError(f"{redact(data)}: not an inventory CSV ({_short(e)})") from None
        columns = {role: field for role, field in _CSV_FIELDS.items() if field in schema}
        for record_batch in _batches(reader, data):
            yield _entries(
                record_batch,
                columns,
                data,
                url_encoded=True,
                bucket=bucket,
                prefix=prefix,
                left_out=left_out,
            )


def _inventory_file(manifest: str, destination: str, key: str, options: storage.StorageOptions) -> str:
    """Where an inventory's data file is: in the destination bucket on the manifest's own
    store, or, for a copy in a folder, below the nearest folder above the manifest holding it."""
    if storage.is_uri(manifest) and not storage.is_local(manifest):
        scheme = storage.scheme_of(manifest)
        bucket = destination.rsplit(":", 1)[-1] if destination else urlparse(manifest).netloc
        return f"{scheme}://{bucket}/{key}"
    folder = os.path.dirname(storage.local_path(manifest))
    while True:
        candidate = os.path.join(folder, *posixpath.normpath(key).split("/"))
        if os.path.isfile(candidate):
            return candidate
        parent = os.path.dirname(folder)
        if parent == folder:
            raise KeyListError(
                f"--keys {redact(manifest)}: its file {key} is in no folder above the manifest"
            )
        folder = parent


def _short(e: BaseException) -> str:
    lines = [line for line in str(e).strip().splitlines() if line.strip()]
    return lines[0][:200] if lines else type(e).__name__
