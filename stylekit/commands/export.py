"""`python -m stylekit export`: a model as ONNX or TorchScript, for runtimes without stylekit."""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass, field

from stylekit.cli import add_config_arguments, config_from_args
from stylekit.errors import ConfigError
from stylekit.files import locations, storage
from stylekit.infer import export
from stylekit.infer.options import StyleChoice
from stylekit.infer.selection import choose
from stylekit.nn import zoo
from stylekit.nn.modelio import load_model
from stylekit.redact import shown

log = logging.getLogger("stylekit.export")

# --format left out: taken from --output's extension.
EXTENSIONS = {".onnx": "onnx", ".pt": "torchscript", ".ts": "torchscript", ".torchscript": "torchscript"}


@dataclass(frozen=True)
class ExportConfig:
    model: str = field(
        default="",
        metadata={
            "help": zoo.MODEL_HELP,
            "required": True,
        },
    )
    output: str = field(
        default="",
        metadata={
            "help": "the file to write (path or URL: s3://, gs://, az://, any fsspec protocol)",
            "required": True,
        },
    )
    format: str | None = field(
        default=None,
        metadata={
            "help": "onnx or torchscript",
            "default_text": "from --output's extension (.onnx; .pt, .ts)",
            "choices": list(export.FORMATS),
        },
    )
    style_choice: StyleChoice = field(default_factory=StyleChoice)  # --style
    storage_options: storage.StorageOptions = field(default_factory=storage.StorageOptions)

    def __post_init__(self) -> None:
        if len(self.style_choice.blends) > 1:
            raise ConfigError(
                "--style: an export is one graph; give one style or blend, or leave --style out "
                "(a multi-style model's graph then takes the style weights as an input)"
            )
        if not self.model:
            raise ConfigError("--model is required: a shipped model's name or a model file")
        if not self.output:
            raise ConfigError("--output is required: the file to write")
        if self.resolved_format is None:
            raise ConfigError(
                f"--format is required: --output {self.output!r} ends in none of {', '.join(EXTENSIONS)}"
            )
        if self.resolved_format not in export.FORMATS:
            raise ConfigError(f"--format must be one of {', '.join(export.FORMATS)} (got {self.format!r})")
        model = locations.Place("--model", zoo.resolve_shipped(self.model))
        locations.refuse_overlaps([model], [locations.Place("--output", self.output)])  # before any read

    @property
    def resolved_format(self) -> str | None:
        if self.format:
            return self.format
        return EXTENSIONS.get(os.path.splitext(self.output.rstrip("/"))[1].lower())


def export_file(config: ExportConfig) -> None:
    opts = config.storage_options
    fmt = config.resolved_format or "onnx"  # validated: never None here
    storage.check_writable(config.output, opts, folder=False)  # before any work
    loaded = load_model(config.model, opts)
    if config.style_choice.blends:  # one style or blend, exported as a one-style network
        (chosen,) = choose(loaded, config.style_choice, config.model)
        metadata = {**export.export_metadata(loaded.metadata, loaded.digest), "exported_style": chosen.label}
        data = export.export_bytes(chosen.model, fmt, metadata)
    else:  # every style: a multi-style model's graph takes their weights as an input
        styles = loaded.styles if len(loaded.styles) > 1 else ()
        metadata = export.export_metadata(loaded.metadata, loaded.digest, styles)
        data = export.export_bytes(loaded.model, fmt, metadata)
    storage.write_bytes(config.output, data, opts)
    log.info("%s -> %s (%s, %.1f MB)", config.model, config.output, fmt, len(data) / 1e6)


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "export",
        help="export a model to ONNX or TorchScript",
        description=(
            "Export a model to ONNX or TorchScript with dynamic batch, height and width. The "
            "graph takes (B, 3, H, W) float32 RGB in [0, 255], H and W >= 5, and returns the same "
            "layout unclamped (clamp to [0, 255]); the model's metadata travels with it. A "
            "multi-style model's graph also takes `style`, (N,) float32 weights over its styles "
            "(one-hot for one, summing to 1 for a blend), unless --style picks one."
        ),
    )
    add_config_arguments(p, ExportConfig)
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    config = config_from_args(ExportConfig, args)
    export_file(config)
    print(shown(config.output))
    return 0
