"""Run a TransformerNet over images: the one code path of `python -m stylekit stylize` and of
the bulk job's actors, so both give the same pixels.

Images are grouped by size, so a batch never pads a small photo up to a large one; each group
runs in chunks of at most `max_batch`. Pixels travel to the device as uint8 (a quarter of the
bytes of float32) and are converted there.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from stylekit.errors import ConfigError
from stylekit.model import TransformerNet

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class InferenceOptions:
    """How to run the network. "auto" picks the fastest path measured for the device."""

    device: str = "auto"
    precision: str = "auto"
    channels_last: bool | None = None  # None: on for CUDA
    compile: bool = False
    max_batch: int = 8

    def __post_init__(self) -> None:
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise ConfigError(f"--device must be one of {', '.join(DEVICES)} (got {self.device!r})")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)} (got {self.precision!r})")
        if self.max_batch < 1:
            raise ConfigError(f"--batch-size must be >= 1 (got {self.max_batch})")

    def resolve_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError("--device cuda asked for, but no CUDA GPU is visible")
        return torch.device(self.device)

    def resolve_dtype(self, device: torch.device) -> torch.dtype:
        precision = self.precision
        if precision == "auto":
            precision = "bf16" if device.type == "cuda" else "fp32"
        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


class Stylizer:
    """Holds one model on one device and stylizes lists of (H, W, 3) uint8 images."""

    def __init__(self, model: TransformerNet, options: InferenceOptions = InferenceOptions()):
        self.options = options
        self.device = options.resolve_device()
        self.dtype = options.resolve_dtype(self.device)
        channels_last = options.channels_last
        if channels_last is None:
            channels_last = self.device.type == "cuda"
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        model = model.eval().to(self.device, memory_format=self.memory_format)
        for p in model.parameters():
            p.requires_grad_(False)
        self.model: torch.nn.Module = model
        if options.compile:
            self.model = _try_compile(model)
        log.info(
            "stylizer on %s, %s, %s%s",
            self.device,
            str(self.dtype).removeprefix("torch."),
            "channels_last" if channels_last else "NCHW",
            ", compiled" if options.compile else "",
        )

    @torch.inference_mode()
    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) uint8 (any device) -> (B, H, W, 3) uint8 on the CPU."""
        x = batch.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
        x = x.contiguous(memory_format=self.memory_format)
        autocast = self.dtype != torch.float32
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=autocast):
            y = self.model(x)
        # Clamp then truncate to uint8, exactly as the reference example saves its images.
        y = y.float().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
        return y.cpu()

    def stylize(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Stylize each (H, W, 3) uint8 image; the result list is in input order."""
        out: list[np.ndarray | None] = [None] * len(images)
        for indices in group_by_size(images, self.options.max_batch):
            stacked = torch.from_numpy(np.stack([images[i] for i in indices]))
            if self.device.type == "cuda":
                stacked = stacked.pin_memory()
            result = self.forward(stacked).numpy()
            for j, i in enumerate(indices):
                out[i] = result[j]
        return out  # type: ignore[return-value]


def group_by_size(images: Sequence[np.ndarray], max_batch: int) -> list[list[int]]:
    """Indices of images grouped by (H, W), each group split into chunks of <= max_batch."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, img in enumerate(images):
        groups[img.shape[:2]].append(i)
    return [idx[k : k + max_batch] for idx in groups.values() for k in range(0, len(idx), max_batch)]


def _try_compile(model: torch.nn.Module) -> torch.nn.Module:
    try:
        return torch.compile(model, dynamic=True)  # type: ignore[return-value]
    except Exception as e:
        log.warning("torch.compile unavailable (%s); running eagerly", e)
        return model
