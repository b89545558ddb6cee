"""What each output was made from, as earlier runs recorded it: for the rerun's skip check.

Each manifest row carries the input's "<size> <version>" and content hash the output at its
key was made from (bulk/plan/manifest.py): an ok row the input as the stylizing read it, a skipped
row what the output it kept was made from, a failed row the earlier output's (a failed input
writes nothing). So the newest run that ended (it wrote `_summary.json` beside its parts)
holds a record of every input it listed, and only it, plus any runs after it that did not end
(killed, their head gone), are read: newest row first.

With several --style selections each input has a record per selection (the manifest's `style`
column, absent from older parts: none), looked up by input key and style.

Records are held as a key-hash array sorted for binary search beside an Arrow table (about
100 bytes an input), never as Python objects per input.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from stylekit.bulk.plan.layout import MANIFEST_DIR, RunLayout
from stylekit.files import storage
from stylekit.redact import describe, redact

log = logging.getLogger(__name__)

RUN_PREFIX = "run="
SUMMARY_FILE = "_summary.json"  # written by a run that ended: its manifest lists every input
COLUMNS = ["input", "input_version", "input_hash"]
STYLE = "style"  # the manifest's selection column (parts before it have none)


@dataclass(frozen=True)
class Record:
    version: str  # "<size> <store version>"
    hash: str  # "" when unknown


def record_key(key: str, style: str = "") -> str:
    """What a record is found by: the input's key, and the selection's folder if any."""
    return f"{style}\0{key}" if style else key


class Records:
    """Records by input key and selection (`get`); empty when no earlier run recorded any."""

    def __init__(self, table: pa.Table | None = None):
        if table is None or table.num_rows == 0:
            self._hashes = np.zeros(0, np.int64)
            self._table = pa.table({"key": pa.array([], pa.string())})
            return
        hashes = np.fromiter((hash(k) for k in table.column("key").to_pylist()), np.int64, table.num_rows)
        self._hashes, first = np.unique(hashes, return_index=True)  # the first row of a key: the newest
        self._table = table.take(pa.array(first))
        self._keys = self._table.column("key")
        self._versions = self._table.column("input_version")
        self._content = self._table.column("input_hash")

    def __len__(self) -> int:
        return len(self._hashes)

    def get(self, key: str, style: str = "") -> Record | None:
        key = record_key(key, style)
        i = int(np.searchsorted(self._hashes, hash(key)))
        if i >= len(self._hashes) or self._hashes[i] != hash(key) or self._keys[i].as_py() != key:
            return None
        return Record(self._versions[i].as_py() or "", self._content[i].as_py() or "")

    @classmethod
    def load(cls, layout: RunLayout, options: storage.StorageOptions) -> Records:
        """The records of the runs before `layout`'s (see the module's docstring)."""
        root = storage.join(layout.output_root, MANIFEST_DIR)
        runs = sorted(
            (name for name in storage.list_folders(root, options) if name.startswith(RUN_PREFIX)),
            reverse=True,
        )
        prefix = storage.join(redact(layout.input_root), "")
        tables = []
        for name in runs:
            if name == RUN_PREFIX + layout.run_id:
                continue
            folder = storage.join(root, name)
            keys = sorted(storage.list_files(folder, options))
            for part in (k for k in keys if k.endswith(".parquet")):
                table = _read_part(storage.join(folder, part), options)
                if table is not None:
                    tables.append(_keyed(table, prefix))
            if SUMMARY_FILE in keys:
                break
        if not tables:
            return cls()
        records = cls(pa.concat_tables(tables))
        log.debug("%d input records from earlier runs", len(records))
        return records


def _read_part(location: str, options: storage.StorageOptions) -> pa.Table | None:
    """A part's record columns; None for a part without them (an older stylekit's) or one that
    cannot be read (one warning: its inputs are then checked as new ones would be)."""
    try:
        parquet = pq.ParquetFile(io.BytesIO(storage.read_bytes(location, options)))
        names = set(parquet.schema_arrow.names)
        if not set(COLUMNS) <= names:
            return None
        table = parquet.read(columns=[*COLUMNS, STYLE] if STYLE in names else COLUMNS)
        if STYLE not in names:
            table = table.append_column(STYLE, pa.nulls(table.num_rows, pa.string()))
        return table
    except (pa.ArrowException, OSError) as e:
        log.warning(
            "%s is not a readable manifest part (%s): its inputs are checked as if no run had "
            "recorded them; delete it to silence this",
            redact(location),
            describe(e),
        )
        return None


def _keyed(table: pa.Table, prefix: str) -> pa.Table:
    """The rows of inputs below `prefix` that carry a record, with their keys."""
    inputs = table.column("input")
    keep = pc.and_(
        pc.starts_with(inputs, prefix),
        pc.or_(pc.is_valid(table.column("input_version")), pc.is_valid(table.column("input_hash"))),
    )
    table = table.filter(keep)
    keys = pc.utf8_slice_codeunits(table.column("input"), len(prefix))
    styled = pc.binary_join_element_wise(table.column(STYLE), keys, "\0")  # null where no style
    keys = pc.if_else(pc.is_valid(table.column(STYLE)), styled, keys)
    return pa.table({"key": keys, "input_version": table["input_version"], "input_hash": table["input_hash"]})
