"""The run's mutable state: the network being trained, its optimizer and where the run is."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from stylekit.errors import StylekitError
from stylekit.nn.model import TransformerNet
from stylekit.nn.sr import SRNet
from stylekit.train.config import TrainConfig


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
    """A run's start: the network (seeded draws, or --init-from's weights) on `device`, and
    its Adam."""
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
