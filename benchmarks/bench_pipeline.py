"""What bounds the bulk job on a node: the pipeline's own CPU per image, by stage, the codecs'
ceiling per CPU, and (--ceiling) the stages in one process without Ray.

    python benchmarks/bench_pipeline.py                       # 500 and 2000 tiny images
    python benchmarks/bench_pipeline.py --counts 1000 4000 --codec-count 20
    python benchmarks/bench_pipeline.py --ceiling --count 2000 --codec nvjpeg   # a GPU node

1. The pipeline's own cost: everything but decoding, the network and encoding, on tiny
   (--side px) JPEGs where it shows, with the network taken out: the stylizing stage returns
   its input (harness.py's `identity` actor), so what the runs cost is the pipeline and the
   codecs, not a network whose CPU time on tiny images swings by more than the pipeline's whole
   cost from run to run (11 and 18 ms an image in two runs here).
   - On Ray: two whole job processes (harness.py's job, `run_night` as jobs/stylize.py calls
     it, on a fresh local Ray each) over N1 and N2 images; the CPU seconds of every process of
     each run give the marginal CPU per image, (CPU(N2) - CPU(N1)) / (N2 - N1), which cancels
     the fixed cost (imports, Ray's start, the model). Less the codecs (measured in this
     process on the same images), it is the pipeline's own: the driver's part (its process's
     marginal CPU: manifest parts, progress, Ray Data's executor), the actor's block runner,
     and Ray (raylet, GCS, object store, calls, key reads).
   - --engine local (no Ray: what a small machine runs): the same blocks through the job's
     own block runner (`bulk/engines/blocks.py`) in this process, read, decode, encode and write
     included, and the manifest rows; less the codecs, the pipeline's own.
   The network's own cost, measured apart in this process, is shown for scale.
2. The codec ceiling (--codec-only: this alone): decode + encode CPU time per ~1 MP JPEG
   (--codec-size, quality 90 in, 95 out as the job writes), one thread; 1 / that is the
   images/s one CPU's codecs allow, and the CPUs a node needs for the GPU target of 1,000/s.
3. --ceiling (no Ray, for a bare GPU machine): --count ~1 MP JPEGs through decode threads ->
   `Stylizer.forward` -> encode threads, bounded queues between them, in one process: what the
   stages can do on this node without Ray's scheduling, and how long the model waits.
   `--codec nvjpeg` decodes and encodes on the GPU (torchvision.io, nvJPEG) instead of Pillow.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the actors run (bulk/engines/ray_photos.py)

import argparse
import io
import queue
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import common
import harness
import numpy as np
import torch
from PIL import Image

TARGET = 1000.0  # images/s a GPU node should reach (the target)


def job_cpu(model: str, files: list[Path], out: Path) -> harness.Timed:
    """One whole job on Ray over `files` (a folder of their own), the network taken out."""
    job = harness.job_command(files[0].parents[1], out, model, "ray", actor="identity")
    timed = harness.run_process(job, outputs=out)
    if timed.outputs != len(files):
        raise SystemExit(f"the job over {len(files)} images wrote {timed.outputs}")
    return timed


def idle_ray_cpu(seconds: float = 20.0) -> float:
    """CPU seconds per second of a local Ray doing nothing (GCS, raylet, dashboard, workers
    kept warm): over a real night they add to every image at the rate the network allows."""
    marker = secrets.token_hex(6)
    env = harness.job_env(**{harness.MARKER: marker})
    code = "import time, ray; ray.init(include_dashboard=None, logging_level='ERROR'); "
    code += "time.sleep(10); print('up', flush=True); time.sleep(1e6)"
    cmd = [sys.executable, "-c", code]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    proc.stdout.readline()  # Ray has started and settled
    with harness.TreeCPU(marker) as before:
        time.sleep(0.5)
    t0 = time.time()
    time.sleep(seconds)
    with harness.TreeCPU(marker) as after:
        time.sleep(0.5)
    elapsed = time.time() - t0
    proc.terminate()
    proc.wait(30)
    both = set(before.seen) & set(after.seen)
    return sum(after.seen[p] - before.seen[p] for p in both) / elapsed


def stage_costs(model: str, files: list[Path], work: Path, batch: int) -> dict[str, float]:
    """CPU seconds per image, in this process with the job's own functions: each stage on
    `files` one after the other, the network included (for scale), then the same blocks
    through the block runner as --engine local runs them, the network taken out."""
    import pyarrow as pa

    from stylekit.bulk.config import BulkConfig
    from stylekit.bulk.engines.blocks import BlockRunner
    from stylekit.bulk.engines.ray_photos import MAX_BLOCK_ROWS
    from stylekit.bulk.engines.rows import Outcomes, RowContext
    from stylekit.bulk.engines.sizing import plan_actors
    from stylekit.bulk.plan.layout import RunLayout
    from stylekit.bulk.plan.manifest import OK
    from stylekit.bulk.plan.planner import KEYS_SCHEMA
    from stylekit.files import images, storage
    from stylekit.infer.inference import Stylizer
    from stylekit.nn.modelio import load_model
    from stylekit.nodes import Node

    src = files[0].parent
    config = BulkConfig(model=model, input=str(src), output=str(work / "stage-out"))
    actors = plan_actors(config, [Node(float(os.cpu_count() or 1))])
    torch.set_num_threads(actors.threads)
    layout = RunLayout.for_config(config)
    options = config.storage_options
    stylizer = Stylizer(load_model(model).model, config.inference_options)
    decode, quality = config.decode_options, config.encode_options.quality
    context = RowContext(layout, options, decode, config.decode_timeout, quality, "digest", batch)
    keys = [p.relative_to(src).as_posix() for p in files]
    stylizer.stylize([images.decode(files[0].read_bytes())] * batch)  # warm
    clock: dict[str, float] = {}

    def timed(name: str, fn, *args):  # type: ignore[no-untyped-def]
        t0 = time.process_time()
        out = fn(*args)
        clock[name] = clock.get(name, 0.0) + time.process_time() - t0
        return out

    rows = MAX_BLOCK_ROWS  # the actor's blocks: one manifest table each
    for b in range(0, len(keys), rows):
        block = keys[b : b + rows]
        for i in range(0, len(block), batch):
            chunk = block[i : i + batch]
            datas = [timed("read", storage.read_bytes, layout.input_uri(k), options) for k in chunk]
            pixels = [timed("decode", images.decode, d, config.decode_options) for d in datas]
            results = timed("network", stylizer.stylize, pixels)
            encoded = [timed("encode", images.encode, r, "jpg", quality) for r in results]
            for k, data in zip(chunk, encoded, strict=True):
                timed("write", storage.write_bytes, layout.output_uri(k), data, options)
        n = len(block)
        done = Outcomes([OK] * n, [""] * n, [8] * n, [8] * n, [1] * n, [0.1] * n, [""] * n)
        keys_of_block = {"key": block, "output_key": block, "input_bytes": [1] * n}
        timed("manifest rows", done.rows, keys_of_block, context)
    # --engine local's blocks, the network taken out: read, decode, encode, write and the
    # runner's own threads, futures and timeouts.
    shutil.rmtree(work / "stage-out", ignore_errors=True)
    runner = BlockRunner(context, lambda px, slot: list(px), threads=max(2, actors.threads))
    n = len(keys)  # as a key shard's rows (planner.KEYS_SCHEMA): one selection (OUT itself), no record
    columns = {"key": keys, "output_key": keys, "input_bytes": [1] * n, "input_version": [""] * n}
    columns |= {name: [[""]] * n for name in ("style", "record_version", "record_hash")}
    table = pa.table(columns, schema=KEYS_SCHEMA)
    t0 = time.process_time()
    for i in range(0, n, rows):
        runner(table.slice(i, rows))
    whole = time.process_time() - t0
    runner.close()
    per = {k: v / n for k, v in clock.items()}
    per["local blocks"] = whole / n
    return per


def codec_ceiling(count: int, width: int, height: int, quality: int) -> dict[str, float]:
    from stylekit.files import images

    photos = common.photos(count, width, height)
    datas = []
    for px in photos:
        buf = io.BytesIO()
        Image.fromarray(px).save(buf, format="JPEG", quality=90)
        datas.append(buf.getvalue())
    images.encode(images.decode(datas[0]), "jpg", quality)  # warm
    t0 = time.thread_time()
    decoded = [images.decode(d) for d in datas]
    t1 = time.thread_time()
    for px in decoded:
        images.encode(px, "jpg", quality)
    t2 = time.thread_time()
    return {"decode": (t1 - t0) / count, "encode": (t2 - t1) / count, "mp": width * height / 1e6}


def print_codec_ceiling(args: argparse.Namespace, pipeline: float | None) -> None:
    """The codec table: decode + encode CPU per JPEG, images/s per CPU, CPUs for the target."""
    w, h = common.parse_sizes(args.codec_size)[0]
    codec = codec_ceiling(args.codec_count, w, h, 95)
    per = codec["decode"] + codec["encode"]
    extra = "" if pipeline is None else f" (+ {TARGET * pipeline:.1f} for the pipeline)"
    headers = ["JPEG", "decode ms", "encode ms (q95)", "codec ms / image", "images/s per CPU"]
    headers.append("CPUs for 1,000 images/s")
    row = [f"{w}x{h} ({codec['mp']:.2f} MP)", f"{1000 * codec['decode']:.1f}", f"{1000 * codec['encode']:.1f}",
           f"{1000 * per:.1f}", f"{1 / per:.1f}", f"{TARGET * per:.1f}{extra}"]  # fmt: skip
    print(common.table(headers, [row]))


_DONE = object()


def ceiling(args: argparse.Namespace, model_path: str, files: list[Path], output: Path) -> list[object]:
    """The stages in one process: decode threads -> Stylizer.forward -> encode threads, queues
    of 4 batches between them. A table row: photos/s, and the share of the model stage's span
    it spent waiting for input."""
    from concurrent.futures import ThreadPoolExecutor

    from stylekit.files import images
    from stylekit.infer.inference import InferenceOptions, Stylizer

    device = common.pick_device(args.device)
    model, _ = common.load_model(model_path)
    stylizer = Stylizer(model, InferenceOptions(device=str(device), max_batch=args.batch_size))
    nvjpeg = args.codec == "nvjpeg"
    if nvjpeg and device.type != "cuda":
        raise SystemExit("--codec nvjpeg needs a CUDA device")
    if nvjpeg:
        from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg
    decoded: queue.Queue = queue.Queue(maxsize=4)
    stylized: queue.Queue = queue.Queue(maxsize=4)
    output.mkdir(parents=True, exist_ok=True)
    groups = [files[i : i + args.batch_size] for i in range(0, len(files), args.batch_size)]
    clock = {"busy": 0.0, "first": 0.0, "last": 0.0}

    def decoder() -> None:
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

    def stylize_stage() -> None:
        clock["first"] = time.perf_counter()
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
            clock["busy"] += time.perf_counter() - t0
            stylized.put((group, outs))
        clock["last"] = time.perf_counter()
        stylized.put(_DONE)

    def encoder() -> None:
        def write(path: Path, pixels: object) -> None:
            if nvjpeg:
                data = encode_jpeg(pixels.permute(2, 0, 1).contiguous(), quality=95).cpu().numpy().tobytes()  # type: ignore[attr-defined]
            else:
                data = images.encode(np.asarray(pixels), "jpg", 95)
            (output / path.name).write_bytes(data)

        with ThreadPoolExecutor(args.codec_threads) as pool:
            while (item := stylized.get()) is not _DONE:
                list(pool.map(write, *item))

    threads = [threading.Thread(target=f) for f in (decoder, stylize_stage, encoder)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    span = clock["last"] - clock["first"]
    wait = 1 - clock["busy"] / span if span > 0 else 0.0
    rate = f"{len(files) / wall:.2f}"
    return [f"in-process stages ({args.codec})", len(files), f"{wall:.1f}", rate, f"{100 * wait:.1f}%"]


def print_ceiling(args: argparse.Namespace) -> None:
    device = common.pick_device(args.device)
    count = args.count or (2000 if device.type == "cuda" else 16)
    print(common.header(f"The stages in one process, no Ray: {count} ~1 MP JPEGs", device))
    with tempfile.TemporaryDirectory(prefix="bench-ceiling-") as tmp:
        root = Path(tmp)
        shapes = [harness.ONE_MP[i % len(harness.ONE_MP)] for i in range(count)]
        files = harness.make_inputs(root / "in", shapes)
        model = args.model_file
        if not model:
            from safetensors.torch import save_file

            model = str(root / "model.safetensors")
            state = {k: v.contiguous() for k, v in common.calibrated_model(0).state_dict().items()}
            save_file(state, model, metadata={"format": "stylekit"})
        row = ceiling(args, model, files, root / "out")
    print(common.table(["engine", "photos", "wall s", "photos/s end to end", "model stage waiting"], [row]))
    print("\n(waiting: the share of the model stage's span, first batch to last, spent waiting for input)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--counts", type=int, nargs=2, default=[500, 2000], metavar=("N1", "N2"))
    p.add_argument("--side", type=int, default=48)
    p.add_argument("--model", default="starry_night")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--codec-count", type=int, default=12)
    p.add_argument("--codec-size", default="1280x800")
    p.add_argument("--work", default=None)
    p.add_argument("--codec-only", action="store_true", help="only the codec ceiling")
    p.add_argument("--ceiling", action="store_true", help="only the stages in one process, no Ray")
    p.add_argument("--count", type=int, default=None, help="--ceiling: photos (GPU: 2000; CPU: 16)")
    p.add_argument("--codec", choices=["pillow", "nvjpeg"], default="pillow", help="--ceiling: JPEG codec")
    p.add_argument("--codec-threads", type=int, default=os.cpu_count() or 2, help="--ceiling: codec threads")
    p.add_argument("--model-file", default=None,
                   help="--ceiling: stylekit .safetensors / reference .pth (default: calibrated random)")  # fmt: skip
    p.add_argument("--device", default="auto", help="--ceiling: the model's device")
    args = p.parse_args()
    if args.ceiling:
        print_ceiling(args)
        return 0
    if args.codec_only:
        print(common.header("The codec ceiling per CPU (Pillow)", torch.device("cpu")))
        print_codec_ceiling(args, None)
        return 0
    from stylekit.nn import zoo

    model = str(zoo.resolve(args.model)) if zoo.is_name(args.model) else args.model
    print(common.header("The bulk pipeline's own CPU per image, and the codec ceiling", torch.device("cpu")))
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    n1, n2 = args.counts
    square = [(args.side, args.side)]
    sets = {n: harness.make_inputs(work / f"tiny{n}-{args.side}", square * n, "noise") for n in (n1, n2)}
    runs = {n: job_cpu(model, sets[n], work / f"out{n}") for n in (n1, n2)}
    marginal = (runs[n2].cpu - runs[n1].cpu) / (n2 - n1)
    driver = (runs[n2].driver - runs[n1].driver) / (n2 - n1)
    stages = stage_costs(model, sets[n1], work, args.batch_size)
    idle = idle_ray_cpu()
    # A real night on Ray runs at the network's pace: Ray's idle CPU adds per image at that rate.
    pace = 1.0 / stages["network"]  # images/s at the network's CPU per image (low: a conservative pace)
    codecs = stages["decode"] + stages["encode"]
    local = stages["local blocks"] - codecs + stages["manifest rows"]
    ray_side = marginal - codecs  # the pipeline's own on Ray: driver, actor's runner, Ray
    ray_rest = ray_side - driver
    rows = [
        [f"job on Ray, network taken out: process tree ({n1} and {n2} images)", f"{1000 * marginal:.2f}",
         "marginal: fixed cost cancelled"],
        ["codecs: decode + encode", f"{1000 * codecs:.2f}", "not the pipeline's"],
        ["  of it, the driver", f"{1000 * driver:.2f}", "manifest parts, progress, Ray Data's executor"],
        ["  of it, Ray and the actor's block runner", f"{1000 * ray_rest:.2f}",
         "raylet, GCS, object store, calls, key reads; reads, writes, the runner's threads"],
        ["**the pipeline's own, on Ray (all but decode, network, encode)**", f"**{1000 * ray_side:.2f}**",
         "target <= 5 ms"],
        [f"  and Ray's idle processes at the network's pace ({pace:.0f} images/s here)",
         f"{1000 * idle / pace:.2f}", f"a local Ray doing nothing: {idle:.3f} CPU s per second"],
        ["**the pipeline's own on Ray, in a night at the network's pace**",
         f"**{1000 * (ray_side + idle / pace):.2f}**", "target <= 5 ms"],
        ["--engine local: the job's blocks, network taken out", f"{1000 * stages['local blocks']:.2f}",
         "read, decode, encode, write, the runner's threads, in this process"],
        ["  of it, read / write", f"{1000 * stages['read']:.2f} / {1000 * stages['write']:.2f}",
         "storage.read_bytes, storage.write_bytes (atomic: temp + rename)"],
        ["manifest rows", f"{1000 * stages['manifest rows']:.2f}", "bulk/engines/rows.py: Outcomes.rows"],
        ["**the pipeline's own, --engine local**", f"**{1000 * local:.2f}**", "target <= 5 ms"],
        ["for scale: the network (starry_night, batches of "
         f"{args.batch_size})", f"{1000 * stages['network']:.2f}", "the model (not the pipeline's)"],
    ]  # fmt: skip
    print(common.table(["stage", "CPU ms / image", "what"], rows))
    on_ray = "; ".join(f"{n}: {r.cpu:.1f} CPU s in {r.wall:.1f} s" for n, r in runs.items())
    print(f"\n(runs on Ray: {on_ray})\n")
    print_codec_ceiling(args, ray_side)
    print(f"\n(load average at end {', '.join(f'{x:.1f}' for x in os.getloadavg())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
