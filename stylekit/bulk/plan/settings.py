"""The settings guard: OUT/_manifest/_outputs.json records the model digest and the settings
that change pixels; a rerun with other ones refuses to mix styles unless --overwrite."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from stylekit.bulk.plan.layout import RunLayout
from stylekit.errors import ConfigError
from stylekit.files import storage
from stylekit.redact import redact

if TYPE_CHECKING:
    from stylekit.bulk.config import BulkConfig


# Settings a settings file may not record (it was written before they existed), at the values
# its outputs were made with: the controls' neutral defaults, no stabiliser.
_UNRECORDED_DEFAULTS = {"strength": 1.0, "preserve_color": False, "style_scale": 1.0, "stabilize": 0.0}


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
    "name old -> new" (empty: the same); those the file does not record count as the values
    its outputs were made with."""
    found = {**_UNRECORDED_DEFAULTS, **found}
    return [f"{k} {found.get(k)!r} -> {v!r}" for k, v in wanted.items() if found.get(k) != v]


@dataclass(frozen=True)
class SettingsGuard:
    """This run's settings, checked against OUT's record of them (`check_output_settings`)."""

    location: str  # OUT/_manifest/_outputs.json
    settings: dict[str, Any]  # this run's: `output_settings`
    options: storage.StorageOptions
    first_run: bool  # OUT had no settings file
    overwrite: bool  # --overwrite: OUT's outputs are restylized with these settings

    @contextlib.contextmanager
    def commit(self) -> Iterator[None]:
        """Around the run's work: a first run records its settings before any output is
        written; an --overwrite run records its own once its work is done, so an interrupted
        one still refuses a plain rerun."""
        if self.first_run:
            self._record()
        yield
        if self.overwrite:
            self._record()

    def _record(self) -> None:
        storage.write_bytes(self.location, json.dumps(self.settings, indent=1).encode(), self.options)


def check_output_settings(
    config: BulkConfig, layout: RunLayout, digest: str, options: storage.StorageOptions
) -> SettingsGuard:
    """Refuse to mix outputs of another model or other settings into OUT, unless --overwrite:
    one line naming what changed. The guard returned records this run's settings when it
    commits."""
    wanted = output_settings(config, digest)
    guard = SettingsGuard(layout.settings_file, wanted, options, first_run=False, overwrite=config.overwrite)
    recorded = storage.read_if_exists(layout.settings_file, options)
    if recorded is None:
        return replace(guard, first_run=True)
    found = _parse_settings(recorded, layout.settings_file)
    changes = settings_changes(found, wanted)
    if not changes or config.overwrite:
        return guard
    changed = ", ".join(changes)
    hint = ""
    if found.get("style_scale", 1.0) == 1.0 and wanted["style_scale"] == "model":
        hint = " (or --style-scale 1 to keep the full-size strokes these were made with)"
    raise ConfigError(
        f"{redact(layout.output_root)} holds results made differently ({changed}); rerun with --overwrite "
        f"to restylize everything{hint}, or use another --output"
    )


def _parse_settings(data: bytes, location: str) -> dict[str, Any]:
    try:
        found = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        found = None
    if not isinstance(found, dict):
        raise ConfigError(
            f"{redact(location)} is damaged: it records the model and settings the "
            "results in --output were made with. Restore it from a backup, or delete it if every "
            "result there is of this model and these settings (a run then records them anew)"
        )
    return found
