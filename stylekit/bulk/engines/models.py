"""The bulk job's models in one process (an actor, or the job itself with --engine local): the
model and the --then model loaded once, stylizing lists of images, one failure per image.

The model gives one network per --style selection (infer/selection.choose, as `python -m
stylekit stylize` runs them: the same pixels), each in its slot, in --style's order."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where the models live, never by codec tasks
    from stylekit.infer.inference import InferenceOptions
    from stylekit.infer.options import StyleChoice
    from stylekit.infer.selection import Chosen


def chosen_networks(data: bytes, name: str, choice: StyleChoice) -> list[Chosen]:
    """The networks of the model file's bytes that `choice` asks for, in its order; a style the
    model does not hold, or a multi-style model with none, is the command's one-line error."""
    from stylekit.infer.selection import choose
    from stylekit.nn.modelio import load_model_bytes

    return choose(load_model_bytes(data, name=name), choice, name)


class BulkModels:
    """`models`: the model file's bytes (and the --then model's); `choice`: --style; `threads`:
    torch CPU threads (None: leave them); `cpus`: this process's share of the machine, for the
    default memory budget (--max-memory unset: that share of what the machine has free)."""

    def __init__(
        self,
        models: Sequence[bytes],
        name: str,
        choice: StyleChoice,
        inference: InferenceOptions,
        threads: int | None,
        cpus: float,
    ):
        import torch

        from stylekit.infer import memory
        from stylekit.infer.inference import Stylizer
        from stylekit.nn.modelio import load_model_bytes

        if threads:
            torch.set_num_threads(threads)
        if inference.max_memory is None:  # this process's CPU share of what the machine has free
            free = memory.available_bytes()
            if free is not None:
                share = min(1.0, cpus / max(1, len(os.sched_getaffinity(0))))
                budget = memory.resident_bytes() + int(free * memory.DEFAULT_SHARE * share)
                inference = dataclasses.replace(inference, max_memory=budget)
        self.stylizers = [Stylizer(c.model, inference) for c in chosen_networks(models[0], name, choice)]
        # --then: a super-resolution model upscales each result (the controls are the first's).
        plain = dataclasses.replace(inference, strength=1.0, preserve_color=False, style_scale=1.0)
        self.then = Stylizer(load_model_bytes(models[1]).model, plain) if len(models) > 1 else None

    def stylize(self, pixels: list[np.ndarray], slot: int = 0) -> list[np.ndarray | Exception]:
        """With the network of selection `slot`, all at once; if that fails (say, out of GPU
        memory), one by one, so only the images that fail alone are marked failed."""
        if not pixels:
            return []
        try:
            out = self.stylizers[slot].stylize(pixels)
            return list(self.then.stylize(out) if self.then is not None else out)
        except Exception as e:
            if len(pixels) == 1:
                return [e]
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return [self.stylize([p], slot)[0] for p in pixels]
