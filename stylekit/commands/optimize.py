"""`python -m stylekit optimize`: the Gatys et al. baseline. No trained model: each content image
is itself optimised against the perceptual loss (stylekit/nn/gatys.py); slow, but the quality
reference the feed-forward networks are compared with."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from stylekit.cli import add_config_arguments, config_from_args
from stylekit.errors import ConfigError, StylekitError
from stylekit.files import images, locations, storage
from stylekit.infer.inference import InferenceOptions
from stylekit.infer.options import RunOptions
from stylekit.nn.gatys import GatysConfig, IterationRecord, optimize_image
from stylekit.nn.loss import PerceptualLoss
from stylekit.nn.vgg import default_loss_weights, load_vgg
from stylekit.redact import shown

log = logging.getLogger(__name__)

MIN_SIDE = 16  # VGG-16 halves the image three times before relu4_3


@dataclass(frozen=True)
class OptimizeConfig:
    style: str = field(
        default="",
        metadata={
            "help": "style image (path or URL: s3://, gs://, az://, any fsspec protocol)",
            "required": True,
        },
    )
    output: str = field(
        default="",
        metadata={"help": "output file (one content image) or folder (several)", "required": True},
    )
    inputs: tuple[str, ...] = field(default=(), metadata={"cli": False})
    gatys: GatysConfig = field(default_factory=GatysConfig)  # --iterations, --optimizer, --lr, --init, --seed
    size: int = field(default=512, metadata={"help": "longest side of the content image it optimises at"})
    style_size: int | None = field(
        default=None, metadata={"help": "longest side of the style image", "default_text": "its own size"}
    )
    vgg_weights: str = field(
        default="caffe",
        metadata={"help": "loss network: caffe, imagenet, random, or a VGG-16 state dict file"},
    )
    content_weight: float | None = field(
        default=None,
        metadata={"help": "content loss weight", "default_text": "the loss network's: caffe 1, else 1e5"},
    )
    style_weight: float | None = field(
        default=None,
        metadata={"help": "style loss weight", "default_text": "the loss network's: caffe 5, else 1e10"},
    )
    tv_weight: float | None = field(
        default=None,
        metadata={"help": "total-variation weight", "default_text": "the loss network's: caffe 0.4, else 10"},
    )
    log_every: int = field(default=50, metadata={"help": "log progress every N iterations (0: never)"})
    format: str | None = field(
        default=None,
        metadata={
            "help": "output format: png, jpg or webp",
            "default_text": "--output's extension with one input, else the input's own",
            "choices": ["png", "jpg", "webp"],
        },
    )
    encode_options: images.EncodeOptions = field(default_factory=images.EncodeOptions)  # --quality
    # --max-pixels (each image's side is --size or --style-size)
    decode_options: images.DecodeOptions = field(
        default_factory=images.DecodeOptions, metadata={"exclude": ("max_side",)}
    )
    # --device: VGG-16 runs in fp32, one image at a time
    run_options: RunOptions = field(
        default_factory=RunOptions, metadata={"exclude": ("precision", "batch_size", "compile")}
    )
    storage_options: storage.StorageOptions = field(default_factory=storage.StorageOptions)

    def __post_init__(self) -> None:
        if not self.style:
            raise ConfigError("--style is required: the style image")
        if not self.output:
            raise ConfigError("--output is required: a file for one content image, a folder for several")
        if not self.inputs:
            raise ConfigError("give at least one content image")
        if self.size < MIN_SIDE:
            raise ConfigError(f"--size must be >= {MIN_SIDE} (got {self.size})")
        if self.style_size is not None and self.style_size < MIN_SIDE:
            raise ConfigError(f"--style-size must be >= {MIN_SIDE} (got {self.style_size})")
        for name in ("content_weight", "style_weight", "tv_weight"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"--{name.replace('_', '-')} must be a finite number >= 0 (got {value})")
        if self.log_every < 0:
            raise ConfigError(f"--log-every must be >= 0 (got {self.log_every})")
        reads = [locations.Place("CONTENT", s) for s in self.inputs] + [
            locations.Place("--style", self.style)
        ]
        if self.vgg_weights not in ("caffe", "imagenet", "random"):  # a weights file, maybe caffe:PATH
            weights = self.vgg_weights
            path = weights.split(":", 1)[1] if weights.startswith(("caffe:", "torchvision:")) else weights
            reads.append(locations.Place("--vgg-weights", path))
        writes = [locations.Place("--output", self.output_for(s)) for s in self.inputs]
        locations.refuse_overlaps(reads, writes)  # before any read

    @property
    def into_folder(self) -> bool:
        """Results go into --output as a folder (several inputs, or --output spelled as one)."""
        return len(self.inputs) > 1 or locations.is_folder(self.output)

    def output_for(self, source: str) -> str:
        if not self.into_folder:
            return self.output
        fmt = self.format or images.format_of(source)
        stem = os.path.splitext(os.path.basename(source.rstrip("/")))[0]
        return storage.join(self.output, stem + images.extension(fmt))


def _decode(
    location: str, side: int | None, opts: storage.StorageOptions, decode: images.DecodeOptions
) -> np.ndarray:
    """Read and decode an image, scaled so its longest side is `side` (None: as it is)."""
    data = storage.read_bytes(location, opts)  # its errors name the location
    try:
        pixels = images.decode(data, dataclasses.replace(decode, max_side=side))
    except images.ImageError as e:
        raise images.ImageError(f"{location}: {e}") from None
    if side is not None and max(pixels.shape[:2]) != side:
        pixels = images.resize_longest(pixels, side)
    if min(pixels.shape[:2]) < MIN_SIDE:
        h, w = pixels.shape[:2]
        raise StylekitError(f"{location}: {w}x{h} is too small for VGG-16: both sides must be >= {MIN_SIDE}")
    return pixels


def _write(target: str, data: bytes, opts: storage.StorageOptions) -> None:
    try:
        storage.write_bytes(target, data, opts)
    except OSError as e:
        raise StylekitError(f"cannot write {target}: {e.strerror or e}") from None


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


def _progress(total: int, every: int) -> Callable[[IterationRecord], None]:
    """A progress logger: iteration/total, rate, each loss term and ETA every `every` iterations
    and at the last one."""

    def on_iteration(r: IterationRecord) -> None:
        if not every or (r.iteration % every and r.iteration != total):
            return
        rate = r.iteration / r.elapsed if r.elapsed > 0 else float("inf")
        eta = (total - r.iteration) / rate if rate > 0 else 0.0
        log.info(
            "iteration %d/%d  %.2f it/s  loss %.4g (content %.4g, style %.4g, tv %.4g)  ETA %s",
            r.iteration,
            total,
            rate,
            r.total,
            r.content,
            r.style,
            r.tv,
            _duration(eta),
        )

    return on_iteration


def optimize_files(config: OptimizeConfig) -> None:
    """Optimise each content image against the style; write each result to its output. Every
    input is read and every output checked before the first (long) optimisation starts."""
    opts = config.storage_options
    style = _decode(config.style, config.style_size, opts, config.decode_options)
    contents = [_decode(s, config.size, opts, config.decode_options) for s in config.inputs]
    outputs = [config.output_for(s) for s in config.inputs]
    if len(set(outputs)) != len(outputs):
        raise ConfigError("two content images share a file name stem; optimise them into separate folders")
    for target in outputs:
        storage.check_writable(target, opts, folder=False)

    device = InferenceOptions.of(config.run_options).resolve_device()
    defaults = default_loss_weights(config.vgg_weights)
    weights = (
        defaults.content if config.content_weight is None else config.content_weight,
        defaults.style if config.style_weight is None else config.style_weight,
        defaults.tv if config.tv_weight is None else config.tv_weight,
    )
    vgg = load_vgg(config.vgg_weights, seed=config.gatys.seed).to(device)
    loss_fn = PerceptualLoss(vgg, images.to_tensor(style).to(device), *weights)
    gatys = config.gatys
    log.info(
        "style %s (%dx%d); weights content %g, style %g, tv %g; %d %s iterations on %s",
        config.style,
        style.shape[1],
        style.shape[0],
        *weights,
        gatys.iterations,
        "L-BFGS" if gatys.optimizer == "lbfgs" else f"Adam (lr {gatys.lr:g})",
        device,
    )
    for source, pixels, target in zip(config.inputs, contents, outputs, strict=True):
        h, w = pixels.shape[:2]
        log.info("optimising %s at %dx%d from %s", source, w, h, gatys.init)
        content = images.to_tensor(pixels).to(device)
        result = optimize_image(content, loss_fn, gatys, _progress(gatys.iterations, config.log_every))
        with torch.no_grad():
            out = images.to_pixels(result.image[0].round())
        fmt = config.format or images.format_of(target)
        _write(target, images.encode(out, fmt, config.encode_options.quality), opts)
        f = result.final
        log.info(
            "%s -> %s in %s: loss %.4g (content %.4g, style %.4g, tv %.4g)",
            source,
            target,
            _duration(f.elapsed),
            f.total,
            f.content,
            f.style,
            f.tv,
        )


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "optimize",
        help="style images by optimising the pixels themselves (Gatys et al.; slow, no model)",
        description=(
            "The optimisation baseline (Gatys et al. 2016): optimise each content image against "
            "the perceptual loss of the style. One content image: --output is the file to write. "
            "Several: --output is a folder, each result named after its input."
        ),
    )
    add_config_arguments(p, OptimizeConfig)
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="CONTENT",
        help="content images (paths or fsspec URLs: s3://, gs://, az://, ...)",
    )
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    config = config_from_args(OptimizeConfig, args, inputs=tuple(args.inputs))
    optimize_files(config)
    print(shown(config.output))
    return 0
