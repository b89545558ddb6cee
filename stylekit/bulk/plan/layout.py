"""Where a bulk run reads and writes: its input and output roots, and its folders under
OUT/_manifest/ (the manifest parts, the key shards, the settings file)."""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stylekit.files import locations, storage
from stylekit.redact import redact

if TYPE_CHECKING:
    from stylekit.bulk.config import BulkConfig

MANIFEST_DIR = "_manifest"
KEYS_DIR = "_keys"  # leading underscore: Parquet dataset readers of _manifest/ skip it
SETTINGS_FILE = "_outputs.json"


def new_run_id() -> str:
    """A run's id: its start in UTC to the millisecond, then a random tag. Ids sort in the
    order the runs started (a rerun reads the newest earlier run's records first), also for
    runs that start within one second of each other."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return f"{now:%Y%m%dT%H%M%S}.{now.microsecond // 1000:03d}Z-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class RunLayout:
    """Where one run reads and writes. Roots are absolute paths or URIs without a trailing '/'."""

    input_root: str
    output_root: str
    run_id: str

    @classmethod
    def for_config(cls, config: BulkConfig, run_id: str | None = None) -> RunLayout:
        return cls(locations.root(config.input), locations.root(config.output), run_id or new_run_id())

    @property
    def manifest_dir(self) -> str:
        # Hive-style: reading OUT/_manifest/ as one dataset gives every run with a run column.
        return storage.join(self.output_root, MANIFEST_DIR, f"run={self.run_id}")

    @property
    def keys_dir(self) -> str:
        return storage.join(self.output_root, MANIFEST_DIR, KEYS_DIR, self.run_id)

    @property
    def settings_file(self) -> str:
        return storage.join(self.output_root, MANIFEST_DIR, SETTINGS_FILE)

    # As a person may see them (logs, errors, the summary): credentials in a URI masked.
    @property
    def shown_input(self) -> str:
        return redact(self.input_root)

    @property
    def shown_output(self) -> str:
        return redact(self.output_root)

    @property
    def shown_manifest(self) -> str:
        return redact(self.manifest_dir)

    @property
    def shown_settings(self) -> str:
        return redact(self.settings_file)

    def input_uri(self, key: str) -> str:
        return storage.join(self.input_root, key)

    def output_uri(self, key: str) -> str:
        return storage.join(self.output_root, key)
