"""The bulk pipeline's own CPU cost per image, by stage, and the codecs' ceiling per CPU.

    python benchmarks/bench_pipeline.py                       # 500 and 2000 tiny images
    python benchmarks/bench_pipeline.py --counts 1000 4000 --codec-count 20

1. The pipeline's own cost: everything but decoding, the network and encoding, on tiny
   (--side px) JPEGs where it shows, with the network taken out: the stylizing stage returns
   its input (`IdentityActor`, through the driver's `Probes`), so what the runs cost is the
   pipeline and the codecs, not a network whose CPU time on tiny images swings by more than
   the pipeline's whole cost from run to run (11 and 18 ms an image in two runs here).
   - On Ray: two whole job processes (this script's `--child`, which calls `run_bulk` as
     `jobs/stylize.py` does, on a fresh local Ray each) over N1 and N2 images; the CPU
     seconds of every process of each run (driver, Ray's processes, the actor; polled from
     /proc by an environment marker) give the marginal CPU per image, (CPU(N2) - CPU(N1)) /
     (N2 - N1), which cancels the fixed cost (imports, Ray's start, the model). Less the
     codecs (measured in this process on the same images), it is the pipeline's own: the
     driver's part (its process's marginal CPU: manifest parts, progress, Ray Data's
     executor), the actor's block runner, and Ray (raylet, GCS, object store, calls, key reads).
   - --engine local (no Ray: what a small machine runs): the same blocks through the job's
     own block runner (`bulk/blocks.py`) in this process, read, decode, encode and write
     included, and the manifest rows; less the codecs, the pipeline's own.
   The network's own cost, measured apart in this process, is shown for scale.
2. The codec ceiling: decode + encode CPU time per ~1 MP JPEG (--codec-size, quality 90 in,
   95 out as the job writes), one thread; 1 / that is the images/s one CPU's codecs allow,
   and the CPUs a node needs for the GPU target of 1,000 images/s.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the actors run (bulk/stages.py)

import argparse
import io
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_onenode import TreeCPU, make_tiny  # noqa: E402

TARGET = 1000.0  # images/s a GPU node should reach (the target)


def identity_actor() -> type:
    """`StylizeActor` whose network returns its input: the pipeline with the network taken out.
    (Defined here, in the child's __main__, so Ray ships the class to the actor by value.)"""
    from stylekit.bulk.stages import StylizeActor

    class IdentityActor(StylizeActor):
        def _stylize(self, pixels: list) -> list:  # type: ignore[override]
            return list(pixels)

    return IdentityActor


def child(model: str, src: str, out: str) -> int:
    """One job on Ray over SRC into OUT, as jobs/stylize.py runs it, the network taken out."""
    from stylekit.bulk import driver
    from stylekit.bulk.config import BulkConfig
    from stylekit.logs import setup_logging
    from stylekit.ray_env import shutdown_ray

    setup_logging("WARNING")
    config = BulkConfig(model=model, input=src, output=out, engine="ray")
    summary = driver.run_bulk(config, driver.Probes(actor=identity_actor()))
    shutdown_ray()
    print(summary.to_json())
    return 0


def job_cpu(model: str, src: Path, out: Path) -> dict[str, float]:
    """One whole job on Ray over `src`, the network taken out: CPU seconds of its process tree
    and of the driver alone."""
    import secrets

    from bench_onenode import MARKER

    shutil.rmtree(out, ignore_errors=True)
    marker = secrets.token_hex(6)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_ADDRESS="local", PYTHONPATH=str(REPO), **{MARKER: marker})
    cmd = [sys.executable, __file__, "--model", model, "--child", str(src), str(out)]
    t0 = time.time()
    with TreeCPU(marker) as cpu:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        stdout, err = proc.communicate()
        wall = time.time() - t0
        time.sleep(0.5)
    if proc.returncode != 0:
        raise SystemExit(f"the job failed:\n{err.decode()[-3000:]}")
    ok = json.loads(stdout.decode().splitlines()[-1])["ok"]
    return {"total": cpu.seconds, "driver": cpu.seen.get(str(proc.pid), 0.0), "wall": wall, "ok": ok}


def idle_ray_cpu(seconds: float = 20.0) -> float:
    """CPU seconds per second of a local Ray doing nothing (GCS, raylet, dashboard, workers
    kept warm): over a real night they add to every image at the rate the network allows."""
    import secrets

    from bench_onenode import MARKER

    marker = secrets.token_hex(6)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_ADDRESS="local", PYTHONPATH=str(REPO), **{MARKER: marker})
    code = (
        "import time, ray; ray.init(include_dashboard=None, logging_level='ERROR'); "
        "time.sleep(10); print('up', flush=True); time.sleep(1e6)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert proc.stdout is not None
    proc.stdout.readline()  # Ray has started and settled
    with TreeCPU(marker) as before:
        time.sleep(0.5)
    t0 = time.time()
    time.sleep(seconds)
    with TreeCPU(marker) as after:
        time.sleep(0.5)
    elapsed = time.time() - t0
    proc.terminate()
    proc.wait(30)
    common = set(before.seen) & set(after.seen)
    return sum(after.seen[p] - before.seen[p] for p in common) / elapsed


def stage_costs(model: str, files: list[Path], work: Path, batch: int) -> dict[str, float]:
    """CPU seconds per image, in this process with the job's own functions: each stage on
    `files` one after the other, the network included (for scale), then the same blocks
    through the block runner as --engine local runs them, the network taken out."""
    import pyarrow as pa
    import torch

    from stylekit.bulk.blocks import BlockContext, BlockRunner
    from stylekit.bulk.config import BulkConfig
    from stylekit.bulk.layout import RunLayout
    from stylekit.bulk.manifest import OK, manifest_table
    from stylekit.bulk.sizing import plan_actors
    from stylekit.bulk.stages import MAX_BLOCK_ROWS
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
            encoded = [
                timed("encode", images.encode, r, "jpg", config.encode_options.quality) for r in results
            ]
            for k, data in zip(chunk, encoded, strict=True):
                timed("write", storage.write_bytes, layout.output_uri(k), data, options)
        n = len(block)
        columns = {
            "key": block,
            "output_key": block,
            "status": [OK] * n,
            "error": [""] * n,
            "width": [8] * n,
            "height": [8] * n,
            "input_bytes": [1] * n,
            "output_bytes": [1] * n,
            "seconds": [0.1] * n,
        }
        timed("manifest rows", manifest_table, columns, layout, "digest")
    # --engine local's blocks, the network taken out: read, decode, encode, write and the
    # runner's own threads, futures and timeouts.
    shutil.rmtree(work / "stage-out", ignore_errors=True)
    context = BlockContext(
        layout,
        options,
        config.decode_options,
        config.decode_timeout,
        config.encode_options.quality,
        "digest",
        batch,
    )
    runner = BlockRunner(context, lambda px: list(px), threads=max(2, actors.threads))
    table = pa.table({"key": keys, "output_key": keys, "input_bytes": [1] * len(keys)})
    t0 = time.process_time()
    for i in range(0, len(keys), rows):
        runner(table.slice(i, rows))
    whole = time.process_time() - t0
    runner.close()
    n = len(keys)
    per = {k: v / n for k, v in clock.items()}
    per["local blocks"] = whole / n
    return per


def codec_ceiling(count: int, width: int, height: int, quality: int) -> dict[str, float]:
    import common

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
    import common

    w, h = common.parse_sizes(args.codec_size)[0]
    codec = codec_ceiling(args.codec_count, w, h, 95)
    per = codec["decode"] + codec["encode"]
    print(
        common.table(
            [
                "JPEG",
                "decode ms",
                "encode ms (q95)",
                "codec ms / image",
                "images/s per CPU",
                "CPUs for 1,000 images/s",
            ],
            [
                [
                    f"{w}x{h} ({codec['mp']:.2f} MP)",
                    f"{1000 * codec['decode']:.1f}",
                    f"{1000 * codec['encode']:.1f}",
                    f"{1000 * per:.1f}",
                    f"{1 / per:.1f}",
                    f"{TARGET * per:.1f}"
                    + ("" if pipeline is None else f" (+ {TARGET * pipeline:.1f} for the pipeline)"),
                ]
            ],
        )
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--counts", type=int, nargs=2, default=[500, 2000], metavar=("N1", "N2"))
    p.add_argument("--side", type=int, default=48)
    p.add_argument("--model", default="starry_night")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--codec-count", type=int, default=12)
    p.add_argument("--codec-size", default="1280x800")
    p.add_argument("--work", default=None)
    p.add_argument(
        "--codec-only", action="store_true", help="only the codec ceiling (tools/gpu_run/gpu_run.py)"
    )
    p.add_argument("--child", nargs=2, metavar=("IN", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.model, *args.child)
    import common
    import torch

    from stylekit.nn import zoo

    model = str(zoo.resolve(args.model)) if zoo.is_name(args.model) else args.model
    if args.codec_only:
        print(common.header("The codec ceiling per CPU (Pillow)", torch.device("cpu")))
        print_codec_ceiling(args, None)
        return 0
    print(common.header("The bulk pipeline's own CPU per image, and the codec ceiling", torch.device("cpu")))
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    n1, n2 = args.counts
    sets = {n: make_tiny(work / f"tiny{n}", n, args.side) for n in (n1, n2)}
    runs = {n: job_cpu(model, sets[n][0].parent, work / f"out{n}") for n in (n1, n2)}
    for n, run in runs.items():
        if run["ok"] != n:
            raise SystemExit(f"the job over {n} images wrote {run['ok']}")
    marginal = (runs[n2]["total"] - runs[n1]["total"]) / (n2 - n1)
    driver = (runs[n2]["driver"] - runs[n1]["driver"]) / (n2 - n1)
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
        ["manifest rows", f"{1000 * stages['manifest rows']:.2f}", "bulk/manifest.manifest_table"],
        ["**the pipeline's own, --engine local**", f"**{1000 * local:.2f}**", "target <= 5 ms"],
        ["for scale: the network (starry_night, batches of "
         f"{args.batch_size})", f"{1000 * stages['network']:.2f}", "the model (not the pipeline's)"],
    ]  # fmt: skip
    print(common.table(["stage", "CPU ms / image", "what"], rows))
    print(
        "\n(runs on Ray: "
        + "; ".join(f"{n}: {r['total']:.1f} CPU s in {r['wall']:.1f} s" for n, r in runs.items())
        + ")"
    )
    print()
    print_codec_ceiling(args, ray_side)
    print(f"\n(load average at end {', '.join(f'{x:.1f}' for x in os.getloadavg())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
