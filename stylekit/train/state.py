"""The run's mutable state: the network being trained, its optimizer and where the run is."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from stylekit.errors import StylekitError
from stylekit.nn.model import TransformerNet
from stylekit.nn.sr import SRNet
from stylekit.nn.styles import freeze_convolutions, frozen_start, is_norm_key
from stylekit.train.config import TrainConfig
from stylekit.train.optim import StyleAdam


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


def new_state(config: TrainConfig, device: torch.device, warm_start: bool = True) -> TrainState:
    """A run's start on `device`: the network and its Adam (train/optim.py), over the
    parameters it trains.

    Style: a network of one style per painting (config.style, folders already listed), from
    seeded draws or, with --init-from (`warm_start`; off where a checkpoint is loaded next),
    that model's weights: slot by slot from a model of as many styles, every slot from a
    one-style model. With --add-style, the network of the new paintings only, on the model's
    frozen convolutions (nn/styles.frozen_start; the driver joins it to the model at the end).
    """
    torch.manual_seed(config.seed)
    model: TransformerNet | SRNet = (
        SRNet(config.factor) if config.task == "sr" else TransformerNet(len(config.style))
    )
    if config.init_from and warm_start:
        from stylekit.nn.modelio import load_model

        start = load_model(config.init_from, config.storage_options).model
        if type(start) is not type(model) or getattr(start, "scale", 1) != getattr(model, "scale", 1):
            raise StylekitError(f"--init-from {config.init_from} is not a model of this task and factor")
        if isinstance(start, TransformerNet):
            model = _warm_start(config, start, model)  # type: ignore[arg-type]
        else:
            model.load_state_dict(start.state_dict())
    elif config.add_style:
        freeze_convolutions(model)  # the shape a checkpoint of an --add-style run is loaded into
    model = model.to(device).train()
    trained = [p for p in model.parameters() if p.requires_grad]
    styles = [
        p for n, p in model.named_parameters() if isinstance(model, TransformerNet) and is_norm_key(model, n)
    ]
    return TrainState(model, StyleAdam(trained, lr=config.trained_lr, style_params=styles))


def _warm_start(config: TrainConfig, start: TransformerNet, fresh: TransformerNet) -> TransformerNet:
    if config.add_style:
        return frozen_start(start, fresh.styles)
    if start.styles == 1 and fresh.styles > 1:
        return frozen_start(start, fresh.styles).requires_grad_(True)
    if start.styles != fresh.styles:
        raise StylekitError(
            f"--init-from {config.init_from} holds {start.styles} styles and --style names "
            f"{fresh.styles} paintings: give as many paintings (slot by slot), or add them to it "
            "with --add-style"
        )
    fresh.load_state_dict(start.state_dict())
    return fresh
