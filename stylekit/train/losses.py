"""The loss a run trains against, built from its config: the perceptual loss with the style
image's Grams, or (task "sr") the feature or per-pixel super-resolution loss."""

from __future__ import annotations

import torch

from stylekit.errors import StylekitError
from stylekit.files import images, storage
from stylekit.nn.loss import PerceptualLoss
from stylekit.nn.srloss import SRLoss
from stylekit.nn.vgg import load_vgg
from stylekit.train.config import TrainConfig


def load_style_tensor(config: TrainConfig) -> torch.Tensor:
    """The style image as (1, 3, H, W) float in [0, 255]."""
    try:
        pixels = images.decode(storage.read_bytes(config.style, config.storage_options))
    except images.ImageError as e:
        raise StylekitError(f"--style {config.style}: {e}") from None
    if config.style_size:
        pixels = images.resize_longest(pixels, config.style_size)
    return images.to_tensor(pixels)


def build_loss(config: TrainConfig, device: torch.device) -> PerceptualLoss | SRLoss:
    """The run's loss on `device`, its loss network (VGG-16) loaded as --vgg-weights says."""
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
