"""The settings guard: OUT/_manifest/_outputs.json records the model digest and the settings
that change pixels; a rerun with other ones refuses to mix styles unless --overwrite.

A run of several --style selections writes a folder per selection (OUT/<label>/KEY), and the
file records each folder's settings under `styles` ({label: settings}): a run may add a
selection to OUT (its folder is new), but one that OUT holds must come with the same model and
settings. The two layouts never share an OUT: a folder per style beside results at the inputs'
own keys (a one-selection run's) is refused, unless --overwrite."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from stylekit.bulk.plan.layout import RunLayout
from stylekit.errors import ConfigError
from stylekit.files import storage

if TYPE_CHECKING:
    from stylekit.bulk.config import BulkConfig


# Settings a settings file may not record (it was written before they existed), at the values
# its outputs were made with: the controls' neutral defaults, no stabiliser.
_UNRECORDED_DEFAULTS = {"strength": 1.0, "preserve_color": False, "style_scale": 1.0, "stabilize": 0.0}


STYLES = "styles"  # a per-style OUT's settings: {label: settings}


def output_settings(config: BulkConfig, digest: str) -> dict[str, Any]:
    """What, besides the output key, decides an output's pixels (a one-selection run's --style
    too; with several selections each folder's label says it)."""
    style = config.style_controls
    chosen = {} if config.per_style or not config.styles[0] else {"style": config.styles[0]}
    return {
        **chosen,
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
    settings: dict[str, Any]  # what the file holds once this run is done
    options: storage.StorageOptions
    first_run: bool  # OUT had no settings file
    overwrite: bool  # --overwrite: OUT's outputs are restylized with these settings
    before: dict[str, Any] | None = None  # recorded before any output: OUT's file plus new styles

    @contextlib.contextmanager
    def commit(self) -> Iterator[None]:
        """Around the run's work: a first run, or one adding styles to OUT, records its
        settings before any output is written; an --overwrite run records its own once its work
        is done, so an interrupted one still refuses a plain rerun."""
        if self.first_run:
            self._record(self.settings)
        elif self.before is not None:
            self._record(self.before)
        yield
        if self.overwrite:
            self._record(self.settings)

    def _record(self, settings: dict[str, Any]) -> None:
        storage.write_bytes(self.location, json.dumps(settings, indent=1).encode(), self.options)


def check_output_settings(
    config: BulkConfig, layout: RunLayout, digest: str, options: storage.StorageOptions
) -> SettingsGuard:
    """Refuse to mix outputs of another model or other settings into OUT, unless --overwrite:
    one line naming what changed. The guard returned records this run's settings when it
    commits."""
    wanted = output_settings(config, digest)
    if config.per_style:
        wanted = {STYLES: {label: wanted for label in config.styles}}
    guard = SettingsGuard(layout.settings_file, wanted, options, first_run=False, overwrite=config.overwrite)
    recorded = storage.read_if_exists(layout.settings_file, options)
    if recorded is None:
        return replace(guard, first_run=True)
    found = _parse_settings(recorded, layout)
    if (STYLES in found) != config.per_style and not config.overwrite:
        raise ConfigError(_layouts_differ(found, layout))
    if config.per_style:
        return _check_styles(guard, found.get(STYLES) or {}, config, layout)
    changes = settings_changes(found, wanted)
    if not changes or config.overwrite:
        return guard
    changed = ", ".join(changes)
    hint = ""
    if found.get("style_scale", 1.0) == 1.0 and wanted["style_scale"] == "model":
        hint = " (or --style-scale 1 to keep the full-size strokes these were made with)"
    raise ConfigError(
        f"{layout.shown_output} holds results made differently ({changed}); rerun with --overwrite "
        f"to restylize everything{hint}, or use another --output"
    )


def _check_styles(
    guard: SettingsGuard, found: dict[str, Any], config: BulkConfig, layout: RunLayout
) -> SettingsGuard:
    """A per-style run against OUT's styles: each selection OUT holds made as this run makes
    it (else one line, unless --overwrite); the new ones recorded before any output."""
    wanted = guard.settings[STYLES]
    changes = [
        f"{label}: {change}"
        for label in config.styles
        if label in found
        for change in settings_changes(found[label], wanted[label])
    ]
    if changes and not config.overwrite:
        raise ConfigError(
            f"{layout.shown_output} holds results made differently ({', '.join(changes)}); "
            "rerun with --overwrite to restylize those styles, or use another --output"
        )
    new = {label: wanted[label] for label in config.styles if label not in found}
    return replace(
        guard,
        settings={STYLES: {**found, **wanted}},
        before={STYLES: {**found, **new}} if new else None,
    )


def _layouts_differ(found: dict[str, Any], layout: RunLayout) -> str:
    """The one line for a run whose layout is not OUT's."""
    out = layout.shown_output
    if STYLES in found:
        held = ", ".join(found[STYLES]) or "none"
        return (
            f"{out} holds a folder per style ({held}), from several --style selections, and a run "
            "of one selection writes at the inputs' own keys beside them: give the styles with "
            "--style as before, or use another --output"
        )
    return (
        f"{out} holds the results of one style at the inputs' own keys, and several --style "
        "selections write a folder per style beside them: use another --output for them (or "
        "--overwrite)"
    )


def _parse_settings(data: bytes, layout: RunLayout) -> dict[str, Any]:
    try:
        found = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        found = None
    if not isinstance(found, dict):
        raise ConfigError(
            f"{layout.shown_settings} is damaged: it records the model and settings the "
            "results in --output were made with. Restore it from a backup, or delete it if every "
            "result there is of this model and these settings (a run then records them anew)"
        )
    return found
