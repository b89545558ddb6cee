"""The loss a run trains against, built from its config: the perceptual loss with each
painting's Grams, or (task "sr") the feature or per-pixel super-resolution loss."""

from __future__ import annotations

import torch

from stylekit.nn.loss import PerceptualLoss
from stylekit.nn.srloss import SRLoss
from stylekit.nn.vgg import load_vgg
from stylekit.train.config import TrainConfig
from stylekit.train.paintings import list_paintings, read_painting


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
    paintings = [
        read_painting(p, config.style_size, config.storage_options)[0].to(device)
        for p in list_paintings(config.style, config.storage_options)
    ]
    return PerceptualLoss(vgg, paintings, config.content_weight, config.style_weight, config.tv_weight).to(
        device
    )
