"""One node: the bulk job against the plain command on the same images and cores, whole processes.

    python benchmarks/bench_onenode.py                                 # 120 photos, 2000 tiny
    python benchmarks/bench_onenode.py --photos 40 --tiny 500 --rounds 2
    python benchmarks/bench_onenode.py --work /work/exp/onenode        # keep the inputs there

For each kind of input (photos of --photo-size, JPEG q90 made from the bundled photos; tiny
--tiny-size noise JPEGs), the two commands run as fresh processes, one after the other in
each round (interleaved, so the machine's load hits both alike):

- plain: `python -m stylekit stylize --model M --output OUT/ FILE...` (no Ray);
- bulk: `python jobs/stylize.py --model M --input IN --output OUT --engine local`, what the
  job's default (`--engine auto`) picks on a machine of at most 5 CPUs with no GPU and no Ray
  cluster to join: the blocks in its own process, no Ray (given explicitly here, so that a
  cluster someone runs on the machine is never joined);
- bulk on Ray: the same with `--engine ray` on a fresh local Ray (`RAY_ADDRESS=local`): the
  actor pool, as on a cluster.

Reported per run: wall seconds from the process start to its exit, images/s over that, the
first output's time (the oldest output file's mtime from the process start: the fixed cost,
imports, model, Ray start), and CPU seconds of every process of the run (its process tree,
Ray's included: polled from /proc by an environment marker). bulk / plain is the ratio of
images/s (the target: >= 0.9).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
MARKER = "STYLEKIT_BENCH_MARKER"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def make_photos(folder: Path, count: int, width: int, height: int) -> list[Path]:
    import common

    if folder.exists() and len(list(folder.glob("*.jpg"))) == count:
        return sorted(folder.glob("*.jpg"))
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    base = common.photos(min(count, 12), width, height)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        pixels = base[i % len(base)]
        if i >= len(base):  # distinct files: a little noise
            pixels = np.clip(pixels.astype(np.int16) + rng.integers(-2, 3, pixels.shape), 0, 255).astype(
                np.uint8
            )
        path = folder / f"photo{i:05d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def make_tiny(folder: Path, count: int, side: int) -> list[Path]:
    if folder.exists() and len(list(folder.glob("*.jpg"))) == count:
        return sorted(folder.glob("*.jpg"))
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    paths = []
    for i in range(count):
        path = folder / f"tiny{i:05d}.jpg"
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


class TreeCPU:
    """CPU seconds (user + system) of every process whose environment holds `marker`, polled
    from /proc; a process's last reading counts once it is gone (at most `every` s lost)."""

    def __init__(self, marker: str, every: float = 0.2):
        self.tag = f"{MARKER}={marker}".encode()
        self.every, self.seen, self._stop = every, {}, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _poll(self) -> None:
        for pid in (p for p in os.listdir("/proc") if p.isdigit()):
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    if self.tag not in f.read():
                        continue
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                self.seen[pid] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
            except OSError:
                continue

    def _run(self) -> None:
        while not self._stop.is_set():
            self._poll()
            self._stop.wait(self.every)

    def __enter__(self) -> TreeCPU:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def seconds(self) -> float:
        return sum(self.seen.values())


def run(cmd: list[str], output: Path) -> dict[str, float]:
    shutil.rmtree(output, ignore_errors=True)
    marker = secrets.token_hex(6)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_ADDRESS="local", PYTHONPATH=str(REPO), **{MARKER: marker})  # never someone's cluster
    start = time.time()
    with TreeCPU(marker) as cpu:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        wall = time.time() - start
        time.sleep(0.5)  # Ray's last processes go
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    mtimes = [
        p.stat().st_mtime for p in output.rglob("*.*") if "_manifest" not in p.parts and p.suffix == ".jpg"
    ]
    return {"wall": wall, "first": min(mtimes) - start, "cpu": cpu.seconds, "outputs": len(mtimes)}


def main() -> int:
    import common
    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=int, default=120)
    p.add_argument("--photo-size", default="512x340")
    p.add_argument("--tiny", type=int, default=2000)
    p.add_argument("--tiny-size", type=int, default=48)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--model", default="starry_night")
    p.add_argument("--work", default=None, help="folder for inputs (kept) and outputs (default: temp)")
    p.add_argument("--bulk-args", default="", help="extra flags for jobs/stylize.py")
    args = p.parse_args()
    print(common.header("One node: the bulk job against `python -m stylekit stylize`", torch.device("cpu")))
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-onenode-"))
    (pw, ph) = common.parse_sizes(args.photo_size)[0]
    kinds = []
    if args.photos:
        kinds.append(
            (
                f"{args.photos} photos {pw}x{ph}",
                make_photos(work / f"photos{args.photos}", args.photos, pw, ph),
            )
        )
    if args.tiny:
        side = args.tiny_size
        kinds.append(
            (f"{args.tiny} tiny {side}x{side}", make_tiny(work / f"tiny{args.tiny}", args.tiny, side))
        )
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    for r in range(args.rounds):
        for name, files in kinds:
            folder = files[0].parent
            plain = [sys.executable, "-m", "stylekit", "stylize", "--model", args.model]
            plain += ["--output", str(work / "out-plain"), *map(str, files)]
            bulk = [sys.executable, "jobs/stylize.py", "--model", args.model, "--input", str(folder)]
            bulk += [*args.bulk_args.split()]
            engines = [
                ("plain", plain),
                ("bulk", [*bulk, "--output", str(work / "out-bulk"), "--engine", "local"]),
                ("bulk on Ray", [*bulk, "--output", str(work / "out-bulk on Ray"), "--engine", "ray"]),
            ]
            for engine, cmd in engines if r % 2 == 0 else engines[::-1]:
                out = run(cmd, work / f"out-{engine}")
                assert out["outputs"] == len(files), (engine, out)
                results.setdefault((name, engine), []).append(out)
                print(f"# round {r} {name} {engine}: {out}", flush=True)
    rows = []
    med = statistics.median
    for name, files in kinds:
        n = len(files)
        plain = results[(name, "plain")]
        pw_ = med(x["wall"] for x in plain)
        for engine in ("plain", "bulk", "bulk on Ray"):
            runs = results[(name, engine)]
            wall = med(x["wall"] for x in runs)
            rows.append(
                [
                    name,
                    engine,
                    f"{wall:.1f}",
                    f"{n / wall:.1f}",
                    "1" if engine == "plain" else f"**{pw_ / wall:.2f}x**",
                    f"{med(x['first'] for x in runs):.1f}",
                    f"{med(x['cpu'] for x in runs):.0f}",
                ]
            )
    print()
    print(
        common.table(
            [
                "inputs",
                "command",
                "wall s",
                "images/s",
                "against plain",
                "first output s (fixed cost)",
                "CPU s",
            ],
            rows,
        )
    )
    print()
    print(
        f"(median of {args.rounds} round(s), whole processes, {os.cpu_count()} CPUs; first output: from the "
        "process start to the oldest output's mtime, the fixed cost; load average at end "
        + ", ".join(f"{x:.1f}" for x in os.getloadavg())
        + ")"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
