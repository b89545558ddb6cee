"""The optimizer of a run: Adam, with the styles of a multi-style network kept apart.

A network of several paintings trains one painting a step (train/paintings.py): the gamma and
beta rows of the other paintings get a zero gradient that step. Plain Adam would still move
them along their stale momentum, and decay their second moments, on every step that is not
theirs; `StyleAdam` leaves a row that had no gradient as it was, parameters and moments alike,
so each painting's gamma and beta take exactly the Adam steps of its own training steps (a lazy
Adam, as TensorFlow's for sparse rows). Measured (benchmarks/bench_multistyle.py, 4 paintings,
4 x 300 steps at 128 px): held-out total loss against single-style runs 1.29-1.46x with plain
Adam, 0.72-1.14x with this. Every other parameter, and a one-style network's, is plain Adam's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

MOMENTS = ("exp_avg", "exp_avg_sq")


class StyleAdam(torch.optim.Adam):
    """Adam over `params`, lazy on the rows of `style_params` ((N, C) with N > 1, one row a
    style) that got no gradient this step."""

    def __init__(
        self, params: Iterable[torch.nn.Parameter], lr: float, style_params: Sequence[torch.nn.Parameter]
    ):
        super().__init__(params, lr=lr)
        self.style_params = [p for p in style_params if p.dim() == 2 and p.shape[0] > 1]

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        held = []
        for p in self.style_params:
            if p.grad is None:
                continue
            idle = (p.grad == 0).all(dim=1)  # (N,): the styles this step did not train
            if idle.any():
                state = self.state.get(p, {})
                moments = {k: state[k][idle].clone() for k in MOMENTS if k in state}
                held.append((p, idle, p[idle].clone(), moments))
        loss = super().step(closure)
        for p, idle, rows, moments in held:
            p[idle] = rows
            for k, value in moments.items():
                self.state[p][k][idle] = value
        return loss
