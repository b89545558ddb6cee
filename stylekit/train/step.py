"""One optimizer step of training, style transfer or super-resolution: the losses of one batch,
their gradients and Adam's update. Free of storage and Ray imports so the training benchmark
(benchmarks/bench_train.py) runs it on a bare GPU machine; the training loop (train/loop.py)
calls it for every step.

What makes it faster than the reference example's step (measured in benchmarks/RESULTS.md):
- the content target goes through VGG only up to relu2_2, without autograd (`PerceptualLoss`),
  where the example runs all of VGG-16 to relu4_3 on it (a third less VGG work per step);
- the style Grams are computed once (`PerceptualLoss.__init__`);
- uint8 pixels are converted on the device in one pass, into the memory format the model's
  weights are in (channels_last models get channels_last inputs, no per-layer conversions);
- on the CPU, the C allocator keeps large blocks for reuse (`fastpath.tune_cpu_allocator`):
  every step allocates the same activations again, and a fresh mmap each time costs page
  faults and zeroing;
- bf16 autocast when asked for (the default on CUDA; emulated and slow on CPUs without AMX).
"""

from __future__ import annotations

import torch

from stylekit.infer.fastpath import tune_cpu_allocator
from stylekit.nn.loss import LossTerms, PerceptualLoss
from stylekit.nn.srloss import SRLoss


def model_memory_format(model: torch.nn.Module) -> torch.memory_format:
    """channels_last if the model's first 4-D weight is stored that way, else NCHW."""
    for p in model.parameters():
        if p.dim() == 4:
            cl = p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
            return torch.channels_last if cl else torch.contiguous_format
    return torch.contiguous_format


def to_channels_last(model: torch.nn.Module, loss_fn: PerceptualLoss) -> None:
    """Store the network's and VGG's conv weights channels_last (before any DDP wrapping or
    optimizer creation); `train_step` then feeds channels_last inputs."""
    model.to(memory_format=torch.channels_last)
    loss_fn.to(memory_format=torch.channels_last)


def train_step(
    model: torch.nn.Module,
    loss_fn: PerceptualLoss | SRLoss,
    optimizer: torch.optim.Optimizer,
    batch: torch.Tensor,
    dtype: torch.dtype = torch.float32,
    lowres: torch.Tensor | None = None,
    painting: int | None = None,
) -> LossTerms:
    """One Adam step on a (B, H, W, 3) uint8 `batch` already on the device: the target.

    Style transfer: the batch is also the network's input (its photos are the content targets
    of the perceptual loss). Super-resolution: `lowres`, (B, H/f, W/f, 3) uint8 on the device,
    is the input and `batch` the originals it should become; `loss_fn` is an `SRLoss`
    (feature or per-pixel). One step for both: a style step is an SR step whose input is the
    target itself, converted once. `painting`: for a network of several styles, the slot this
    step trains and the loss's painting of the same number (None: a one-style network).
    """
    inputs = batch if lowres is None else lowres
    if inputs.device.type == "cpu":
        tune_cpu_allocator()  # once per process
    fmt = model_memory_format(model)
    x = _to_float_nchw(inputs, fmt)
    target = x if lowres is None else _to_float_nchw(batch, fmt)
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(x.device.type, dtype=dtype, enabled=dtype != torch.float32):
        if painting is None:
            terms = loss_fn(model(x), target)
        else:
            terms = loss_fn(model(x, painting), target, painting)  # type: ignore[call-arg]
    terms.total.backward()
    optimizer.step()
    return LossTerms(terms.content.detach(), terms.style.detach(), terms.tv.detach(), terms.painting)


def _to_float_nchw(batch: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32 in [0, 255], in one conversion pass."""
    b, h, w, c = batch.shape
    x = torch.empty((b, c, h, w), dtype=torch.float32, device=batch.device, memory_format=memory_format)
    return x.copy_(batch.permute(0, 3, 1, 2))
