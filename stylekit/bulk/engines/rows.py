"""One photo from its key to its manifest row: read and decode it (within --decode-timeout),
write its result (encoded, atomically), and the row that says how it went.

Every photo engine goes through these: the block runner (CPU actors and --engine local,
bulk/engines/blocks.py) and the GPU pipeline's decode and write tasks
(bulk/engines/ray_photos.py). A photo that fails at any step is a failed row with its error,
never an exception out of its batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from stylekit.bulk.engines.timeouts import run_within
from stylekit.bulk.plan.layout import RunLayout
from stylekit.bulk.plan.manifest import FAILED, manifest_table
from stylekit.files import images, storage

if TYPE_CHECKING:
    from stylekit.bulk.run import BulkRun

# The key shard's columns a row carries on: the listed input's "<size> <version>" and the
# record of the output already there (planner.KEYS_SCHEMA).
RECORD_COLUMNS = ("input_version", "record_version", "record_hash")


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
        )

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
        """The batch's manifest rows: each photo's key columns (`key`, `output_key`,
        `input_bytes` and the records, as its key shard has them) beside its outcome."""
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
            **{
                name: ["" if v is None else str(v) for v in keys[name]] if name in keys else [""] * n
                for name in RECORD_COLUMNS
            },
        }
        return manifest_table(columns, context.layout, context.digest)
