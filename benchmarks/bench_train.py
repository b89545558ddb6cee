"""Training throughput: images/s of one full step (network forward and backward, VGG-16 forward
and backward, Adam) at IMAGE_SIZE px, for each batch size, reference and stylekit side by side.

    python benchmarks/bench_train.py                      # GPU: batch 4..64 at 256 px
    python benchmarks/bench_train.py --batch-sizes 4 --image-size 128 --repeat 3   # CPU

Reference: the pytorch/examples step (tests/reference.py: ReferenceTrainer), fp32, eager,
NCHW. stylekit: `stylekit.train.step.train_step` (the step every training run takes) with
`PerceptualLoss`, in the variants asked for:
  auto   what `jobs/train.py` runs: `--precision auto` (bf16 autocast on CUDA, fp32 on CPU)
  bf16   `--precision bf16`: bf16 autocast, on a CPU with channels_last weights (train/ray_job.py)
  fp32   fp32 everywhere (the fast loss path only)
  cl     auto + network and VGG weights channels_last (`steps.to_channels_last`)
  cat    auto, but one VGG pass over [y, x] instead of two (backward then covers both halves)
  compile  auto, with the network and VGG torch.compile'd
Inputs are real photos, centre-cropped, already on the device as uint8 (stylekit) or float
(reference): this measures the step, not data loading. Rounds alternate the paths, so load
that comes and goes on a shared machine hits each alike; the median is reported.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable

import common
import numpy as np
import reference
import torch

from stylekit.infer.fastpath import tune_cpu_allocator
from stylekit.nn import loss
from stylekit.nn.loss import LossTerms, PerceptualLoss
from stylekit.nn.model import TransformerNet
from stylekit.nn.vgg import load_vgg
from stylekit.train.precision import cpu_has_native_bf16, resolve_dtype
from stylekit.train.step import to_channels_last, train_step

PAPER_IMAGES = 40_000 * 4  # the paper's schedule: 40k steps of 4 images


def style_tensor(device: torch.device) -> torch.Tensor:
    from PIL import Image

    img = Image.open(common.STYLE_IMAGE).convert("RGB")
    img.thumbnail((256, 256))
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)[None].float().to(device)


class CatLoss(PerceptualLoss):
    """PerceptualLoss with one VGG pass over the concatenation [y, x] (a lever to weigh)."""

    def forward(self, output: torch.Tensor, content: torch.Tensor) -> LossTerms:
        b = output.shape[0]
        feats = self.vgg(torch.cat([output, content]))
        out_features = [f[:b] for f in feats]
        tap = loss.CONTENT_TAP
        c = self.content_weight * loss.content_loss(out_features[tap], feats[tap][b:].detach())
        s = self.style_weight * loss.style_loss([loss.gram_matrix(f) for f in out_features], self.style_grams)
        return LossTerms(c, s, self.tv_weight * loss.tv_loss(output))


def stylekit_step(
    variant: str, model: TransformerNet, style: torch.Tensor, batch: torch.Tensor, device: torch.device
) -> Callable[[], object]:
    torch.manual_seed(0)
    net = copy.deepcopy(model).to(device).train()
    vgg = load_vgg("random", seed=0).to(device)
    loss_cls = CatLoss if variant == "cat" else PerceptualLoss
    loss_fn = loss_cls(vgg, style, 1e5, 1e10, 10.0).to(device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}.get(variant) or resolve_dtype("auto", device)
    # `bf16` is what `jobs/train.py --precision bf16` runs on a CPU: bf16 autocast with
    # channels_last weights (train/ray_job.py).
    if variant == "cl" or (variant == "bf16" and device.type == "cpu"):
        to_channels_last(net, loss_fn)
    if variant == "compile":
        net = torch.compile(net)  # type: ignore[assignment]
        loss_fn.vgg = torch.compile(loss_fn.vgg)  # type: ignore[assignment]
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    return lambda: train_step(net, loss_fn, optimizer, batch, dtype)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-sizes", type=common.parse_ints, help="comma list (GPU: 4,8,16,32,64; CPU: 4)")
    p.add_argument("--image-size", type=int, default=None, help="square crop side (default 256, the paper's)")
    choices = "comma list of auto,fp32,bf16,cl,cat,compile (GPU: auto,cl,cat,compile; CPU: auto,bf16)"
    p.add_argument("--variants", help=f"stylekit variants, {choices}")
    common.add_timing_flags(p, "untimed steps per path (GPU 5, CPU 1)", "timed rounds (GPU 20, CPU 3)")
    args = p.parse_args()
    device = common.apply_timing_flags(args)
    gpu = device.type == "cuda"
    sizes = args.batch_sizes or ([4, 8, 16, 32, 64] if gpu else [4])
    side = args.image_size or 256
    variants = (args.variants or ("auto,cl,cat,compile" if gpu else "auto,bf16")).split(",")
    warmup = args.warmup if args.warmup is not None else (5 if gpu else 1)
    repeat = args.repeat or (20 if gpu else 3)
    if gpu:
        torch.backends.cudnn.benchmark = True  # both paths: the example's own default is off

    print(common.header(f"Training step, {side}x{side} px", device))
    if device.type == "cpu":
        native = cpu_has_native_bf16()
        print(f"CPU bf16 in hardware (AMX or AVX512-BF16): {'yes' if native else 'no (bf16 is emulated)'}")
    model = common.calibrated_model(0)
    style = style_tensor(device)
    ref_vgg = reference.reference_vgg(0, device)
    rows = []
    plain_ref: dict[int, float] = {}
    for bs in sizes:
        pixels = np.stack(common.photos(bs, side, side))
        batch_u8 = torch.from_numpy(pixels).to(device)
        batch_f = batch_u8.permute(0, 3, 1, 2).float().contiguous()
        try:
            ref = reference.ReferenceTrainer(model, ref_vgg, style, bs)
            fns: dict[str, Callable[[], object]] = {"reference": lambda ref=ref, x=batch_f: ref.step(x)}
            if device.type == "cpu" and not plain_ref:
                # Before stylekit tunes the (process-wide) allocator: the reference as a plain process runs it.
                t = common.interleaved({"reference": fns["reference"]}, device, warmup, repeat)["reference"]
                plain_ref[bs] = bs / common.median(t)
                tune_cpu_allocator()
            for v in variants:
                fns[v] = stylekit_step(v, model, style, batch_u8, device)
            times = common.interleaved(fns, device, warmup, repeat)
        except torch.cuda.OutOfMemoryError:
            rows.append([bs, "OOM", *(["-"] * (len(variants) * 2))])
            torch.cuda.empty_cache()
            continue
        ref_rate = bs / common.median(times["reference"])
        row: list[object] = [bs, f"{ref_rate:.1f} (±{common.spread(times['reference'])})"]
        for v in variants:
            rate = bs / common.median(times[v])
            row += [f"{rate:.1f} (±{common.spread(times[v])})", f"{rate / ref_rate:.2f}x"]
        rows.append(row)
        del fns
        if gpu:
            torch.cuda.empty_cache()
    headers = ["batch", "reference img/s"]
    for v in variants:
        headers += [f"stylekit {v} img/s", f"{v} vs ref"]
    print(common.table(headers, rows))
    print()
    if plain_ref:
        bs, rate = next(iter(plain_ref.items()))
        print(
            f"CPU: the allocator tuning stylekit applies is process-wide, so the reference above ran with it too; "
            f"as a plain process (timed first, before any stylekit step) the reference made {rate:.1f} img/s at batch {bs}."
        )
    print(
        f"(± is half the min-max spread of the {repeat} timed rounds around the median; "
        f"the paper's schedule is {PAPER_IMAGES:,} images: at R img/s it takes {PAPER_IMAGES:,}/R s.)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
