"""The bulk job's models in one process (an actor, or the job itself with --engine local): the
model and the --then model loaded once, stylizing lists of images, one failure per image."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where the models live, never by codec tasks
    from stylekit.infer.inference import InferenceOptions


class BulkModels:
    """`models`: the model file's bytes (and the --then model's); `threads`: torch CPU threads
    (None: leave them); `cpus`: this process's share of the machine, for the default memory
    budget (--max-memory unset: that share of what the machine has free)."""

    def __init__(
        self,
        models: Sequence[bytes],
        name: str,
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
        self.stylizer = Stylizer(load_model_bytes(models[0], name=name).model, inference)
        # --then: a super-resolution model upscales each result (the controls are the first's).
        plain = dataclasses.replace(inference, strength=1.0, preserve_color=False, style_scale=1.0)
        self.then = Stylizer(load_model_bytes(models[1]).model, plain) if len(models) > 1 else None

    def stylize(self, pixels: list[np.ndarray]) -> list[np.ndarray | Exception]:
        """All at once; if that fails (say, out of GPU memory), one by one, so only the images
        that fail alone are marked failed."""
        if not pixels:
            return []
        try:
            out = self.stylizer.stylize(pixels)
            return list(self.then.stylize(out) if self.then is not None else out)
        except Exception as e:
            if len(pixels) == 1:
                return [e]
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return [self.stylize([p])[0] for p in pixels]
