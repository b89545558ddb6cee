"""Training TransformerNet against the perceptual loss, or (task "sr") a super-resolution
network against the feature or per-pixel loss: the run's state and its loss (one step is
train/step.py, the loop of steps train/loop.py).

Nothing here knows about Ray: `train_job` runs this on every Ray Train worker. The config is
in train/config.py, the checkpoint format in train/checkpoint.py, a model file's metadata in
train/metadata.py.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np
import torch

from stylekit.errors import StylekitError
from stylekit.files import images, storage
from stylekit.nn.loss import PerceptualLoss
from stylekit.nn.model import TransformerNet
from stylekit.nn.sr import SRNet
from stylekit.nn.srloss import SRLoss
from stylekit.nn.vgg import load_vgg
from stylekit.train import previews
from stylekit.train.config import PREVIEW_IMAGE, PREVIEW_SIDE, TrainConfig

log = logging.getLogger(__name__)


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """--precision auto: bf16 autocast on CUDA, fp32 on the CPU. On a CPU with bf16 in
    hardware (AMX) `--precision bf16` makes the step 2x the reference, but the network it
    trains paints with more fine grain (held-out total variation +29% after 40 steps at 128 px,
    benchmarks/RESULTS.md), so the CPU default stays fp32."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        log.warning(
            "--precision bf16: this CPU has no AMX or AVX512-BF16, so bf16 is emulated and slower than fp32"
        )
    return torch.bfloat16 if precision == "bf16" else torch.float32


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str] | None:
    """The CPU's feature flags (Linux's /proc/cpuinfo); None where they cannot be read."""
    try:
        with open(cpuinfo) as f:
            line = next((line for line in f if line.startswith("flags")), None)
    except OSError:
        return None
    return None if line is None else frozenset(line.split(":", 1)[1].split())


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bf16 in hardware (the amx_bf16 or avx512_bf16 flag); False
    where the flags cannot be read (not Linux)."""
    flags = cpu_flags(cpuinfo) or frozenset()
    return "amx_bf16" in flags or "avx512_bf16" in flags


def load_style_tensor(config: TrainConfig) -> torch.Tensor:
    """The style image as (1, 3, H, W) float in [0, 255]."""
    try:
        pixels = images.decode(storage.read_bytes(config.style, config.storage_options))
    except images.ImageError as e:
        raise StylekitError(f"--style {config.style}: {e}") from None
    if config.style_size:
        pixels = images.resize_longest(pixels, config.style_size)
    return images.to_tensor(pixels)


@dataclass
class TrainState:
    """The mutable part of a run: network, optimizer and where we are."""

    model: TransformerNet | SRNet
    optimizer: torch.optim.Adam
    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    # [first step, workers] for each worker-group size the run has had (elastic runs vary).
    worker_counts: list[list[int]] = dataclasses.field(default_factory=list)


def new_state(config: TrainConfig, device: torch.device) -> TrainState:
    torch.manual_seed(config.seed)
    model: TransformerNet | SRNet = SRNet(config.factor) if config.task == "sr" else TransformerNet()
    if config.init_from:
        from stylekit.nn.modelio import load_model

        start = load_model(config.init_from, config.storage_options).model
        if type(start) is not type(model) or getattr(start, "scale", 1) != getattr(model, "scale", 1):
            raise StylekitError(f"--init-from {config.init_from} is not a model of this task and factor")
        model.load_state_dict(start.state_dict())
    model = model.to(device)
    return TrainState(model, torch.optim.Adam(model.parameters(), lr=config.lr))


def build_loss(config: TrainConfig, device: torch.device) -> PerceptualLoss | SRLoss:
    if config.task == "sr":
        # The per-pixel loss needs no loss network: no VGG is loaded for it.
        vgg = (
            load_vgg(config.vgg_weights, seed=config.seed, options=config.storage_options)
            if config.sr_loss == "feature"
            else None
        )
        loss = SRLoss(config.sr_loss, vgg, float(config.content_weight), float(config.tv_weight))  # type: ignore[arg-type]
        return loss.to(device)
    vgg = load_vgg(config.vgg_weights, seed=config.seed, options=config.storage_options).to(device)
    style = load_style_tensor(config).to(device)
    return PerceptualLoss(vgg, style, config.content_weight, config.style_weight, config.tv_weight).to(device)


def style_weight_at(config: TrainConfig, step: int) -> float:
    """The style weight for the step after `step` steps: 0 during the content warm-up."""
    return 0.0 if step < config.content_warmup else float(config.style_weight)  # type: ignore[arg-type]


def preview_pixels(model: torch.nn.Module) -> np.ndarray:
    """The current stylization of the fixed preview photo, (H, W, 3) uint8."""
    pixels = images.resize_longest(images.load_image(PREVIEW_IMAGE), PREVIEW_SIDE)
    pixels = previews.network_input(model, pixels)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.no_grad():
        y = model(images.to_tensor(pixels).to(device))
    model.train(was_training)
    return images.to_pixels(y[0])
