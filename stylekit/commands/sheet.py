"""`python -m stylekit sheet`: compare models on the same photos in one contact-sheet image."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from dataclasses import dataclass, field

from stylekit.cli import add_config_arguments, config_from_args
from stylekit.errors import ConfigError, StylekitError
from stylekit.files import images, locations, storage
from stylekit.infer import sheet
from stylekit.infer.inference import InferenceOptions
from stylekit.infer.options import RunOptions, StyleChoice
from stylekit.infer.selection import choose
from stylekit.nn import zoo
from stylekit.nn.modelio import load_model, style_entries
from stylekit.redact import redact, shown

log = logging.getLogger("stylekit.sheet")

OUTPUT_FORMATS = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp"}


@dataclass(frozen=True)
class SheetConfig:
    models: tuple[str, ...] = field(default=(), metadata={"cli": False})
    output: str = field(
        default="",
        metadata={"help": "the sheet to write (.jpg, .png or .webp; path or fsspec URL)", "required": True},
    )
    photos: tuple[str, ...] = field(default=(), metadata={"cli": False})
    cell: int = field(
        default=sheet.DEFAULT_CELL,
        metadata={"help": "cell size in px: photos are resized so their longest side is this"},
    )
    style_choice: StyleChoice = field(default_factory=StyleChoice)  # --style: a row per selection
    encode_options: images.EncodeOptions = field(default_factory=images.EncodeOptions)  # --quality
    # --max-pixels (photos are scaled to --cell)
    decode_options: images.DecodeOptions = field(
        default_factory=images.DecodeOptions, metadata={"exclude": ("max_side",)}
    )
    # --device
    run_options: RunOptions = field(
        default_factory=RunOptions, metadata={"exclude": ("precision", "batch_size", "compile")}
    )
    storage_options: storage.StorageOptions = field(default_factory=storage.StorageOptions)

    def __post_init__(self) -> None:
        if not self.models:
            raise ConfigError("give at least one --model (a .safetensors, .pth or shipped model name)")
        if not self.output:
            raise ConfigError("--output is required: the sheet image to write (.jpg, .png or .webp)")
        if not self.photos:
            raise ConfigError("give at least one photo")
        if self.format is None:
            raise ConfigError(f"--output {self.output!r} must end in .jpg, .jpeg, .png or .webp")
        if not sheet.MIN_CELL <= self.cell <= 4096:
            raise ConfigError(f"--cell must be {sheet.MIN_CELL}-4096 px (got {self.cell})")
        reads = [locations.Place("PHOTO", p) for p in self.photos]
        reads += [locations.Place("--model", zoo.resolve_shipped(m)) for m in self.models]
        locations.refuse_overlaps(reads, [locations.Place("--output", self.output)])  # before any read

    @property
    def format(self) -> str | None:
        return OUTPUT_FORMATS.get(os.path.splitext(self.output.rstrip("/"))[1].lower())


def make_sheet(config: SheetConfig) -> None:
    """Read every photo first (a bad one fails before any model is loaded), then the models,
    and write the sheet."""
    opts = config.storage_options
    decode = dataclasses.replace(config.decode_options, max_side=config.cell)
    storage.check_writable(config.output, opts, folder=False)  # before any work
    photos = []
    for source in config.photos:
        try:
            photos.append(images.decode(storage.read_bytes(source, opts), decode))
        except images.ImageError as e:
            raise StylekitError(f"{redact(source)}: {e}") from None
    rows = []
    for location in config.models:
        loaded = load_model(location, opts)
        entries = {e["name"]: e for e in style_entries(loaded.metadata)}
        for chosen in choose(loaded, config.style_choice, location):
            label, meta = sheet.model_label(location), loaded.metadata
            if chosen.label:  # one --model: its styles name the rows
                label = f"{label}: {chosen.label}" if len(config.models) > 1 else chosen.label
                entry = entries.get(chosen.label)  # one style of several: its own painting
                meta = {"style": entry.get("painting", ""), "style_name": chosen.label} if entry else {}
            thumb = sheet.style_thumbnail(meta, opts)
            rows.append(sheet.SheetModel(label, chosen.model, thumb))
    pixels = sheet.contact_sheet(photos, rows, config.cell, InferenceOptions.of(config.run_options))
    storage.write_bytes(
        config.output, images.encode(pixels, config.format or "jpg", config.encode_options.quality), opts
    )
    log.info(
        "%d model(s) x %d photo(s) -> %s (%dx%d)",
        len(rows),
        len(photos),
        config.output,
        pixels.shape[1],
        pixels.shape[0],
    )


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "sheet",
        help="compare models on the same photos in one contact-sheet image",
        description=(
            "Build a contact sheet: a row of the original photos, then one row per --model (per "
            "--style selection of it, with --style) with its stylization of each, labelled with "
            "the model's name and style image."
        ),
    )
    p.add_argument(
        "--model",
        dest="models",
        action="append",
        default=None,
        required=True,
        metavar="MODEL",
        help=f"{zoo.MODEL_HELP}; repeat for more rows (required)",
    )
    add_config_arguments(p, SheetConfig)
    p.add_argument(
        "photos", nargs="+", metavar="PHOTO", help="photos (paths or fsspec URLs: s3://, gs://, az://, ...)"
    )
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    config = config_from_args(SheetConfig, args, models=tuple(args.models or ()), photos=tuple(args.photos))
    make_sheet(config)
    print(shown(config.output))
    return 0
