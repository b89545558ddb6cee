"""The train part: the shipped styles at the paper's schedule for the time left, one process per
style on the one GPU, without Ray (each is train_style.py); models with metadata saying how far
they got."""

from __future__ import annotations

import argparse
import signal
import subprocess
import time
from pathlib import Path

from gpurun.procs import GRACE, PYTHON, RUNNER, child_env, emit
from gpurun.setting import (
    EXAMPLES,
    REPO,
    cuda_here,
    training_data,
)

MIN_TRAIN = 45  # seconds a training process needs to be worth starting
# jobs/ship_models.py's default: the shipped styles
TRAIN_STYLES = ("starry_night", "wave", "the_scream", "composition_vii", "udnie", "shipwreck")


def child_train(args: argparse.Namespace) -> int:
    """One process per style, all on the one GPU (at batch 4 a single process leaves it
    mostly idle), each stopping at the deadline with its model saved."""
    gpu = cuda_here()
    styles = list(TRAIN_STYLES[:1] if args.dry_run else TRAIN_STYLES)
    data, description = training_data()
    if args.dry_run:
        data, description = str(EXAMPLES / "content"), "the 5 bundled example photos (dry run)"
    left = args.deadline - time.time()
    if left < MIN_TRAIN and not args.dry_run:
        emit(kind="train", status=f"skipped: {left:.0f} s left, a style needs {MIN_TRAIN}")
        return 0
    print(
        f"training {', '.join(styles)} on {data} ({description}), {'GPU' if gpu else 'CPU'}, {left:.0f} s",
        flush=True,
    )
    (Path(args.out) / "models").mkdir(parents=True, exist_ok=True)
    env = child_env()
    procs: list[subprocess.Popen] = []
    try:
        for style in styles:
            cmd = [PYTHON, str(RUNNER), "--child", "train-style", "--style", style, "--out", args.out,
                   "--deadline", str(args.deadline), "--data", data, "--data-description", description]  # fmt: skip
            # In this process's group: a stop of the part reaches them (they save, then exit).
            procs.append(subprocess.Popen(cmd + (["--dry-run"] if args.dry_run else []), cwd=REPO, env=env))
            if not gpu:  # on a CPU, one at a time
                procs[-1].wait(timeout=max(1.0, args.deadline + 3 - time.time()))
        for proc in procs:
            proc.wait(timeout=max(1.0, args.deadline + 3 - time.time()))
    except (KeyboardInterrupt, subprocess.TimeoutExpired):
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        end = time.time() + GRACE - 4
        for proc in procs:
            try:
                proc.wait(timeout=max(0.5, end - time.time()))
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0 if all(proc.poll() == 0 for proc in procs) else 1


def child_train_style(args: argparse.Namespace) -> int:
    """One style's process (tools/gpu_run/gpurun/train_style.py: torch and stylekit load there)."""
    from gpurun.train_style import train_style

    return train_style(args)
