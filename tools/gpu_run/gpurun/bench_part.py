"""The bench part: the benchmarks' paste-ready tables at the targets' sizes, each item a process
of its own, most valuable first, then the profile (profile_part.py), then extras while time remains."""

from __future__ import annotations

import argparse
import time

from gpurun.procs import PYTHON, RUNNER, child_env, emit, tee
from gpurun.setting import BENCH, cuda_here

DRY_CAP = 150  # a dry-run benchmark item's cap: seconds idle, minutes on a loaded machine


def bench_items(dry: bool, gpu: bool, out: str) -> list[tuple[str, str, list[str], float]]:
    """(name, kind, command, cap in seconds), most valuable first."""
    t, s = "benchmarks/bench_train.py", "benchmarks/bench_stylize.py"
    b = ["benchmarks/bench_pipeline.py", "--ceiling"]  # the stages in one process, no Ray
    codec = ["benchmarks/bench_pipeline.py", "--codec-only"]  # decode + encode CPU per 1 MP JPEG
    me = [str(RUNNER), "--child", "profile", "--out", out]
    if dry:
        return [
            ("train 32 px, batch 2", "train", [t, "--batch-sizes", "2", "--image-size", "32", "--variants", "auto",
                                               "--warmup", "0", "--repeat", "1"], DRY_CAP),
            ("stylize 64x48", "stylize", [s, "--sizes", "64x48", "--batches", "1", "--variants", "auto",
                                          "--warmup", "1", "--repeat", "1"], DRY_CAP),
            ("bulk stages, Pillow, 1 photo", "bulk", [*b, "--count", "1", "--batch-size", "1", "--codec-threads", "2"],
             DRY_CAP),
            *([("bulk stages, nvJPEG, 1 photo", "bulk", [*b, "--codec", "nvjpeg", "--count", "1", "--batch-size", "1"],
                DRY_CAP)] if gpu else []),
            ("codec ceiling, 64x48", "codec", [*codec, "--codec-count", "1", "--codec-size", "64x48"], DRY_CAP),
            ("profile", "profile", [*me, "--dry-run"], DRY_CAP),
        ]  # fmt: skip

    def train(batch: int, variants: str = "auto,cl", cap: float = 60) -> tuple[str, str, list[str], float]:
        cmd = [
            t,
            "--batch-sizes",
            str(batch),
            "--image-size",
            "256",
            "--variants",
            variants,
            "--warmup",
            "3",
            "--repeat",
            "10",
        ]
        return (f"train 256 px, batch {batch}, {variants}", "train", cmd, cap)

    def stylize(size: str, batches: str, variants: str, cap: float) -> tuple[str, str, list[str], float]:
        cmd = [
            s,
            "--sizes",
            size,
            "--batches",
            batches,
            "--variants",
            variants,
            "--warmup",
            "3",
            "--repeat",
            "10",
        ]
        return (f"stylize {size}, batches {batches}, {variants}", "stylize", cmd, cap)

    bulk = [*b, "--count", "2000", "--batch-size", "16"]
    return [
        train(64),
        train(4),
        stylize("1920x1080", "1,4,8,16", "auto,fp16", 70),
        stylize("3840x2160", "1,2,4,8", "auto,fp16", 80),
        ("bulk stages, nvJPEG, 2000 photos", "bulk", [*bulk, "--codec", "nvjpeg"], 100),
        ("codec ceiling per CPU, ~1 MP JPEGs (Pillow)", "codec", [*codec, "--codec-count", "24"], 40),
        ("profile", "profile", me, 60),
        train(16),
        train(32),
        train(8),
        ("bulk stages, Pillow, 2000 photos", "bulk", bulk, 100),
        train(64, "compile,cat", 180),
        stylize("1920x1080", "8,16", "compile,graphs,nofast", 180),
        stylize("3840x2160", "4,8", "compile", 150),
    ]


def split_output(text: str) -> tuple[str, list[str], str]:
    """A benchmark's stdout -> (its header block, its markdown table lines, the notes after)."""
    lines = text.splitlines()
    header = [ln for ln in lines if ln.startswith("### ") or ln.startswith("- ")]
    table = [ln for ln in lines if ln.startswith("|")]
    notes = [ln for ln in lines if ln.startswith("(") or ln.startswith("CPU:")]
    return "\n".join(header), table, "\n".join(notes)


def child_bench(args: argparse.Namespace) -> int:
    gpu = cuda_here()
    env = child_env([BENCH])
    for name, kind, cmd, cap in bench_items(args.dry_run, gpu, args.out):
        left = args.deadline - time.time() - 2
        if left < min(20.0, cap):
            emit(kind="bench", bench=kind, item=name, status=f"skipped: {max(left, 0):.0f} s left")
            continue
        rc, text = tee([PYTHON, *cmd], min(cap, left), env)
        status = "ok" if rc == 0 else ("stopped at its time cap" if rc is None else f"failed (exit {rc})")
        if kind == "profile":
            emit(kind="bench", bench=kind, item=name, status=status)
            continue
        header, table, notes = split_output(text)
        tail = "" if rc == 0 else "\n".join(text.strip().splitlines()[-6:])
        emit(
            kind="bench",
            bench=kind,
            item=name,
            status=status,
            header=header,
            table=table,
            notes=notes,
            tail=tail,
        )
    return 0
