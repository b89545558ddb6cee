"""Shared benchmark code: models to measure, timing, images and table printing.

The reference path they are measured against (the seed's network and training step) and the
calibrated stand-in model are the tests' oracle, tests/reference.py (imported from there, so
there is one copy); PSNR is `stylekit.infer.srmetrics.psnr`.

Needs only torch, torchvision, numpy, pillow and safetensors (no Ray, no pyarrow), so every
benchmark but bench_bulk runs on a bare GPU machine: `python benchmarks/bench_X.py`.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
TESTS = REPO / "tests"  # the reference oracle, tests/reference.py
if str(TESTS) not in sys.path:
    sys.path.append(str(TESTS))

import reference  # noqa: E402

from stylekit.nn.model import TransformerNet  # noqa: E402
from stylekit.train import precision  # noqa: E402

PHOTO_DIRS = [REPO.parent / "shared" / "data" / "content", REPO / "stylekit" / "examples" / "content"]
STYLE_IMAGE = REPO / "stylekit" / "examples" / "styles" / "starry_night.jpg"
DATE = os.environ.get("BENCH_DATE") or datetime.date.today().isoformat()


# --- models --------------------------------------------------------------------------------


def calibration_photos() -> torch.Tensor:
    """The batch benchmarks calibrate `reference.calibrated_model` on: two photos, 128 x 128,
    as (2, 3, 128, 128) float in [0, 255]."""
    return torch.from_numpy(np.stack(photos(2, 128, 128))).permute(0, 3, 1, 2).float()


def calibrated_model(seed: int = 0) -> TransformerNet:
    """`reference.calibrated_model` calibrated on `calibration_photos()`: the benchmarks'
    stand-in for a trained model."""
    return reference.calibrated_model(seed, calibration_photos())


def load_model(path: str | None, seed: int = 0) -> tuple[TransformerNet, str]:
    """A stylekit .safetensors or a reference .pth state dict, else `calibrated_model`.
    Only torch and safetensors: no stylekit.nn.modelio (it needs pyarrow for URIs)."""
    if not path:
        return calibrated_model(seed), f"calibrated random TransformerNet (seed {seed})"
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not re.search(r"in\d+\.running_(mean|var)$", k)}
    model = TransformerNet()
    model.load_state_dict(state)
    return model.eval(), Path(path).name


# --- images ----------------------------------------------------------------------------------


def photo_files() -> list[Path]:
    for d in PHOTO_DIRS:
        files = sorted(p for p in d.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if files:
            return files
    raise SystemExit("no content photos found in " + ", ".join(map(str, PHOTO_DIRS)))


def photos(n: int, width: int, height: int, start: int = 0) -> list[np.ndarray]:
    """n real photos (from the `start`-th), each resized (cover) and centre-cropped to
    height x width, RGB uint8."""
    files = photo_files()
    out = []
    for i in range(start, start + n):
        img = Image.open(files[i % len(files)]).convert("RGB")
        s = max(width / img.width, height / img.height)
        img = img.resize(
            (max(width, round(img.width * s)), max(height, round(img.height * s))), Image.Resampling.BILINEAR
        )
        left, top = (img.width - width) // 2, (img.height - height) // 2
        out.append(np.asarray(img.crop((left, top, left + width, top + height)), dtype=np.uint8))
    return out


# --- timing ----------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCK = "wall"  # "cpu": process CPU time (all threads) instead of wall time, on the CPU only


def time_once(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds for one call: CUDA events around it on a GPU, perf_counter on the CPU (or the
    process's CPU time with CLOCK = "cpu": with 1 thread, stable on a machine other jobs share)."""
    if device.type == "cpu" and CLOCK == "cpu":
        t0 = time.process_time()
        fn()
        return time.process_time() - t0
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved(
    fns: dict[str, Callable[[], object]], device: torch.device, warmup: int, repeat: int
) -> dict[str, list[float]]:
    """Warm each up, then `repeat` rounds that call each once, rotating the order: on a shared
    machine, load that comes and goes then hits every path alike. Seconds per call."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
        sync(device)
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(repeat):
        order = names[r % len(names) :] + names[: r % len(names)]
        for k in order:
            times[k].append(time_once(fns[k], device))
    return times


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def spread(xs: Sequence[float]) -> str:
    """min-max of per-call seconds as a +-% around the median, to show how noisy a row is."""
    m = median(xs)
    return f"{100 * (max(xs) - min(xs)) / (2 * m):.0f}%" if len(xs) > 1 and m > 0 else "-"


# --- machine description and tables ------------------------------------------------------


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        m = re.search(r"Model name:\s*(.+)", out)
        if m:
            return m.group(1).strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown CPU"


def cpu_flags() -> str:
    flags = precision.cpu_flags()
    if flags is None:
        return "?"
    wanted = ["avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_tile"]
    return " ".join(f for f in wanted if f in flags) or "none of avx2/avx512/amx"


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def header(title: str, device: torch.device) -> str:
    """Markdown lines describing the run: what, where, which versions, when, how."""
    import torchvision

    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        dev = f"{props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"
    else:
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        dev = (
            f"{cpu_model()}, {os.cpu_count()} logical CPUs, flags: {cpu_flags()}; torch threads "
            f"{torch.get_num_threads()}; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}; "
            f"load average at start {load}; clock: {'process CPU time' if CLOCK == 'cpu' else 'wall'}"
        )
    cmd = "python " + " ".join([os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]])
    versions = f"torch {torch.__version__}, torchvision {torchvision.__version__}, Python {platform.python_version()}"
    when = f"{DATE} (run at {datetime.datetime.now().strftime('%H:%M')})"
    return f"### {title}\n\n- device: {dev}\n- {versions}\n- date: {when}\n- command: `{cmd}`\n"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """'512x512,1920x1080' -> [(512, 512), (1920, 1080)] as (width, height)."""
    return [(int(w), int(h)) for w, h in (part.lower().split("x") for part in text.split(","))]


def add_timing_flags(p: argparse.ArgumentParser, warmup: str, repeat: str) -> None:
    """--device, --warmup, --repeat, --threads and --clock of the kernel benchmarks (stylize, train)."""
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--warmup", type=int, default=None, help=warmup)
    p.add_argument("--repeat", type=int, default=None, help=repeat)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    clock = "CPU runs: time by wall clock (default) or by the process's CPU time, which other jobs "
    clock += "on a shared machine disturb far less (use with --threads 1 to compare kernels)"
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall", help=clock)


def apply_timing_flags(args: argparse.Namespace) -> torch.device:
    """Applies --clock and --threads; the device --device names."""
    global CLOCK
    CLOCK = args.clock
    if args.threads:
        torch.set_num_threads(args.threads)
    return pick_device(args.device)


def parse_ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]
