"""Does the bulk job's cost grow linearly with the night? 10^4 and 10^5 tiny images.

    python benchmarks/bench_scale.py                                  # 1000 and 4000 (quick)
    python benchmarks/bench_scale.py --sizes 10000 100000 --work /work/exp/scale

For each size N: N tiny JPEGs (--side px, made once under --work/in<N>, kept), then, each a
whole `jobs/stylize.py` process on a fresh local Ray:

1. a first run into --work/out<N>: images/s (N over the whole process), the steady rate
   (after the first output), the first output's time from the process start, the driver's
   peak memory (its maximum resident set) and the object store's peak (polled every 0.2 s
   through Ray's internal API, what `ray memory --stats-only` reports);
2. a rerun with nothing to do: its time, against the first run's;
3. a run killed part way, then rerun: --redo of the outputs are deleted, a rerun is stopped
   with SIGTERM once about half of them are back, and a last rerun finishes. Then every
   input has exactly one output, no partial (temporary) file is left, and the last run's
   manifest has every input once, ok or skipped.

The job runs through `benchmarks/bench_scale.py --child`, which calls `run_bulk` as
`jobs/stylize.py` does, with the store poller beside it; on Ray (`--engine ray`, the default:
the pool of actors, as on a cluster) or `--engine local` (no Ray: the store column is 0).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
MARKER = "STYLEKIT_BENCH_MARKER"
ENGINE = ["ray"]  # the job's --engine (main sets it from the flag)


def make_inputs(folder: Path, count: int, side: int) -> None:
    """`count` distinct tiny JPEGs in folders of 1000 (made once: kept if already there)."""
    done = folder / ".complete"
    if done.exists() and done.read_text() == f"{count} {side}":
        return
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (64, side, side, 3), dtype=np.uint8)
    for i in range(count):
        d = folder / f"d{i // 1000:03d}"
        if i % 1000 == 0:
            d.mkdir(parents=True, exist_ok=True)
        px = base[i % 64].copy()
        px[0, 0] = (i % 256, (i // 256) % 256, (i // 65536) % 256)  # no two alike
        Image.fromarray(px).save(d / f"t{i:06d}.jpg", quality=90)
    done.write_text(f"{count} {side}")


def outputs_of(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.is_file() and "_manifest" not in p.parts]


# --- the child: one run of the job, with the object store polled --------------------------------


def child(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(REPO))
    from stylekit.bulk import driver
    from stylekit.bulk.config import BulkConfig
    from stylekit.logs import setup_logging
    from stylekit.ray_env import shutdown_ray

    setup_logging()
    peak = {"store": 0}
    stop = threading.Event()

    def poll() -> None:
        import ray
        from ray._private.internal_api import get_memory_info_reply, get_state_from_address

        while not ray.is_initialized() and not stop.is_set():
            stop.wait(0.2)
        if stop.is_set():
            return
        state = get_state_from_address(ray.get_runtime_context().gcs_address)
        while not stop.is_set():
            try:
                used = get_memory_info_reply(state).store_stats.object_store_bytes_used
                peak["store"] = max(peak["store"], int(used))
            except Exception:
                pass
            stop.wait(0.2)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    config = BulkConfig(model=args.model, input=args.child[0], output=args.child[1], engine=args.engine)
    summary = driver.run_bulk(config)
    stop.set()
    thread.join(5)
    shutdown_ray()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"summary": json.loads(summary.to_json()), "store": peak["store"], "rss": rss}))
    return 0


# --- the parent -----------------------------------------------------------------------------------


def job(model: str, src: Path, out: Path) -> tuple[list[str], dict[str, str], str]:
    marker = secrets.token_hex(6)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_ADDRESS="local", PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", **{MARKER: marker})
    cmd = [sys.executable, __file__, "--model", model, "--engine", ENGINE[0], "--child", str(src), str(out)]
    return cmd, env, marker


def reap(marker: str, timeout: float = 30.0) -> None:
    """Wait for the job's Ray processes to go; stop (by pid) any left after `timeout`."""
    tag = f"{MARKER}={marker}".encode()

    def left() -> set[int]:
        found = set()
        for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    if tag in f.read():
                        found.add(pid)
            except OSError:
                continue
        return found

    deadline = time.monotonic() + timeout
    while (pids := left()) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def run_job(model: str, src: Path, out: Path) -> dict[str, object]:
    cmd, env, marker = job(model, src, out)
    t0 = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    reap(marker)
    if proc.returncode != 0:
        raise SystemExit(f"the job failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**result, "wall": wall, "start": t0}


def killed_and_rerun(model: str, src: Path, out: Path, redo: float, n: int) -> dict[str, object]:
    files = sorted(outputs_of(out))
    gone = files[:: max(1, round(1 / redo))]
    for p in gone:
        p.unlink()
    cmd, env, marker = job(model, src, out)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 3600
    back = 0
    while proc.poll() is None and time.monotonic() < deadline:
        back = sum(p.exists() for p in gone)
        if back >= len(gone) // 2:
            break
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(120)
    except subprocess.TimeoutExpired:
        proc.kill()
    reap(marker)
    back = sum(p.exists() for p in gone)
    last = run_job(model, src, out)
    made = outputs_of(out)
    names = [p.relative_to(out).as_posix() for p in made]
    partial = [p for p in names if ".tmp" in p or p.startswith(".") or "/." in p]
    summary = last["summary"]
    import pyarrow.parquet as pq

    rows = pq.read_table(summary["manifest"]).to_pylist()  # type: ignore[index]
    inputs = [r["input"] for r in rows]
    return {
        "deleted": len(gone),
        "back when killed": back,
        "rerun ok": summary["ok"],  # type: ignore[index]
        "rerun skipped": summary["skipped"],  # type: ignore[index]
        "outputs": len(set(names)),
        "exactly once": len(set(names)) == n and len(inputs) == len(set(inputs)) == n,
        "partial files": len(partial),
        "statuses": sorted({r["status"] for r in rows}),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000])
    p.add_argument("--side", type=int, default=48)
    p.add_argument("--model", default="starry_night")
    p.add_argument("--work", default=None, help="inputs (kept) and outputs; default a temp folder")
    p.add_argument("--redo", type=float, default=0.1, help="share of outputs deleted for the kill test")
    p.add_argument("--engine", default="ray", choices=["ray", "local"], help="the job's --engine")
    p.add_argument("--child", nargs=2, metavar=("IN", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    ENGINE[0] = args.engine
    import tempfile

    import ray
    import torch

    work = Path(args.work or tempfile.mkdtemp(prefix="bench-scale-"))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print("### Bulk job at scale: tiny images, whole processes\n")
    print(f"- {os.cpu_count()} CPUs, ray {ray.__version__}, torch {torch.__version__}; load at start {load}")
    print(f"- command: `python benchmarks/bench_scale.py {' '.join(sys.argv[1:])}`\n")
    rows, kills = [], []
    for n in args.sizes:
        src, out = work / f"in{n}", work / f"out{n}"
        make_inputs(src, n, args.side)
        subprocess.run(["rm", "-rf", str(out)], check=True)
        first = run_job(args.model, src, out)
        stamps = [p.stat().st_mtime for p in outputs_of(out)]
        assert len(stamps) == n, (len(stamps), n)
        first_out = min(stamps) - float(first["start"])  # type: ignore[arg-type]
        wall = float(first["wall"])  # type: ignore[arg-type]
        again = run_job(args.model, src, out)
        assert again["summary"]["skipped"] == n, again["summary"]  # type: ignore[index]
        kill = killed_and_rerun(args.model, src, out, args.redo, n)
        rows.append(
            {
                "n": n,
                "wall": wall,
                "rate": n / wall,
                "steady": n / max(wall - first_out, 1e-9),
                "first": first_out,
                "rss": int(first["rss"]) / 2**20,  # type: ignore[arg-type]
                "store": int(first["store"]) / 2**20,  # type: ignore[arg-type]
                "rerun": float(again["wall"]),  # type: ignore[arg-type]
            }
        )
        kills.append((n, kill))
        print(f"# {rows[-1]} {kill}", flush=True)
    print(
        "| inputs | whole run s | images/s | steady images/s | first output s | driver peak MB | object store peak MiB | rerun, nothing to do s | rerun / first |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['n']:,} | {r['wall']:.0f} | {r['rate']:.1f} | {r['steady']:.1f} | {r['first']:.1f} "
            f"| {r['rss']:.0f} | {r['store']:.1f} | {r['rerun']:.1f} | {100 * r['rerun'] / r['wall']:.1f}% |"
        )
    if len(rows) > 1:
        print(
            f"\nimages/s at {rows[-1]['n']:,} / at {rows[0]['n']:,}: {rows[-1]['rate'] / rows[0]['rate']:.2f}x"
        )
    print(
        "\n| inputs | outputs deleted | back when killed (SIGTERM) | last rerun: ok / skipped | outputs | each exactly once | partial files |"
    )
    print("|---:|---:|---:|---:|---:|---|---:|")
    for n, k in kills:
        print(
            f"| {n:,} | {k['deleted']:,} | {k['back when killed']:,} | {k['rerun ok']:,} / {k['rerun skipped']:,} "
            f"| {k['outputs']:,} | {'yes' if k['exactly once'] else 'NO'} | {k['partial files']} |"
        )
    print(f"\n(load average at end {', '.join(f'{x:.1f}' for x in os.getloadavg())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
