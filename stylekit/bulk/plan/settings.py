"""The settings guard: OUT/_manifest/_outputs.json records the model digest and the settings
that change pixels; a rerun with other ones refuses to mix styles unless --overwrite."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from stylekit.bulk.plan.layout import RunLayout
from stylekit.errors import ConfigError
from stylekit.files import storage
from stylekit.redact import redact

if TYPE_CHECKING:
    from stylekit.bulk.config import BulkConfig


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
