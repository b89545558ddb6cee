"""The training loop, free of Ray: epochs of batches, one optimizer step each (train/step.py),
the style weight's schedule, the painting each step trains (train/paintings.py), and where
the checkpoints fall.

Ray Train's workers (train/ray_job.py) run it over their shard of the streaming dataset; the GPU
run (tools/gpu_run/gpu_run.py) over photos held on the device (train/held.py), on a machine
without Ray. What a run does around its steps (progress lines, metrics, checkpoints, an early
stop) is the caller's, through `LoopHooks`.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch

from stylekit.nn.loss import LossTerms, PerceptualLoss
from stylekit.nn.srloss import SRLoss
from stylekit.train.config import TrainConfig
from stylekit.train.paintings import painting_for_step
from stylekit.train.state import TrainState
from stylekit.train.step import train_step

RECENT_STEPS = 50  # the final losses recorded in a model are the mean over this many steps
TERMS = ("loss", "content", "style", "tv")

# The batches of one epoch, given its number: {"image": (B, S, S, 3) uint8} on the device, and
# for super-resolution "lowres", the network's (B, S/f, S/f, 3) uint8 input.
EpochBatches = Callable[[int], Iterable[Mapping[str, torch.Tensor]]]


@dataclass(frozen=True)
class Schedule:
    """How long a run is: `total_steps` optimizer steps in all, `steps_per_epoch` to an epoch
    (an epoch's batches beyond that are not used)."""

    total_steps: int
    steps_per_epoch: int

    def __post_init__(self) -> None:
        for name in ("total_steps", "steps_per_epoch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 (got {getattr(self, name)})")


class LoopHooks:
    """What a run does around its steps; here, nothing. Subclass and override."""

    def after_step(self, state: TrainState, terms: LossTerms) -> None:
        """After every optimizer step (`state.step` counts it already)."""

    def checkpoint(self, state: TrainState) -> None:
        """Every `checkpoint_every` steps, except at the last step: the run's end is the
        caller's to save, however it ended."""

    def stop(self) -> bool:
        """Asked before each step: True ends the run there (a deadline, a signal)."""
        return False


class RecentLosses:
    """The loss terms of the last `steps` steps, kept where they were computed (adding one
    waits for nothing on a GPU); `mean()` reads them back at once."""

    def __init__(self, steps: int = RECENT_STEPS):
        if steps < 1:
            raise ValueError(f"steps must be >= 1 (got {steps})")
        self.rows: collections.deque[torch.Tensor] = collections.deque(maxlen=steps)

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, terms: LossTerms) -> None:
        parts = (terms.total, terms.content, terms.style, terms.tv)
        self.rows.append(torch.stack([t.detach().float() for t in parts]))

    def mean(self) -> dict[str, float] | None:
        """Per-term mean of the recent steps (one batch's loss is noisy), None before any.
        Summed as Python floats in step order: `LossTerms.as_floats` of each step, averaged."""
        if not self.rows:
            return None
        rows = torch.stack(list(self.rows)).tolist()
        return {term: sum(r[i] for r in rows) / len(rows) for i, term in enumerate(TERMS)}


def style_weight_at(config: TrainConfig, step: int) -> float:
    """The style weight for the step after `step` steps: 0 during the content warm-up."""
    return 0.0 if step < config.content_warmup else float(config.style_weight)  # type: ignore[arg-type]


def train_loop(
    config: TrainConfig,
    state: TrainState,
    model: torch.nn.Module,
    loss_fn: PerceptualLoss | SRLoss,
    dtype: torch.dtype,
    batches: EpochBatches,
    schedule: Schedule,
    hooks: LoopHooks | None = None,
) -> bool:
    """Train from `state` (a resumed run goes on mid-epoch) until `schedule.total_steps` steps
    or `config.epochs` epochs, whichever ends first; `model` is `state.model` or its wrapper
    (Ray Train's DistributedDataParallel). Returns False when `hooks.stop()` ended it early."""
    hooks = hooks or LoopHooks()
    total = schedule.total_steps
    paintings = getattr(loss_fn, "paintings", 1)
    while state.step < total and state.epoch < config.epochs:  # type: ignore[operator]
        budget = schedule.steps_per_epoch - state.step_in_epoch
        for batch in batches(state.epoch):
            if budget <= 0:
                break
            if hooks.stop():
                return False
            if config.task == "style":
                loss_fn.style_weight = style_weight_at(config, state.step)
            painting = painting_for_step(state.step, paintings, config.seed) if paintings > 1 else None
            # Super-resolution: "lowres" is the input and "image" the target.
            terms = train_step(
                model, loss_fn, state.optimizer, batch["image"], dtype, batch.get("lowres"), painting
            )
            state.step += 1
            state.step_in_epoch += 1
            budget -= 1
            hooks.after_step(state, terms)
            if state.step >= total:
                break
            if state.step % config.checkpoint_every == 0:
                hooks.checkpoint(state)
        if state.step >= total and budget > 0:
            break  # stopped by the step count inside the epoch: the epoch is not over
        state.epoch += 1
        state.step_in_epoch = 0
    return True
