"""`python -m stylekit stylize`: stylize a few files on one machine (the bulk job's path)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stylekit.cli import add_config_arguments, config_from_args
from stylekit.errors import ConfigError, StylekitError
from stylekit.files import images, locations, storage
from stylekit.infer.inference import InferenceOptions, Stylizer
from stylekit.infer.options import MemoryOptions, RunOptions, StyleChoice, StyleControls, blend_label
from stylekit.infer.selection import choose, per_style
from stylekit.nn import zoo
from stylekit.nn.modelio import load_model
from stylekit.redact import redact, shown

log = logging.getLogger("stylekit.stylize")


@dataclass(frozen=True)
class StylizeConfig:
    model: str = field(
        default="",
        metadata={"help": zoo.MODEL_HELP, "required": True},
    )
    output: str = field(
        default="", metadata={"help": "output file (one input) or folder (several)", "required": True}
    )
    inputs: tuple[str, ...] = field(default=(), metadata={"cli": False})
    format: str | None = field(
        default=None,
        metadata={
            "help": "output format: png, jpg or webp",
            "default_text": "--output's extension with one input, else the input's own",
            "choices": ["png", "jpg", "webp"],
        },
    )
    encode_options: images.EncodeOptions = field(default_factory=images.EncodeOptions)  # --quality
    # --max-pixels, --max-side
    decode_options: images.DecodeOptions = field(default_factory=images.DecodeOptions)
    style_choice: StyleChoice = field(default_factory=StyleChoice)  # --style
    # --strength, --preserve-color, --style-scale
    style_controls: StyleControls = field(default_factory=StyleControls)
    memory_options: MemoryOptions = field(default_factory=MemoryOptions)  # --max-memory, --tile-dir
    # --device, --precision, --batch-size, --compile
    run_options: RunOptions = field(default_factory=RunOptions)
    storage_options: storage.StorageOptions = field(default_factory=storage.StorageOptions)

    def __post_init__(self) -> None:
        if not self.model:
            raise ConfigError("--model is required: a stylekit .safetensors or a reference .pth")
        if not self.output:
            raise ConfigError("--output is required: a file for one input, a folder for several")
        if not self.inputs:
            raise ConfigError("give at least one input image")
        reads = [locations.Place("INPUT", s) for s in self.inputs]
        reads.append(locations.Place("--model", zoo.resolve_shipped(self.model)))
        labels = [blend_label(b) for b in self.style_choice.blends] or [""]
        writes = [
            locations.Place("--output", self.output_for(s, label)) for s in self.inputs for label in labels
        ]
        locations.refuse_overlaps(reads, writes)  # before anything is read

    @property
    def into_folder(self) -> bool:
        """Results go into --output as a folder (several inputs, or --output spelled as one)."""
        return len(self.inputs) > 1 or locations.is_folder(self.output)

    def inference(self) -> InferenceOptions:
        return InferenceOptions.of(self.run_options, self.style_controls, self.memory_options)

    def output_for(self, source: str, label: str = "") -> str:
        """Where `source` goes: --output itself for one input, else a file named after it in
        --output; with several --style selections, in the folder of selection `label` there."""
        fmt = self.format or images.format_of(source)
        if not self.into_folder:
            path = self.output
        else:
            stem = os.path.splitext(os.path.basename(source.rstrip("/")))[0]
            path = storage.join(self.output, stem + images.extension(fmt))
        return per_style(path, label) if len(self.style_choice.blends) > 1 else path


def stylize_files(config: StylizeConfig) -> int:
    """Stylize each input to its output; returns the number of failed inputs.

    Reading and decoding the next input, and encoding and writing the last result, run in
    background threads while the network runs (both mostly release the GIL): remote storage's
    latency and the codecs hide behind the network. One input ahead and one output behind at
    most, so memory stays that of about three images."""
    opts = config.storage_options
    labels = [blend_label(b) for b in config.style_choice.blends] or [""]
    outputs = [[config.output_for(s, label) for label in labels] for s in config.inputs]
    if len({o for row in outputs for o in row}) != len(config.inputs) * len(labels):
        raise ConfigError("two inputs share a file name stem; stylize them into separate folders")
    # Before any work: an output that cannot be written fails now, not after stylizing.
    if len(labels) > 1:
        for target in outputs[0]:
            storage.check_writable(target, opts, folder=False)
    else:
        storage.check_writable(config.output, opts, folder=config.into_folder)
    loaded = load_model(config.model, opts)
    stylizers = [
        Stylizer(c.model, config.inference()) for c in choose(loaded, config.style_choice, config.model)
    ]

    def read(source: str) -> np.ndarray:
        return images.decode(storage.read_bytes(source, opts), config.decode_options)

    def write(source: str, target: str, result: np.ndarray) -> None:
        fmt = config.format or images.format_of(target)
        storage.write_bytes(target, images.encode(result, fmt, config.encode_options.quality), opts)
        log.info("%s -> %s (%dx%d)", source, target, result.shape[1], result.shape[0])

    failed = 0

    def report(source: str, future: Future[Any]) -> None:
        nonlocal failed
        try:
            future.result()
        except StylekitError as e:
            failed += 1
            print(f"error: {shown(_about(source, e))}", file=sys.stderr)

    with ThreadPoolExecutor(1, "stylekit-read") as reader, ThreadPoolExecutor(1, "stylekit-write") as writer:
        pending: list[tuple[str, Future[Any]]] = []  # the last input's outputs being written
        ahead = reader.submit(read, config.inputs[0])
        for i, (source, targets) in enumerate(zip(config.inputs, outputs, strict=True)):
            decoded = ahead
            if i + 1 < len(config.inputs):
                ahead = reader.submit(read, config.inputs[i + 1])
            results: list[np.ndarray] = []
            try:
                photo = decoded.result()  # read and decoded once, whatever the styles
                results = [stylizer.stylize([photo])[0] for stylizer in stylizers]
            except StylekitError as e:
                error = e
            for done in pending:
                report(*done)  # messages in input order; never more than one input behind
            pending = []
            if not results:
                failed += 1
                print(f"error: {shown(_about(source, error))}", file=sys.stderr)
                continue
            pending = [
                (source, writer.submit(write, source, target, result))
                for target, result in zip(targets, results, strict=True)
            ]
        for done in pending:
            report(*done)
    return failed


def _about(source: str, error: Exception) -> str:
    """`source: message`, once: storage errors already begin with the path."""
    message, name = redact(str(error)), redact(source)
    return message if message.startswith(name) else f"{name}: {message}"


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "stylize",
        help="stylize images with a trained model",
        description=(
            "Stylize images. One input: --output is the file to write. Several: --output is a "
            "folder, each result named after its input. Several --style selections: each "
            "selection's results go to a folder named after it, beside where they would go "
            "(--output out/ -> out/wave/photo.jpg; --output out.jpg -> wave/out.jpg)."
        ),
    )
    add_config_arguments(p, StylizeConfig)
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image files (paths or fsspec URLs: s3://, gs://, az://, ...)",
    )
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    config = config_from_args(StylizeConfig, args, inputs=tuple(args.inputs))
    failed = stylize_files(config)
    if failed:
        print(f"error: {failed} of {len(config.inputs)} inputs failed (see above)", file=sys.stderr)
        return 1
    print(shown(config.output))
    return 0
