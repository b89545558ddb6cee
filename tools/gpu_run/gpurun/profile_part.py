"""The profile (an item of the bench part): FLOPs per image, this machine's roofs, and where the
GPU time of a training step and of a stylize call goes: what bounds each figure."""

from __future__ import annotations

import argparse
import time
from typing import Any

from gpurun.procs import emit
from gpurun.setting import PAPER_SIDE


def count_flops() -> dict[str, Any]:
    """FLOPs per image, counted on the meta device (no memory, no time): a stylekit and a
    reference training step at 256 px, and a forward pass at 1080p and 4K."""
    import reference
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode
    from torchvision.models import vgg16

    from stylekit.infer.fastpath import FastTransformer
    from stylekit.nn.loss import PerceptualLoss
    from stylekit.nn.model import TransformerNet
    from stylekit.nn.vgg import load_vgg

    meta, side = torch.device("meta"), PAPER_SIDE

    def counted(fn: Any) -> float:
        with FlopCounterMode(display=False) as fc:
            fn()
        return float(fc.get_total_flops())

    x = torch.empty(1, 3, side, side, device=meta)
    net = TransformerNet().to(meta).train()
    loss = PerceptualLoss(
        load_vgg("random", seed=0).to(meta), x, 1.0, 1.0, 1.0
    )  # style Grams: once, not counted
    ref_net = reference.RefTransformerNet().to(meta).train()
    with meta:  # torchvision's VGG-16 is 138M parameters: built on the meta device, its init costs nothing
        ref_vgg = reference.RefVgg16(vgg16(weights=None).features)

    def stylekit_step() -> None:
        loss(net(x), x).total.backward()

    def reference_step() -> None:  # reference.ReferenceTrainer.step's work (Adam aside)
        fy, fx = ref_vgg(reference.normalize_batch(ref_net(x))), ref_vgg(reference.normalize_batch(x.clone()))
        total = F.mse_loss(fy.relu2_2, fx.relu2_2)
        for f in fy:
            g = reference.gram_matrix(f)
            total = total + F.mse_loss(g, torch.zeros_like(g))
        total.backward()

    flops: dict[str, Any] = {
        "train": counted(stylekit_step),
        "train_ref": counted(reference_step),
        "stylize": {},
        "stylize_ref": {},
    }
    with torch.no_grad():
        for w, h in ((1920, 1080), (3840, 2160)):
            x = torch.empty(1, 3, h, w, device=meta)
            fast = FastTransformer(TransformerNet(), nnpack=False).to(meta)
            flops["stylize"][f"{w}x{h}"] = counted(lambda x=x, fast=fast: fast(x))
            flops["stylize_ref"][f"{w}x{h}"] = counted(lambda x=x: reference.RefTransformerNet().to(meta)(x))
    return flops


def measure_roofs(device: Any, dry: bool) -> dict[str, float]:
    """What this machine does at best: a bf16 (CPU: fp32) matmul's TFLOP/s, device copy and
    host-to-device / device-to-host bandwidth in GB/s."""
    import torch

    gpu = device.type == "cuda"
    n = 8192 if gpu and not dry else 512
    dtype = torch.bfloat16 if gpu else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)

    def timed(fn: Any, reps: int) -> float:
        fn()
        if gpu:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        if gpu:
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) / reps

    roofs = {"matmul_tflops": 2 * n**3 / timed(lambda: a @ b, 10) / 1e12}
    size = (1 << 30) if gpu and not dry else (16 << 20)
    src = torch.empty(size, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    roofs["device_copy_gbps"] = 2 * size / timed(lambda: dst.copy_(src), 5) / 1e9  # bytes read + written
    if gpu:
        host = torch.empty(size // 4, dtype=torch.uint8).pin_memory()
        dev = torch.empty(size // 4, dtype=torch.uint8, device=device)
        roofs["h2d_gbps"] = host.numel() / timed(lambda: dev.copy_(host, non_blocking=True), 5) / 1e9
        roofs["d2h_gbps"] = host.numel() / timed(lambda: host.copy_(dev, non_blocking=True), 5) / 1e9
    return roofs


def kernel_category(name: str) -> str:
    n = name.lower()
    if "memcpy" in n or "memset" in n:
        return "memcpy"
    if "norm" in n or "welford" in n:
        return "norm"
    conv = ("conv", "gemm", "xmma", "cutlass", "wgrad", "dgrad", "fprop", "winograd", "implicit", "cudnn",
            "nnpack", "mkldnn", "aten::mm", "aten::bmm", "aten::addmm", "sm80_", "sm90_")  # fmt: skip
    if any(k in n for k in conv):
        return "conv/GEMM"
    if "nchw" in n or "nhwc" in n or "transpose" in n:
        return "layout"
    if "multi_tensor" in n or "adam" in n:
        return "optimizer"
    if "reduce" in n:
        return "reduce"
    return "elementwise/other"


def profiled(fn: Any, device: Any, reps: int) -> dict[str, Any]:
    """Where the time of `reps` calls of fn goes: the share of kernel (CPU: op) time per
    category, the top kernels, and (GPU) how busy the GPU was over the wall time."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    gpu = device.type == "cuda"
    for _ in range(2):
        fn()
    if gpu:
        torch.cuda.synchronize()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
    with profile(activities=acts) as prof:
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        if gpu:
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    want = torch.autograd.DeviceType.CUDA if gpu else torch.autograd.DeviceType.CPU
    times: dict[str, float] = {}
    for e in prof.key_averages():
        if e.device_type != want or (not gpu and not e.key.startswith("aten::")):
            continue
        us = getattr(e, "self_device_time_total", 0) if gpu else e.self_cpu_time_total
        if not gpu and us == 0:
            continue
        times[e.key] = times.get(e.key, 0.0) + float(us)
    total = sum(times.values()) or 1.0
    shares: dict[str, float] = {}
    for k, us in times.items():
        cat = kernel_category(k)
        shares[cat] = shares.get(cat, 0.0) + us / total
    top = sorted(times.items(), key=lambda kv: -kv[1])[:6]
    return {
        "wall_ms": 1000 * wall / reps,
        "kernel_ms": total / 1000 / reps,
        "busy": min(1.0, total / 1e6 / wall) if gpu else None,
        "shares": dict(sorted(shares.items(), key=lambda kv: -kv[1])),
        "top": [[k[:90], round(us / 1000 / reps, 3)] for k, us in top],
    }


def child_profile(args: argparse.Namespace) -> int:
    import common
    import numpy as np
    import torch

    from stylekit.infer.inference import InferenceOptions, Stylizer
    from stylekit.nn.loss import PerceptualLoss
    from stylekit.nn.vgg import load_vgg
    from stylekit.train.step import train_step

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpu = device.type == "cuda"
    emit(kind="flops", **count_flops())
    emit(kind="roofs", **measure_roofs(device, args.dry_run))
    torch.backends.cudnn.benchmark = True
    batch, side = (2, 32) if args.dry_run or not gpu else (64, PAPER_SIDE)
    model = common.calibrated_model(0)
    net = model.to(device).train()
    style = torch.from_numpy(np.stack(common.photos(1, side, side))).permute(0, 3, 1, 2).float().to(device)
    loss = PerceptualLoss(load_vgg("random", seed=0).to(device), style, 1e5, 1e10, 10.0).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    pixels = torch.from_numpy(np.stack(common.photos(batch, side, side))).to(device)
    dtype = torch.bfloat16 if gpu else torch.float32
    result = profiled(lambda: train_step(net, loss, opt, pixels, dtype), device, 3 if gpu else 1)
    emit(kind="profile", what="train", batch=batch, side=side, path="auto", **result)
    (w, h), b = ((64, 48), 1) if args.dry_run or not gpu else ((1920, 1080), 8)
    stylizer = Stylizer(common.calibrated_model(0), InferenceOptions(device=str(device), max_batch=b))
    host = torch.from_numpy(np.stack(common.photos(b, w, h)))
    host = host.pin_memory() if gpu else host
    result = profiled(lambda: stylizer.forward(host), device, 3 if gpu else 1)
    emit(kind="profile", what="stylize", batch=b, size=f"{w}x{h}", path=stylizer.plan.describe(), **result)
    return 0
