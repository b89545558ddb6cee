"""The bulk job's stylization controls: flags, the actors' options, and the rerun refusal when
they change (plan-level, no Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stylekit.bulk.config import BulkConfig
from stylekit.bulk.plan.layout import RunLayout
from stylekit.bulk.plan.settings import check_output_settings, output_settings, settings_changes
from stylekit.cli import OneLineErrorParser, add_config_arguments, config_from_args, config_from_flags
from stylekit.errors import ConfigError
from stylekit.files import storage

DIGEST = "0123456789abcdef"


def config(tmp_path: Path, **values: object) -> BulkConfig:
    return config_from_flags(
        BulkConfig, model="m.safetensors", input=str(tmp_path / "in"), output=str(tmp_path / "out"), **values
    )


def test_flags_reach_the_actors_options(tmp_path: Path) -> None:
    parser = OneLineErrorParser()
    add_config_arguments(parser, BulkConfig)
    args = parser.parse_args(
        [
            *("--model", "m.safetensors", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")),
            *("--strength", "0.5", "--preserve-color", "--style-scale", "2"),
        ]
    )
    options = config_from_args(BulkConfig, args).inference_options
    assert (options.strength, options.preserve_color, options.style_scale) == (0.5, True, 2.0)


@pytest.mark.parametrize(
    ("values", "flag"),
    [({"strength": 1.5}, "--strength"), ({"style_scale": 0.0}, "--style-scale")],
)
def test_bad_values_are_config_errors(tmp_path: Path, values: dict[str, float], flag: str) -> None:
    with pytest.raises(ConfigError, match=flag):
        config(tmp_path, **values)


def test_a_settings_file_from_before_the_controls_matches_the_defaults(tmp_path: Path) -> None:
    old = {"model_digest": DIGEST, "max_side": None, "quality": 95}
    assert settings_changes(old, output_settings(config(tmp_path, style_scale=1.0), DIGEST)) == []
    changed = settings_changes(old, output_settings(config(tmp_path, strength=0.5, style_scale=1.0), DIGEST))
    assert changed == ["strength 1.0 -> 0.5"]
    # Made before the default stroke scale became the model's own: a plain rerun says so.
    assert settings_changes(old, output_settings(config(tmp_path), DIGEST)) == ["style_scale 1.0 -> 'model'"]


@pytest.mark.parametrize(
    ("values", "name"),
    [
        ({"strength": 0.7}, "strength"),
        ({"preserve_color": True}, "preserve_color"),
        ({"style_scale": 2.0}, "style_scale"),
    ],
)
def test_a_rerun_with_other_controls_is_refused_unless_overwrite(
    tmp_path: Path, values: dict[str, object], name: str
) -> None:
    options = storage.StorageOptions()
    first = config(tmp_path)
    layout = RunLayout.for_config(first)
    with check_output_settings(first, layout, DIGEST, options).commit():  # a first run records its settings
        pass
    recorded = json.loads(Path(layout.settings_file).read_text())
    assert (
        recorded["strength"] == 1.0
        and recorded["preserve_color"] is False
        and recorded["style_scale"] == "model"
    )
    check_output_settings(first, layout, DIGEST, options)  # the same settings: fine
    with pytest.raises(ConfigError, match=f"{name} .*--overwrite"):
        check_output_settings(config(tmp_path, **values), layout, DIGEST, options)
    check_output_settings(config(tmp_path, overwrite=True, **values), layout, DIGEST, options)
