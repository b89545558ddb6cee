"""The GPU run: one command that spends a short GPU lease measuring, not debugging.

    python3 tools/gpu_run/gpu_run.py --out DIR                  # on a CUDA machine, 600 s in all
    python3 tools/gpu_run/gpu_run.py --out DIR --dry-run        # anywhere: tiny CPU sizes, every step
    bash tools/gpu_run/gpu_run.sh --out "$OUT"                  # the GPU machine: carried Ray first

Four parts, in order of value, each in a process of its own with a time budget; each writes
its output to DIR/<part>.log as it goes and is stopped at its budget (SIGINT, then SIGKILL),
so a run cut short keeps what it measured:

  tests  `pytest -m gpu`: every fast path against fp32 with its tolerance, on CUDA
  bench  the benchmarks' paste-ready tables at the targets' sizes (bench_train.py at 256 px,
         batch 4-64; bench_stylize.py at 1080p and 4K; bench_pipeline.py --ceiling over ~1 MP JPEGs, nvJPEG
         and Pillow), each item a process of its own, most valuable first, then a profile of
         where the GPU time goes (what bounds each figure), then extras while time remains
  train  the shipped styles at the paper's schedule (40,000 steps of batch 4 at 256 px) for
         the time left, one process per style on the one GPU, without Ray: models with
         metadata saying how far they got, packed into DIR/models.tar
  ray    Ray itself on the GPU: the training job (`stylekit.train.ray_job.run_training`) for a few
         steps with its worker checking the NCCL process group, then the bulk job's GPU actors
         over a small folder (needs Ray: tools/gpu_run/gpu_wheels.sh carries it)

DIR ends with summary.md (each target, measured value, met or missed by how much and what
bounds it; then every table), the four logs and models.tar: at most 6 files, as the GPU
machine returns 8. tools/gpu_run/README.md says how to run and read it.

This file is the runner (the parts in order, each in its process, within its budget); each part
is a module of tools/gpu_run/gpurun/ (tests_part, bench_part with profile_part, train_part,
ray_part), as are the summary (summary.py) and what they share (procs.py, setting.py).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

from gpurun.bench_part import child_bench
from gpurun.procs import GRACE, OWN_GROUP, PYTHON, child_env, kill_group, results_in, stop_at
from gpurun.profile_part import child_profile
from gpurun.ray_part import child_ray
from gpurun.setting import BENCH, REPO, carried_site, cuda_description, git_commit, ray_importable
from gpurun.summary import write_summary
from gpurun.tests_part import child_tests
from gpurun.train_part import child_train, child_train_style

PARTS = ("tests", "bench", "train", "ray")
# Seconds each part may take at most; train (None) gets what the others leave.
WANT = {"tests": 90, "bench": 260, "train": None, "ray": 110}
# Dry run: ~a minute on an idle 2-core machine; these caps (in a 780 s budget) only stop a run
# that hangs, even on a machine loaded many times over.
WANT_DRY = {"tests": 200, "bench": 300, "train": 150, "ray": 420}
MIN_PART = 15  # a part with less time than this left is skipped
RESERVE = 10  # kept at the end for the summary


# --- the parent: parts in order, each with its budget ------------------------------------


def run_part(part: str, out: Path, budget: float, dry: bool) -> dict[str, Any]:
    log = out / f"{part}.log"
    cmd = [PYTHON, str(Path(__file__).resolve()), "--child", part, "--out", str(out)]
    cmd += ["--deadline", f"{time.time() + budget - GRACE / 2:.1f}"] + (["--dry-run"] if dry else [])
    extra = [BENCH] + ([carried_site()] if part == "ray" and carried_site() else [])
    started = time.time()
    print(f"[gpu_run] {part}: up to {budget:.0f} s, log {log.name}", flush=True)
    with open(log, "w") as f:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=child_env(extra), stdout=f, stderr=subprocess.STDOUT, **OWN_GROUP
        )
        rc = stop_at(proc, started + budget)
        kill_group(proc, signal.SIGKILL)  # anything it left in its group
    seconds = time.time() - started
    status = "stopped at its budget" if rc is None else ("ok" if rc == 0 else f"failed (exit {rc})")
    print(f"[gpu_run] {part}: {status} after {seconds:.0f} s", flush=True)
    return {"status": status, "seconds": seconds, "budget": budget, "results": results_in(log)}


def plan_budget(i: int, parts: list[str], want: dict[str, int | None], end: float, ray_ok: bool) -> float:
    """This part's seconds: at most its share (all that is left for the last part and for
    train), leaving the later parts' shares (train's is 0: it takes what remains)."""
    left = end - time.time()
    later = sum(want[p] or 0 for p in parts[i + 1 :] if p != "ray" or ray_ok)
    part = parts[i]
    if want[part] is None or i == len(parts) - 1:
        return left - later
    return min(float(want[part]), left - later)  # type: ignore[arg-type]


def finish_models(out: Path) -> None:
    """DIR/models/<style>/model.safetensors -> DIR/models.tar (one file comes back, not N)."""
    folder = out / "models"
    files = sorted(folder.glob("*/model.safetensors")) if folder.is_dir() else []
    if files:
        with tarfile.open(out / "models.tar", "w") as tar:
            for f in files:
                tar.add(f, arcname=f"{f.parent.name}/model.safetensors")
    shutil.rmtree(folder, ignore_errors=True)


def parent(args: argparse.Namespace) -> int:
    started = time.time()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    parts = [p for p in args.parts.split(",") if p]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise SystemExit(f"unknown part(s) {unknown}; choose from {','.join(PARTS)}")
    parts = [p for p in PARTS if p in parts]
    for name in [*(f"{p}.log" for p in PARTS), "summary.md", "models.tar"]:
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "models", ignore_errors=True)
    gpu, device = cuda_description()
    os.environ["STYLEKIT_GPU_RUN_CUDA"] = "1" if gpu else "0"  # the children need not import torch to know
    if not gpu and not args.dry_run:
        raise SystemExit("no CUDA device: the GPU run needs one (use --dry-run to walk it on a CPU)")
    ray_ok, ray_note = ray_importable() if "ray" in parts else (False, "not asked for")
    want = dict(WANT_DRY if args.dry_run else WANT)
    end = started + args.budget - RESERVE
    run = {
        "device": device,
        "dry": args.dry_run,
        "budget": args.budget,
        "parts": list(parts),
        "ray": ray_note,
        "command": "python3 " + shlex.join([os.path.relpath(__file__, REPO), *sys.argv[1:]]),
        "started": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "commit": git_commit(),
        "records": {},
    }
    print(f"[gpu_run] {device}; {ray_note}; budget {args.budget:.0f} s", flush=True)
    lock = threading.Lock()

    def record(part: str, rec: dict[str, Any]) -> None:
        with lock:
            run["records"][part] = rec
            if part == "train":
                finish_models(out)  # models.tar as soon as there are models
            write_summary(out, run, time.time() - started)

    side_lane = None
    if args.dry_run and "ray" in parts and len(parts) > 1:
        # The dry run only shows that every step runs: the ray part, mostly Ray starting up,
        # runs beside the others rather than after them.
        parts.remove("ray")
        side_lane = threading.Thread(target=lambda: record("ray", run_part("ray", out, want["ray"], True)))  # type: ignore[arg-type]
        side_lane.start()
    for i, part in enumerate(parts):
        budget = plan_budget(i, parts, want, end, ray_ok)
        if budget < MIN_PART:
            record(
                part,
                {
                    "status": f"skipped: {max(budget, 0):.0f} s left",
                    "seconds": 0,
                    "budget": max(budget, 0),
                    "results": [],
                },
            )
        else:
            record(part, run_part(part, out, budget, args.dry_run))
    if side_lane is not None:
        side_lane.join()
    finish_models(out)
    text = write_summary(out, run, time.time() - started)
    print(text, flush=True)
    return 0


# --- entry -------------------------------------------------------------------------------


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for summary.md, the logs and models.tar")
    p.add_argument(
        "--budget", type=float, default=None, help="seconds for the whole run (default 600; dry run 780)"
    )
    p.add_argument(
        "--dry-run", action="store_true", help="tiny sizes on whatever device: walks every step in ~a minute"
    )
    p.add_argument(
        "--parts", default=",".join(PARTS), help=f"comma list of {','.join(PARTS)} (run in that order)"
    )
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--style", default=None, help=argparse.SUPPRESS)
    p.add_argument("--data", default=None, help=argparse.SUPPRESS)
    p.add_argument("--data-description", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.budget is None:
        args.budget = 780.0 if args.dry_run else 600.0
    if args.dry_run:  # one thread: on a small shared CPU, OpenMP's spinning threads crawl
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    if not args.child:
        return parent(args)
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    if args.child != "train-style":  # a stop at the deadline: cleanup through KeyboardInterrupt
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    children = {
        "tests": child_tests,
        "bench": child_bench,
        "profile": child_profile,
        "train": child_train,
        "train-style": child_train_style,
        "ray": child_ray,
    }
    print(f"[{args.child}] {platform.node()}, python {platform.python_version()}, "
          f"{max(0, (args.deadline or 0) - time.time()):.0f} s left", flush=True)  # fmt: skip
    if args.deadline is None:
        args.deadline = time.time() + 600
    return children[args.child](args)


if __name__ == "__main__":
    sys.exit(main())
