"""Where a bulk run reads and writes: output keys, the run's folders under OUT/_manifest/, and
the settings guard.

OUT/_manifest/_outputs.json records the model digest and the settings that change pixels; a
rerun with other ones refuses to mix styles unless --overwrite.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stylekit.errors import ConfigError
from stylekit.files import images, locations, storage
from stylekit.redact import redact
from stylekit.video.media import is_video_key, video_output_key

if TYPE_CHECKING:
    from stylekit.bulk.config import BulkConfig

MANIFEST_DIR = "_manifest"
KEYS_DIR = "_keys"  # leading underscore: Parquet dataset readers of _manifest/ skip it
SETTINGS_FILE = "_outputs.json"
FORMATS = ("same", "png", "jpg", "webp")


# --- output keys ------------------------------------------------------------------------------

_OWN_FORMAT = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp"}


def output_key(key: str, fmt: str) -> str:
    """The output's key: the input's own key when the format does not change (case and
    .jpeg kept), else its stem plus the new extension ("a.tif" -> "a.png"). A video keeps its
    container if it can hold H.264, else becomes .mp4 (`--format` is for photos)."""
    if is_video_key(key):
        return video_output_key(key)
    stem, ext = os.path.splitext(key)
    own = _OWN_FORMAT.get(ext.lower())
    wanted = images.format_of(key) if fmt == "same" else fmt
    return key if own == wanted else stem + images.extension(wanted)


class CollisionGuard:
    """Finds inputs whose output key an earlier input already has ("a.tif" and "a.png" both
    -> "a.png"). Such inputs share their stem, so in a sorted listing they all fall inside the
    contiguous run of keys starting with "<stem>."; only the runs enclosing the current key
    (a short chain of nested prefixes) are remembered."""

    def __init__(self) -> None:
        self._open: list[tuple[str, dict[str, str]]] = []  # (stem + ".", {output key: input key})

    def claim(self, key: str, out: str) -> str | None:
        """Record that `key` writes `out`; returns the earlier input that already writes it."""
        while self._open and not key.startswith(self._open[-1][0]):
            self._open.pop()
        prefix = os.path.splitext(key)[0] + "."
        if not self._open or self._open[-1][0] != prefix:
            self._open.append((prefix, {}))
        owners = self._open[-1][1]
        earlier = owners.get(out)
        if earlier is None:
            owners[out] = key
        return earlier


# --- run layout -------------------------------------------------------------------------------


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


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

    def input_uri(self, key: str) -> str:
        return storage.join(self.input_root, key)

    def output_uri(self, key: str) -> str:
        return storage.join(self.output_root, key)


# Settings recorded since the stylization controls: a settings file written before them holds
# outputs made at these values (the controls' neutral defaults).
_SETTINGS_BEFORE_CONTROLS = {"strength": 1.0, "preserve_color": False, "style_scale": 1.0, "stabilize": 0.0}


def output_settings(config: BulkConfig, digest: str) -> dict[str, Any]:
    """What, besides the output key, decides an output's pixels."""
    style = config.style_controls
    return {
        "model_digest": digest,
        "max_side": config.decode_options.max_side,
        "quality": config.encode_options.quality,
        "strength": style.strength,
        "preserve_color": style.preserve_color,
        # None: the model's own stroke scale (a pyramid on large photos), recorded by name.
        "style_scale": "model" if style.style_scale is None else style.style_scale,
        "stabilize": config.stabilize,
    }


def settings_changes(found: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """The settings that differ between a recorded settings file and this run's, as
    "name old -> new" (empty: the same); keys a file from before the controls lacks count
    as their defaults."""
    found = {**_SETTINGS_BEFORE_CONTROLS, **found}
    return [f"{k} {found.get(k)!r} -> {v!r}" for k, v in wanted.items() if found.get(k) != v]


def check_output_settings(
    config: BulkConfig,
    layout: RunLayout,
    digest: str,
    options: storage.StorageOptions,
    record: bool = True,
) -> bool:
    """Refuse to mix outputs of another model or other settings into OUT (unless --overwrite);
    record the settings on a first run (with record=False the caller does, once it has checked
    the model). An --overwrite run records its own only when it ends
    (`record_output_settings`), so an interrupted one still refuses a plain rerun. True on a
    first run (OUT had no settings file)."""
    wanted = output_settings(config, digest)
    if not storage.exists(layout.settings_file, options):
        if record:
            record_output_settings(config, layout, digest, options)
        return True
    found = _read_settings(layout, options)
    changes = settings_changes(found, wanted)
    if not changes or config.overwrite:
        return False
    changed = ", ".join(changes)
    hint = ""
    if found.get("style_scale", 1.0) == 1.0 and wanted["style_scale"] == "model":
        hint = " (or --style-scale 1 to keep the full-size strokes these were made with)"
    raise ConfigError(
        f"{redact(layout.output_root)} holds results made differently ({changed}); rerun with --overwrite "
        f"to restylize everything{hint}, or use another --output"
    )


def _read_settings(layout: RunLayout, options: storage.StorageOptions) -> dict[str, Any]:
    try:
        found = json.loads(storage.read_bytes(layout.settings_file, options))
    except (ValueError, UnicodeDecodeError):
        found = None
    if not isinstance(found, dict):
        raise ConfigError(
            f"{redact(layout.settings_file)} is damaged: it records the model and settings the "
            "results in --output were made with. Restore it from a backup, or delete it if every "
            "result there is of this model and these settings (a run then records them anew)"
        )
    return found


def record_output_settings(
    config: BulkConfig, layout: RunLayout, digest: str, options: storage.StorageOptions
) -> None:
    data = json.dumps(output_settings(config, digest), indent=1).encode()
    storage.write_bytes(layout.settings_file, data, options)
