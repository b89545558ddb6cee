"""The optimisation baseline (Gatys et al. 2016): no feed-forward network; the image itself is
the variable, optimised against the same perceptual loss the fast networks are trained on.

    y* = argmin_y  w_c * l_feat(y, y_c) + w_s * sum_j l_style(y, y_s) + w_tv * l_tv(y)

starting from the content image (or white noise), with L-BFGS (as Gatys et al. and Johnson's
reference implementation) or Adam. Every iteration costs a forward and a backward pass through
VGG-16, which is what makes this baseline slow and the feed-forward networks fast.

Unlike the references, which optimise without bounds and clamp only the saved image, y is
projected back onto the valid pixel range [0, 255] after every step, so the loss that is
minimised (and traced) is the loss of an image that can be saved. Unbounded, L-BFGS drifts to
pixels of about -115..330 and clamping then raises the loss by 20-70%; projected, the saved
image's loss was 20% lower after 80 iterations (chelsea.jpg at 128 px, Starry Night, Caffe VGG).
For L-BFGS the step it remembers is set to the projected step actually taken: its curvature
pairs then stay true secant pairs; otherwise they drift apart from the real moves and the loss
blows up by 1000x near convergence (seen at 32 px after ~250 iterations).

Pixels are float RGB in [0, 255], shaped (1, 3, H, W), on the device of the loss network.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from stylekit.errors import ConfigError, StylekitError
from stylekit.nn.loss import LossTerms

OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "noise")

# The loss function: (output y (1,3,H,W), content y_c (1,3,H,W)) -> its weighted terms;
# a `PerceptualLoss` in practice.
LossFn = Callable[[torch.Tensor, torch.Tensor], LossTerms]


@dataclass(frozen=True)
class GatysConfig:
    """How to optimise: validated on creation."""

    iterations: int = field(default=500, metadata={"help": "optimisation iterations per image"})
    optimizer: str = field(
        default="lbfgs", metadata={"help": "lbfgs (the paper's) or adam", "choices": list(OPTIMIZERS)}
    )
    # L-BFGS always takes lr 1
    lr: float = field(default=10.0, metadata={"help": "Adam step size in 0-255 pixel units (Adam only)"})
    init: str = field(
        default="content",
        metadata={"help": "start from the content image or white noise", "choices": list(INITS)},
    )
    seed: int = field(default=0, metadata={"help": "seed for noise init and random VGG weights"})

    def __post_init__(self) -> None:
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, int) or self.iterations < 1:
            raise ConfigError(f"iterations must be a whole number >= 1 (got {self.iterations!r})")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)} (got {self.optimizer!r})")
        if not isinstance(self.lr, int | float) or not math.isfinite(self.lr) or self.lr <= 0:
            raise ConfigError(f"lr must be a finite number > 0 (got {self.lr!r})")
        if self.init not in INITS:
            raise ConfigError(f"init must be one of {', '.join(INITS)} (got {self.init!r})")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"seed must be an integer (got {self.seed!r})")


@dataclass(frozen=True)
class IterationRecord:
    """One iteration of the trace: the weighted loss terms evaluated in it (at the image the
    iteration started from; iteration 1's is the initial image's loss) and the seconds elapsed
    from the start of the optimisation to the end of the iteration."""

    iteration: int  # 1-based
    elapsed: float
    content: float
    style: float
    tv: float
    total: float


@dataclass(frozen=True)
class GatysResult:
    image: torch.Tensor  # (1,3,H,W) float in [0, 255], detached
    trace: tuple[IterationRecord, ...]  # one record per iteration
    final: IterationRecord  # the loss of `image` itself (after the last step)


def initial_image(content: torch.Tensor, config: GatysConfig) -> torch.Tensor:
    """(1,3,H,W) content -> a new (1,3,H,W) leaf tensor with requires_grad: a copy of the
    content, or seeded uniform white noise in [0, 255] of the same shape."""
    if config.init == "content":
        y = content.detach().clone(memory_format=torch.contiguous_format)
    else:
        gen = torch.Generator().manual_seed(config.seed)
        y = torch.rand(content.shape, generator=gen).mul_(255.0).to(content.device, content.dtype)
    return y.requires_grad_(True)


def _record(iteration: int, start: float, terms: LossTerms) -> IterationRecord:
    values = terms.as_floats()
    if not all(math.isfinite(v) for v in values.values()):
        shown = ", ".join(f"{k} {v:.4g}" for k, v in values.items())
        raise StylekitError(
            f"the loss became non-finite at iteration {iteration} ({shown}); lower the learning "
            "rate (--lr) or the loss weights"
        )
    return IterationRecord(
        iteration=iteration,
        elapsed=time.perf_counter() - start,
        content=values["content"],
        style=values["style"],
        tv=values["tv"],
        total=values["loss"],
    )


def _project(y: torch.Tensor) -> None:
    """Clamp the image variable onto the valid pixels [0, 255], in place."""
    with torch.no_grad():
        y.clamp_(0.0, 255.0)


def _lbfgs_steps(y: torch.Tensor, target: torch.Tensor, loss_fn: LossFn) -> Callable[[], LossTerms]:
    """One projected L-BFGS iteration per call (max_iter=1, no line search, lr 1: the reference
    setup); the curvature history lives in the optimizer's state across calls. Returns the
    terms evaluated at the image the iteration started from."""
    opt = torch.optim.LBFGS([y], lr=1.0, max_iter=1, history_size=100)
    state = opt.state[y]

    def step() -> LossTerms:
        evaluated: list[LossTerms] = []
        before = y.detach().clone()

        def closure() -> torch.Tensor:
            opt.zero_grad(set_to_none=True)
            terms = loss_fn(y, target)
            terms.total.backward()
            evaluated.append(terms)
            return terms.total

        opt.step(closure)
        _project(y)
        if "d" in state:  # the next iteration's secant pair takes s = t * d: the move made
            with torch.no_grad():
                state["d"] = (y - before).reshape(-1).div_(state["t"])
        return evaluated[0]

    return step


def _adam_steps(y: torch.Tensor, target: torch.Tensor, loss_fn: LossFn, lr: float) -> Callable[[], LossTerms]:
    """One projected Adam step per call; returns the terms evaluated before the step."""
    opt = torch.optim.Adam([y], lr=lr)

    def step() -> LossTerms:
        opt.zero_grad(set_to_none=True)
        terms = loss_fn(y, target)
        terms.total.backward()
        opt.step()
        _project(y)
        return terms

    return step


def optimize_image(
    content: torch.Tensor,
    loss_fn: LossFn,
    config: GatysConfig = GatysConfig(),
    on_iteration: Callable[[IterationRecord], None] | None = None,
) -> GatysResult:
    """Optimise an image y (1,3,H,W), initialised from `content` (1,3,H,W, float 0-255) or noise,
    to minimise loss_fn(y, content) over y in [0, 255] for `config.iterations` iterations.
    `content` is not modified. `on_iteration(record)` is called after every iteration."""
    if content.dim() != 4 or content.shape[:2] != (1, 3):
        raise ValueError(f"content must be (1,3,H,W), got {tuple(content.shape)}")
    # The content target y_c: a contiguous copy (L-BFGS flattens views), never with a gradient.
    target = content.detach().clone(memory_format=torch.contiguous_format)
    y = initial_image(target, config)
    if config.optimizer == "lbfgs":
        step = _lbfgs_steps(y, target, loss_fn)
    else:
        step = _adam_steps(y, target, loss_fn, config.lr)

    trace: list[IterationRecord] = []
    start = time.perf_counter()
    for i in range(1, config.iterations + 1):
        record = _record(i, start, step())
        trace.append(record)
        if on_iteration is not None:
            on_iteration(record)

    with torch.no_grad():
        image = y.detach().clone()
        final = _record(config.iterations, start, loss_fn(image, target))
    return GatysResult(image=image, trace=tuple(trace), final=final)
