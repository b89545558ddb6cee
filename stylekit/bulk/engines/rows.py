"""One photo from its key to its manifest row: read and decode it (within --decode-timeout),
write its result (encoded, atomically), and the row that says how it went.

Every photo engine goes through these: the block runner (CPU actors and --engine local,
bulk/engines/blocks.py) and the GPU pipeline's decode and write tasks
(bulk/engines/ray_photos.py). A photo that fails at any step is a failed row with its error,
never an exception out of its batch.

A key shard's row is an input with the --style selections still to do for it; `expand` makes
it one row per output (the input's key, the output's key in its selection's folder, the
selection), so each input is read once and gives a manifest row per selection.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from stylekit.bulk.engines.timeouts import run_within
from stylekit.bulk.plan.keys import style_output_key
from stylekit.bulk.plan.layout import RunLayout
from stylekit.bulk.plan.manifest import FAILED, manifest_table
from stylekit.files import images, storage

if TYPE_CHECKING:
    from stylekit.bulk.run import BulkRun

# The columns an output's row carries on from its key shard's: the listed input's
# "<size> <version>" and the record of the output already there (planner.KEYS_SCHEMA).
RECORD_COLUMNS = ("input_version", "record_version", "record_hash")


def expand(keys: Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
    """A key shard's rows (one per input, with lists of the selections to do and their records)
    as one row per output: `key`, `output_key` (in the selection's folder), `style` (that
    folder, "" for OUT itself), `input_bytes`, `input_version`, `record_version`,
    `record_hash`, and `source`, the position of its input in `keys`."""
    rows: dict[str, list[Any]] = {
        name: [] for name in ("key", "output_key", "style", "input_bytes", *RECORD_COLUMNS, "source")
    }
    for i, key in enumerate(keys["key"]):
        styles = keys["style"][i]
        for folder, version, content in zip(
            styles, keys["record_version"][i], keys["record_hash"][i], strict=True
        ):
            rows["key"].append(str(key))
            rows["output_key"].append(style_output_key(str(keys["output_key"][i]), str(folder)))
            rows["style"].append(str(folder))
            rows["input_bytes"].append(int(keys["input_bytes"][i]))
            rows["input_version"].append(str(keys["input_version"][i] or ""))
            rows["record_version"].append(str(version or ""))
            rows["record_hash"].append(str(content or ""))
            rows["source"].append(i)
    return rows


@dataclass(frozen=True)
class RowContext:
    """What a photo needs besides its key, from its read to its row (the same for every photo
    of a run; shipped to the actors and tasks that run photos)."""

    layout: RunLayout
    options: storage.StorageOptions
    decode: images.DecodeOptions
    timeout: float  # --decode-timeout
    quality: int
    digest: str
    batch_size: int  # photos per model call
    max_bytes: int = 256_000_000  # --max-bytes: an input read whole is at most this
    folders: tuple[str, ...] = ("",)  # each selection's folder (BulkConfig.folders), by model slot

    @classmethod
    def of(cls, run: BulkRun) -> RowContext:
        config = run.config
        return cls(
            layout=run.layout,
            options=run.options,
            decode=config.decode_options,
            timeout=config.decode_timeout,
            quality=config.encode_options.quality,
            digest=run.digest,
            batch_size=config.run_options.batch_size,
            max_bytes=config.max_bytes,
            folders=config.folders,
        )

    def slot(self, folder: str) -> int:
        """Which of the run's networks (selection.choose's order) paints into `folder`."""
        return self.folders.index(folder)

    def read(self, key: str) -> tuple[np.ndarray, str]:
        """One input read (at most --max-bytes) and decoded within --decode-timeout: its
        pixels, (H, W, 3) uint8, and the content hash of the bytes read. Raises what failed."""

        def read_and_decode() -> tuple[np.ndarray, str]:
            data = storage.read_bytes(self.layout.input_uri(key), self.options, limit=self.max_bytes)
            return images.decode(data, self.decode), storage.content_hash(data)

        return run_within(self.timeout, read_and_decode)

    def write(self, out: str, pixels: np.ndarray) -> int:
        """A result encoded in its output key's format and written atomically; its bytes."""
        data = images.encode(pixels, images.format_of(out), self.quality)
        storage.write_bytes(self.layout.output_uri(out), data, self.options)
        return len(data)


@dataclass
class Outcomes:
    """What became of each photo of a batch, by position: a manifest row's own columns. Each
    starts failed with no error and is set ok once its result is written."""

    status: list[str]
    error: list[str]
    width: list[int]  # of the written result (0: none written)
    height: list[int]
    output_bytes: list[int]
    seconds: list[float]  # the photo's own share of read, decode, model call and write
    input_hash: list[str] = field(default_factory=list)  # of the bytes read ("": none)

    @classmethod
    def failed(cls, n: int) -> Outcomes:
        return cls([FAILED] * n, [""] * n, [0] * n, [0] * n, [0] * n, [0.0] * n, [""] * n)

    def rows(self, keys: Mapping[str, Sequence[Any]], context: RowContext) -> pa.Table:
        """The batch's manifest rows: each output's key columns (`key`, `output_key`, `style`,
        `input_bytes` and the records, as `expand` has them) beside its outcome."""
        n = len(keys["key"])
        columns = {
            "key": [str(k) for k in keys["key"]],
            "output_key": [str(k) for k in keys["output_key"]],
            "status": self.status,
            "error": self.error,
            "width": self.width,
            "height": self.height,
            "input_bytes": [int(b) for b in keys["input_bytes"]],
            "output_bytes": self.output_bytes,
            "seconds": self.seconds,
            "input_hash": self.input_hash,
            "style": [str(s) for s in keys["style"]] if "style" in keys else [""] * n,
            **{
                name: ["" if v is None else str(v) for v in keys[name]] if name in keys else [""] * n
                for name in RECORD_COLUMNS
            },
        }
        return manifest_table(columns, context.layout, context.digest)
