"""Bulk, end to end on local files: ~1 MP JPEGs read, decoded, stylized, encoded and written,
in images/s, with the share of time the model stage waits for input.

    python benchmarks/bench_bulk.py                        # the bulk job (Ray), GPU: 2000 photos
    python benchmarks/bench_bulk.py --count 16 --actors 1  # CPU
    python benchmarks/bench_bulk.py --engine local         # no Ray: an in-process pipeline

--engine ray (default; needs Ray): the bulk job itself, through its public entry
`stylekit.bulk.driver.run_bulk(BulkConfig(...))`, or, when that import fails, its CLI
`python jobs/stylize.py --model M --input IN --output OUT` with the JSON summary line parsed.
Through run_bulk the stylizing actor class is wrapped to log when each model call starts and
ends; an actor's wait share is the time between calls (from when it is ready to its last call)
over that span. Through the CLI only images/s is available.

--engine local (no Ray, for a bare GPU machine): decode threads -> `Stylizer.forward` ->
encode threads, bounded queues between them, in one process: what the stages can do on this
machine, and how long the model waits, without Ray's scheduling. `--codec nvjpeg` decodes and
encodes JPEGs on the GPU with torchvision.io (nvJPEG) instead of Pillow on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import common
import numpy as np
import torch
from PIL import Image

# ~1 MP shapes a camera folder might hold (all multiples of 4 except the last).
SHAPES = [(1280, 800), (1152, 864), (1024, 1024), (800, 1280), (1222, 818)]


def make_inputs(folder: Path, count: int) -> list[Path]:
    """`count` ~1 MP JPEGs (quality 90), varied shapes, in sub-folders of 100."""
    base: dict[tuple[int, int], list[np.ndarray]] = {s: common.photos(4, *s) for s in SHAPES}
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        shape = SHAPES[i % len(SHAPES)]
        pixels = base[shape][(i // len(SHAPES)) % 4]
        if i >= len(SHAPES) * 4:  # distinct files: a little noise, so no two are the same
            pixels = np.clip(pixels.astype(np.int16) + rng.integers(-2, 3, pixels.shape), 0, 255).astype(
                np.uint8
            )
        path = folder / f"d{i // 100:03d}" / f"photo{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


# --- the bulk job (Ray) ----------------------------------------------------------------------


def timed_actor_class(base: type, log_dir: str) -> type:
    """A subclass of the job's actor that logs each model call's start and end to a file per
    process (defined here, in __main__, so Ray ships it by value)."""

    class TimedActor(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            self._log = open(os.path.join(log_dir, f"actor-{os.getpid()}-{id(self)}.jsonl"), "a")  # noqa: SIM115
            self._write({"ready": time.time()})

        def _write(self, record: dict[str, float]) -> None:
            self._log.write(json.dumps(record) + "\n")
            self._log.flush()

        def __call__(self, batch: dict) -> dict:  # type: ignore[type-arg]
            t0 = time.time()
            out = super().__call__(batch)
            self._write({"t0": t0, "t1": time.time(), "n": float(len(batch["key"]))})
            return out

    return TimedActor


def wait_shares(log_dir: str) -> list[float]:
    shares = []
    for path in Path(log_dir).glob("actor-*.jsonl"):
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        ready = [r["ready"] for r in records if "ready" in r]
        calls = [r for r in records if "t0" in r]
        if not ready or not calls:
            continue
        span = max(c["t1"] for c in calls) - min(ready)
        busy = sum(c["t1"] - c["t0"] for c in calls)
        shares.append(1 - busy / span if span > 0 else 0.0)
    return shares


def run_ray(args: argparse.Namespace, model: str, inputs: Path, output: Path) -> dict[str, object]:
    try:
        from stylekit import ray_env
        from stylekit.bulk import driver as bulk
        from stylekit.bulk.config import BulkConfig
        from stylekit.cli import config_from_flags
    except ImportError as e:
        print(f"(stylekit.bulk.driver not importable: {e}; using jobs/stylize.py)", file=sys.stderr)
        return run_cli(args, model, inputs, output)
    kwargs: dict[str, object] = {
        "model": model,
        "input": str(inputs),
        "output": str(output),
        "batch_size": args.batch_size,
    }
    if args.actors:
        kwargs["actors"] = args.actors
    if args.format:
        kwargs["format"] = args.format
    config = config_from_flags(BulkConfig, **kwargs)
    log_dir = tempfile.mkdtemp(prefix="bench-bulk-actors-")
    t0 = time.perf_counter()
    summary = bulk.run_bulk(config, bulk.Probes(actor=timed_actor_class(bulk.StylizeActor, log_dir)))
    wall = time.perf_counter() - t0
    ray_env.shutdown_ray()
    shares = wait_shares(log_dir)
    return {
        "ok": summary.ok,
        "failed": summary.failed,
        "wall": wall,
        "job images/s": summary.images_per_s,
        "wait": shares,
    }


def run_cli(args: argparse.Namespace, model: str, inputs: Path, output: Path) -> dict[str, object]:
    cmd = [
        sys.executable,
        "jobs/stylize.py",
        "--model",
        model,
        "--input",
        str(inputs),
        "--output",
        str(output),
    ]
    cmd += ["--batch-size", str(args.batch_size)]
    if args.actors:
        cmd += ["--actors", args.actors]
    if args.format:
        cmd += ["--format", args.format]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=common.REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        raise SystemExit(f"jobs/stylize.py failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "ok": summary.get("ok"),
        "failed": summary.get("failed"),
        "wall": wall,
        "job images/s": summary.get("images_per_s"),
        "wait": [],
    }


# --- the local pipeline (no Ray) -------------------------------------------------------------

_DONE = object()


def run_local(
    args: argparse.Namespace, model_path: str, files: list[Path], output: Path, device: torch.device
) -> dict[str, object]:
    from stylekit.files import images
    from stylekit.infer.inference import InferenceOptions, Stylizer

    model, _ = common.load_model(model_path)
    stylizer = Stylizer(model, InferenceOptions(device=str(device), max_batch=args.batch_size))
    nvjpeg = args.codec == "nvjpeg"
    if nvjpeg:
        if device.type != "cuda":
            raise SystemExit("--codec nvjpeg needs a CUDA device")
        from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg
    decoded: queue.Queue = queue.Queue(maxsize=4)
    stylized: queue.Queue = queue.Queue(maxsize=4)
    output.mkdir(parents=True, exist_ok=True)
    groups = [files[i : i + args.batch_size] for i in range(0, len(files), args.batch_size)]

    def decoder() -> None:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(args.codec_threads) as pool:
            for group in groups:
                if nvjpeg:
                    datas = [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in group]
                    pixels = [
                        t.permute(1, 2, 0) for t in decode_jpeg(datas, mode=ImageReadMode.RGB, device=device)
                    ]
                else:
                    pixels = list(pool.map(lambda p: images.decode(p.read_bytes()), group))
                decoded.put((group, pixels))
        decoded.put(_DONE)

    busy = 0.0
    first = last = 0.0

    def stylize_stage() -> None:
        nonlocal busy, first, last
        first = time.perf_counter()
        while (item := decoded.get()) is not _DONE:
            group, pixels = item
            t0 = time.perf_counter()
            if nvjpeg:  # pixels stay in GPU memory from decode to encode; same sizes batched
                outs: list[object] = [None] * len(pixels)
                by_size: dict[tuple[int, ...], list[int]] = {}
                for i, px in enumerate(pixels):
                    by_size.setdefault(tuple(px.shape), []).append(i)
                for idx in by_size.values():
                    result = stylizer.forward(torch.stack([pixels[i] for i in idx]), keep_on_device=True)
                    for j, i in enumerate(idx):
                        outs[i] = result[j]
            else:
                outs = stylizer.stylize(pixels)
            busy += time.perf_counter() - t0
            stylized.put((group, outs))
        last = time.perf_counter()
        stylized.put(_DONE)

    def encoder() -> None:
        from concurrent.futures import ThreadPoolExecutor

        def write(path: Path, pixels: object) -> None:
            if nvjpeg:
                data = encode_jpeg(pixels.permute(2, 0, 1).contiguous(), quality=95).cpu().numpy().tobytes()  # type: ignore[attr-defined]
            else:
                data = images.encode(np.asarray(pixels), "jpg", 95)
            (output / path.name).write_bytes(data)

        with ThreadPoolExecutor(args.codec_threads) as pool:
            while (item := stylized.get()) is not _DONE:
                group, outs = item
                list(pool.map(write, group, outs))

    threads = [threading.Thread(target=f) for f in (decoder, stylize_stage, encoder)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    span = last - first
    return {
        "ok": len(files),
        "failed": 0,
        "wall": wall,
        "job images/s": None,
        "wait": [1 - busy / span if span > 0 else 0.0],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engine", choices=["ray", "local"], default="ray")
    p.add_argument("--count", type=int, default=None, help="photos (GPU: 2000; CPU: 16)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--actors", default=None, help="the job's --actors (default: its auto)")
    p.add_argument("--format", default=None, help="the job's --format (default: its 'same', i.e. JPEG)")
    p.add_argument("--codec", choices=["pillow", "nvjpeg"], default="pillow", help="local engine: JPEG codec")
    p.add_argument(
        "--codec-threads", type=int, default=os.cpu_count() or 2, help="local engine: codec threads"
    )
    p.add_argument(
        "--model", default=None, help="stylekit .safetensors / reference .pth (default: calibrated random)"
    )
    p.add_argument("--device", default="auto", help="local engine's device")
    args = p.parse_args()
    device = common.pick_device(args.device)
    count = args.count or (2000 if torch.cuda.is_available() else 16)
    print(common.header(f"Bulk, end to end: {count} ~1 MP JPEGs, engine {args.engine}", device))
    with tempfile.TemporaryDirectory(prefix="bench-bulk-") as tmp:
        root = Path(tmp)
        files = make_inputs(root / "in", count)
        model = args.model
        if not model:
            from safetensors.torch import save_file

            model = str(root / "model.safetensors")
            state = {k: v.contiguous() for k, v in common.calibrated_model(0).state_dict().items()}
            save_file(state, model, metadata={"format": "stylekit"})
        mp = (
            sum(Image.open(f).size[0] * Image.open(f).size[1] for f in files[: len(SHAPES)])
            / len(SHAPES)
            / 1e6
        )
        if args.engine == "ray":
            result = run_ray(args, model, root / "in", root / "out")
        else:
            result = run_local(args, model, files, root / "out", device)
    wait = result["wait"]
    rows = [
        [
            args.engine + (f" ({args.codec})" if args.engine == "local" else ""),
            count,
            f"{mp:.2f}",
            f"{result['ok']} / {result['failed']}",
            f"{result['wall']:.1f}",
            f"{count / result['wall']:.2f}",  # type: ignore[operator]
            "-" if result["job images/s"] is None else f"{result['job images/s']:.2f}",
            "-"
            if not wait
            else f"{100 * float(np.mean(wait)):.1f}% (actors: {', '.join(f'{100 * w:.1f}%' for w in wait)})",  # type: ignore[arg-type]
        ]
    ]
    print(
        common.table(
            [
                "engine",
                "photos",
                "MP each (mean)",
                "ok / failed",
                "wall s",
                "photos/s end to end",
                "photos/s (job's summary)",
                "model stage waiting",
            ],
            rows,
        )
    )
    print()
    print(
        "(wall: from the call to the summary, Ray start-up and listing included; waiting: share of each model actor's span between calls)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
