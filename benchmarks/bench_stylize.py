"""Stylization throughput: images/s at each size, batch 1 and the best batch, reference and
stylekit side by side, with peak memory and the PSNR of stylekit's pixels against the fp32
reference's.

    python benchmarks/bench_stylize.py                 # GPU: 512x512, 1920x1080, 3840x2160
    python benchmarks/bench_stylize.py --sizes 512x512,1920x1080 --repeat 3    # CPU

Both paths start from the same (B, H, W, 3) uint8 batch of real photos in host memory (pinned
on a GPU) and end with uint8 pixels in host memory, so both pay the same transfers.
Reference: the example's stylize() (tests/reference.py: reference_stylize): the seed network,
fp32, eager, NCHW, under no_grad (TF32 convs, cuDNN's default, allowed for its timing; its PSNR
target is computed with TF32 off). stylekit: `inference.Stylizer(...).forward`, in variants
  auto     InferenceOptions() as the CLI and the bulk job run it
  fp32 | bf16 | fp16   that precision, the rest auto
  nofast   the plain TransformerNet module, the rest auto (what the fast path adds)
  nchw     channels_last off          nonnpack  the fast path without NNPACK (CPU)
  compile  torch.compile              graphs    compile + CUDA graphs
  (combine with +, e.g. fp16+compile)
On a GPU all paths run in this process, in alternating rounds (CUDA events); peak memory is
torch.cuda.max_memory_allocated above what was allocated before.
On the CPU each timed call runs in a fresh process of its own, paths in rotating order:
stylekit changes process-wide state (the C allocator; NNPACK's thread pool, whose threads spin
for a while after each call), which would otherwise leak into the reference's timings. Peak
memory there is the process's peak resident memory during its first call above its resident
memory just before (the honest figure for a whole process, allocator and all).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

import common
import numpy as np
import reference
import torch

from stylekit.infer import srmetrics
from stylekit.infer.inference import InferenceOptions, Stylizer

VARIANT_OPTIONS: dict[str, dict[str, object]] = {
    "auto": {},
    "fp32": {"precision": "fp32"},
    "bf16": {"precision": "bf16"},
    "fp16": {"precision": "fp16"},
    "nofast": {"fast": False},
    "nchw": {"channels_last": False},
    "nonnpack": {"nnpack": False},
    "compile": {"compile": True},
    "graphs": {"compile": True, "cuda_graphs": True},
}
HEADERS = ["size", "path", "img/s b=1", "vs ref b=1", "img/s best batch", "vs ref best"]
HEADERS += ["peak MiB b=1", "peak MiB best", "PSNR dB vs fp32 ref (min)"]


def options_for(variant: str, device: torch.device, max_batch: int) -> InferenceOptions:
    kwargs: dict[str, object] = {"device": str(device), "max_batch": max_batch}
    for part in variant.split("+"):
        if part not in VARIANT_OPTIONS:
            raise SystemExit(f"unknown variant {part!r}; choose from {', '.join(VARIANT_OPTIONS)}")
        kwargs.update(VARIANT_OPTIONS[part])
    return InferenceOptions(**kwargs)  # type: ignore[arg-type]


def path_fn(
    name: str, model: torch.nn.Module, device: torch.device, max_batch: int
) -> Callable[[torch.Tensor], torch.Tensor]:
    if name == "reference":
        ref = reference.reference_net(model, device)  # type: ignore[arg-type]
        return partial(reference.reference_stylize, ref, device=device)
    return Stylizer(model, options_for(name, device, max_batch)).forward  # type: ignore[arg-type]


def guarded(fn: Callable[[], object]) -> Callable[[], object]:
    """A call that turns CUDA out-of-memory into a marker (and stops trying)."""
    state = {"oom": False}

    def call() -> object:
        if state["oom"]:
            return None
        try:
            return fn()
        except torch.cuda.OutOfMemoryError:
            state["oom"] = True
            torch.cuda.empty_cache()
            return None

    call.oom = state  # type: ignore[attr-defined]
    return call


def fmt_rate(times: list[float] | None, batch: int) -> tuple[float | None, str]:
    if not times:
        return None, "OOM"
    rate = batch / common.median(times)
    return rate, f"{rate:.3g}" if rate < 100 else f"{rate:.0f}"


def row(size: str, name: str, results: dict[int, list[float] | None], ref: dict[int, list[float] | None],
        mem: dict[int, float | None], quality: str) -> list[object]:  # fmt: skip
    rate1, text1 = fmt_rate(results.get(1), 1)
    ref1 = fmt_rate(ref.get(1), 1)[0]
    best_rate, best_b = max((fmt_rate(t, b)[0] or 0.0, b) for b, t in results.items())
    ref_best = max(fmt_rate(t, b)[0] or 0.0 for b, t in ref.items())
    vs1 = f"{rate1 / ref1:.2f}x" if rate1 and ref1 else "-"
    best = f"{fmt_rate(results[best_b], best_b)[1]} (b={best_b})" if best_rate else "OOM"
    vs_best = f"{best_rate / ref_best:.2f}x" if best_rate and ref_best else "-"
    m1, mb = (("-" if m is None else f"{m:.0f}") for m in (mem.get(1), mem.get(best_b)))
    return [size, name, text1, vs1, best, vs_best, m1, mb, quality]


# --- GPU: one process ---------------------------------------------------------------------


def gpu_peak_mib(fn: Callable[[], object], device: torch.device) -> float | None:
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    try:
        fn()
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return None
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def run_gpu(args: argparse.Namespace, device: torch.device, sizes: list[tuple[int, int]], batches: list[int],
            variants: list[str], warmup: int, repeat: int) -> list[list[object]]:  # fmt: skip
    torch.backends.cudnn.benchmark = True  # for the reference too (the Stylizer sets it anyway)
    model, _ = common.load_model(args.model)
    paths = {name: path_fn(name, model, device, max(batches)) for name in ["reference", *variants]}
    rows = []
    for width, height in sizes:
        host = torch.from_numpy(np.stack(common.photos(max(batches), width, height))).pin_memory()
        tf32 = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = False  # the PSNR target: strict fp32
        target = [guarded(partial(paths["reference"], host[i : i + 1]))() for i in range(min(2, len(host)))]
        torch.backends.cudnn.allow_tf32 = tf32
        results: dict[str, dict[int, list[float] | None]] = {name: {} for name in paths}
        for b in batches:
            fns = {name: guarded(partial(f, host[:b])) for name, f in paths.items()}
            times = common.interleaved(fns, device, warmup, repeat)
            for name, fn in fns.items():
                results[name][b] = None if fn.oom["oom"] else times[name]  # type: ignore[attr-defined]
        for name, f in paths.items():
            best_b = max((fmt_rate(t, b)[0] or 0.0, b) for b, t in results[name].items())[1]
            mem = {b: gpu_peak_mib(partial(f, host[:b]), device) for b in (1, best_b)}
            quality = "(target)"
            if name != "reference":
                outs = [guarded(partial(f, host[i : i + 1]))() for i in range(len(target))]
                scores = [
                    srmetrics.psnr(o[0].numpy(), t[0].numpy())
                    for o, t in zip(outs, target, strict=True)
                    if o is not None and t is not None
                ]  # type: ignore[index]
                quality = f"{min(scores):.1f}" if scores else "-"
            rows.append(row(f"{width}x{height}", name, results[name], results["reference"], mem, quality))
        torch.cuda.empty_cache()
    return rows


# --- CPU: a fresh process per path, size and batch ----------------------------------------


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def probe(
    args: argparse.Namespace, name: str, width: int, height: int, batch: int, warmup: int, repeat: int
) -> None:
    """Child process: time one path, print {"times", "peak_mib"} as JSON, save the pixels."""
    device = torch.device("cpu")
    model, _ = common.load_model(args.model)
    fn = path_fn(name, model, device, batch)
    pixels = torch.from_numpy(np.stack(common.photos(batch, width, height)))
    before = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM) to the current RSS
        f.write("5")
    out = fn(pixels)
    peak = (_status_kib("VmHWM") - before) / 1024
    for _ in range(warmup - 1):
        fn(pixels)
    times = [common.time_once(partial(fn, pixels), device) for _ in range(repeat)]
    if args.save:
        np.save(args.save, out[:2].numpy())
    print(json.dumps({"times": times, "peak_mib": peak}))


def run_cpu(args: argparse.Namespace, sizes: list[tuple[int, int]], batches: list[int], variants: list[str],
            warmup: int, repeat: int) -> list[list[object]]:  # fmt: skip
    names = ["reference", *variants]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-stylize-") as tmp:
        for width, height in sizes:
            results: dict[str, dict[int, list[float] | None]] = {n: {} for n in names}
            mem: dict[str, dict[int, float | None]] = {n: {} for n in names}
            saved: dict[str, Path] = {}
            k = 0
            for b in batches:
                # `repeat` rounds; each round runs every path once, in a process of its own, in
                # rotating order, so load that comes and goes hits each path alike.
                for r in range(repeat):
                    for name in names[k % len(names) :] + names[: k % len(names)]:
                        k += 1
                        first = r == 0 and b == min(batches)
                        save = Path(tmp) / f"{name}-{width}x{height}.npy"
                        cmd = [sys.executable, __file__, "--probe", name, "--sizes", f"{width}x{height}"]
                        cmd += [
                            "--batches",
                            str(b),
                            "--warmup",
                            str(warmup),
                            "--repeat",
                            "1",
                            "--clock",
                            args.clock,
                        ]
                        cmd += ["--model", args.model] if args.model else []
                        cmd += ["--threads", str(args.threads)] if args.threads else []
                        cmd += ["--save", str(save)] if first else []
                        proc = subprocess.run(cmd, capture_output=True, text=True)
                        if proc.returncode != 0:
                            raise SystemExit(f"{name} {width}x{height} b={b} failed:\n{proc.stderr[-3000:]}")
                        result = json.loads(proc.stdout.strip().splitlines()[-1])
                        results[name].setdefault(b, []).extend(result["times"])  # type: ignore[union-attr]
                        if r == 0:
                            mem[name][b] = result["peak_mib"]
                        if first:
                            saved[name] = save
            target = np.load(saved["reference"])
            for name in names:
                quality = "(target)"
                if name != "reference":
                    out = np.load(saved[name])
                    quality = f"{min(srmetrics.psnr(o, t) for o, t in zip(out, target, strict=True)):.1f}"
                size = f"{width}x{height}"
                rows.append(row(size, name, results[name], results["reference"], mem[name], quality))
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", help="WxH list (GPU: 512x512,1920x1080,3840x2160; CPU: 512x512,1920x1080)")
    p.add_argument("--batches", type=common.parse_ints, help="batch sizes (GPU: 1,2,4,8,16; CPU: 1,2)")
    p.add_argument("--variants", help="stylekit variants (GPU: auto,fp16,nofast,compile; CPU: auto)")
    p.add_argument("--model", help="a stylekit .safetensors or reference .pth (default: calibrated random)")
    common.add_timing_flags(
        p, "untimed calls per path and batch (GPU 3, CPU 1)", "timed calls (GPU 10 rounds, CPU 3)"
    )
    p.add_argument("--probe", default=None, help=argparse.SUPPRESS)
    p.add_argument("--save", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    device = common.apply_timing_flags(args)
    gpu = device.type == "cuda"
    sizes = common.parse_sizes(args.sizes or ("512x512,1920x1080,3840x2160" if gpu else "512x512,1920x1080"))
    batches = args.batches or ([1, 2, 4, 8, 16] if gpu else [1, 2])
    warmup = max(1, args.warmup if args.warmup is not None else (3 if gpu else 1))
    repeat = args.repeat or (10 if gpu else 3)
    if args.probe:
        probe(args, args.probe, *sizes[0], batches[0], warmup, repeat)
        return 0
    variants = (args.variants or ("auto,fp16,nofast,compile" if gpu else "auto")).split(",")
    print(common.header("Stylization", device))
    model_name = common.load_model(args.model)[1]
    plans = "; ".join(f"{v} = {options_for(v, device, max(batches)).resolve().describe()}" for v in variants)
    print(f"- model: {model_name}; stylekit variants: {plans}")
    print()
    if gpu:
        rows = run_gpu(args, device, sizes, batches, variants, warmup, repeat)
        how = f"median of {repeat} alternating rounds after {warmup} warm-up calls per path and batch, in one process"
    else:
        rows = run_cpu(args, sizes, batches, variants, warmup, repeat)
        how = f"median of {repeat} rounds; in each, every path runs in a fresh process of its own (rotating order), "
        how += f"{warmup} warm-up call(s) then 1 timed call"
    print(common.table(HEADERS, rows))
    print(
        f"\n({how}; batches tried: {', '.join(map(str, batches))}; PSNR of batch-1 outputs of up to 2 photos)"
    )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
