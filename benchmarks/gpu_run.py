"""The GPU run: one command that spends a short GPU lease measuring, not debugging.

    python3 benchmarks/gpu_run.py --out DIR                  # on a CUDA machine, 600 s in all
    python3 benchmarks/gpu_run.py --out DIR --dry-run        # anywhere: tiny CPU sizes, every step
    bash benchmarks/gpu_run.sh --out "$OUT"                  # the GPU machine: carried Ray first

Four parts, in order of value, each in a process of its own with a time budget; each writes
its output to DIR/<part>.log as it goes and is stopped at its budget (SIGINT, then SIGKILL),
so a run cut short keeps what it measured:

  tests  `pytest -m gpu`: every fast path against fp32 with its tolerance, on CUDA
  bench  the benchmarks' paste-ready tables at the targets' sizes (bench_train.py at 256 px,
         batch 4-64; bench_stylize.py at 1080p and 4K; bench_bulk.py over ~1 MP JPEGs, nvJPEG
         and Pillow), each item a process of its own, most valuable first, then a profile of
         where the GPU time goes (what bounds each figure), then extras while time remains
  train  the shipped styles at the paper's schedule (40,000 steps of batch 4 at 256 px) for
         the time left, one process per style on the one GPU, without Ray: models with
         metadata saying how far they got, packed into DIR/models.tar
  ray    Ray itself on the GPU: the training job (`stylekit.train.job.run_training`) for a few
         steps with its worker checking the NCCL process group, then the bulk job's GPU actors
         over a small folder (needs Ray: benchmarks/gpu_wheels.sh carries it)

DIR ends with summary.md (each target, measured value, met or missed by how much and what
bounds it; then every table), the four logs and models.tar: at most 6 files, as the GPU
machine returns 8. benchmarks/README.md ("The GPU run") says how to run and read it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import json
import logging
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
PYTHON = sys.executable
CARRY = Path(os.environ.get("STYLEKIT_CARRY", "/var/tmp/stylekit-carry")).absolute()  # gpu_wheels.sh install
SHARED_TRAIN = REPO.parent / "shared" / "data" / "train-mini"
TRAIN_MINI = "train-mini: 148 photos (colour BSD68 + Sun-Hays 80), a small stand-in for the paper's MS-COCO"
EXAMPLES = REPO / "stylekit" / "examples"
PARTS = ("tests", "bench", "train", "ray")
# Seconds each part may take at most; train (None) gets what the others leave.
WANT = {"tests": 90, "bench": 260, "train": None, "ray": 110}
# Dry run: ~a minute on an idle 2-core machine; these caps (in a 780 s budget) only stop a run
# that hangs, even on a machine loaded many times over.
WANT_DRY = {"tests": 200, "bench": 300, "train": 150, "ray": 420}
MIN_PART = 15  # a part with less time than this left is skipped
DRY_CAP = 150  # a dry-run benchmark item's cap: seconds idle, minutes on a loaded machine
RESERVE = 10  # kept at the end for the summary
GRACE = 12  # from SIGINT at a deadline to SIGKILL
RESULT = "@@result "
PAPER_STEPS, PAPER_BATCH, PAPER_SIDE, PAPER_STYLE_SIZE = 40_000, 4, 256, 256
MIN_TRAIN = 45  # seconds a training process needs to be worth starting
TRAIN_STYLES = ("starry_night", "wave", "the_scream", "composition_vii")  # jobs/ship_models.py's default


# --- small helpers -----------------------------------------------------------------------


def emit(**fields: Any) -> None:
    """One machine-readable result line in the part's log (the summary is built from these)."""
    print(RESULT + json.dumps(fields, default=str), flush=True)


def results_in(log: Path) -> list[dict[str, Any]]:
    found = []
    if log.is_file():
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith(RESULT):
                with contextlib.suppress(ValueError):
                    found.append(json.loads(line[len(RESULT) :]))
    return found


# Each child leads a process group of its own (same session: the GPU machine ends what is left
# when the command returns), so a stop reaches everything it started.
OWN_GROUP: dict[str, Any] = (
    {"process_group": 0} if sys.version_info >= (3, 11) else {"preexec_fn": os.setpgrp}
)


def kill_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def stop_at(proc: subprocess.Popen, deadline: float, grace: float = GRACE) -> int | None:
    """Wait for `proc` until `deadline`; then SIGINT its process group, SIGKILL after `grace`.
    Returns its exit code, or None when it had to be stopped."""
    try:
        return proc.wait(timeout=max(0.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
        pass
    except KeyboardInterrupt:  # we are being stopped: so is what we started
        kill_group(proc, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=min(grace, GRACE / 2))
        kill_group(proc, signal.SIGKILL)
        raise
    print(f"[gpu_run] budget reached: stopping pid {proc.pid}", flush=True)
    kill_group(proc, signal.SIGINT)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        kill_group(proc, signal.SIGKILL)
        proc.wait()
    return None


def tee(cmd: list[str], seconds: float, env: dict[str, str] | None = None) -> tuple[int | None, str]:
    """Run `cmd` in its own process group, echoing its output to ours; stop it after `seconds`.
    Returns (exit code or None if stopped, its output)."""
    print(f"$ {shlex.join(cmd)}   # at most {seconds:.0f} s", flush=True)
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        errors="replace", bufsize=1, **OWN_GROUP,
    )  # fmt: skip
    lines: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            sys.stdout.write(line)
            sys.stdout.flush()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    rc = stop_at(proc, time.time() + seconds, grace=5)  # within its part's own grace
    reader.join(timeout=5)
    return rc, "".join(lines)


def child_env(extra_path: list[Path] | None = None) -> dict[str, str]:
    """Children import this checkout's stylekit (it is not installed on the GPU machine)."""
    env = dict(os.environ)
    paths = [str(REPO), *(str(p) for p in extra_path or [])]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("BENCH_DATE", datetime.date.today().isoformat())
    env.setdefault("PYTHONWARNINGS", "ignore")
    return env


def carried_site() -> Path | None:
    """The carried Ray's folder, when it is there and built for this Python."""
    site = CARRY / "site"
    tags = " ".join(w.read_text() for w in site.glob("ray-*.dist-info/WHEEL"))  # "Tag: cp312-cp312-..."
    return site if f"cp{sys.version_info.major}{sys.version_info.minor}-" in tags else None


def ray_importable() -> tuple[bool, str]:
    """Whether Ray is there for the ray part (installed, or carried: benchmarks/gpu_wheels.sh),
    by its metadata (importing it costs seconds; the part itself reports a failing import)."""
    import importlib.metadata as md

    site = carried_site()
    found = [
        d.version
        for d in md.distributions(path=[str(p) for p in [site] if p] + sys.path)
        if d.metadata["Name"] == "ray"
    ]
    if found:
        return True, f"Ray {found[0]} ({f'carried, {site}' if site else 'installed'})"
    return False, "Ray not installed and not carried (benchmarks/gpu_wheels.sh): the ray part will be skipped"


def cuda_here() -> bool:
    """Whether there is a CUDA device; children learn it from the parent (importing torch costs seconds)."""
    known = os.environ.get("STYLEKIT_GPU_RUN_CUDA")
    if known is not None:
        return known == "1"
    import torch

    return torch.cuda.is_available()


def training_data() -> tuple[str, str]:
    """(folder, description) of the training photos: carried, the shared train-mini, or the
    bundled examples, in that order."""
    carried = CARRY / "train-data"
    if carried.is_dir() and any(carried.iterdir()):
        note = carried / "SOURCE.txt"
        return str(carried), note.read_text().strip() if note.is_file() else f"photos carried in {carried}"
    if SHARED_TRAIN.is_dir():
        return str(SHARED_TRAIN), TRAIN_MINI
    return str(
        EXAMPLES / "content"
    ), "the 5 bundled example photos (stylekit/examples/content): none were carried"


def cuda_description() -> tuple[bool, str]:
    import torch

    if not torch.cuda.is_available():
        return False, f"CPU ({os.cpu_count()} cores), torch {torch.__version__}"
    p = torch.cuda.get_device_properties(0)
    return True, (
        f"{p.name} ({p.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}, torch {torch.__version__}, "
        f"{os.cpu_count()} CPU cores"
    )


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


def git_commit() -> str:
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        )
        return proc.stdout.strip() or "?"
    except OSError:
        return "?"


# --- child: tests --------------------------------------------------------------------------


def child_tests(args: argparse.Namespace) -> int:
    """`pytest -m gpu` over the test files that have GPU tests (other test files import Ray,
    which the GPU machine may not have); on the dry run also one tiny CPU check."""
    files = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_*.py")
                   if "mark.gpu" in p.read_text())  # fmt: skip
    if not files:
        emit(kind="tests", status="no test file has a gpu mark", passed=0, failed=0, skipped=0, cases=[])
        return 1
    runs = [("gpu", ["-m", "gpu", *files])]
    if args.dry_run:  # one pytest (each costs seconds to start): the GPU tests by name, and one CPU check
        runs = [
            ("gpu (by name) + a CPU check", ["-k", "cuda or test_subpixel_upsample_conv_is_exact", *files])
        ]
    worst = 0
    for name, selection in runs:
        left = args.deadline - time.time() - 3
        cmd = [
            PYTHON,
            "-m",
            "pytest",
            "-v",
            "-rfE",
            "-p",
            "no:cacheprovider",
        ]
        if importlib.util.find_spec("pytest_timeout"):  # on the GPU image; a hung test then fails alone
            cmd.append(f"--timeout={max(10, int(left))}")
        rc, text = tee([*cmd, *selection], left, child_env())
        # -v prints each test's result as it ends (kept if the run is cut off); -rfE adds why a test failed
        cases: dict[str, list[str]] = {}
        for test, status, why in re.findall(
            r"^(\S+::\S+) (PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)(?: \((.*?)\))?\s+\[", text, re.M
        ):
            cases[test] = [status, why]
        for status, test, why in re.findall(r"^(FAILED|ERROR) (\S+::\S+)(?: - (.*))?$", text, re.M):
            cases[test] = [status, why]
        counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", text)}
        final = [
            ln
            for ln in text.splitlines()
            if re.match(r"^=+ .*(passed|failed|skipped|error|no tests).* =+$", ln)
        ]
        emit(
            kind="tests", run=name, rc=rc, line=final[-1].strip("= ") if final else "no pytest summary (cut off?)",
            passed=sum(c[0] == "PASSED" for c in cases.values()), failed=sum(c[0] in ("FAILED", "ERROR") for c in cases.values()),
            skipped=sum(c[0] == "SKIPPED" for c in cases.values()), deselected=counts.get("deselected", 0),
            cases=[[st, t.split("::", 1)[-1], (why or "")[:160]] for t, (st, why) in cases.items()],
        )  # fmt: skip
        worst = worst or (1 if rc is None else rc)
    return worst


# --- child: bench --------------------------------------------------------------------------


def bench_items(dry: bool, gpu: bool, out: str) -> list[tuple[str, str, list[str], float]]:
    """(name, kind, command, cap in seconds), most valuable first."""
    t, s, b = "benchmarks/bench_train.py", "benchmarks/bench_stylize.py", "benchmarks/bench_bulk.py"
    codec = ["benchmarks/bench_pipeline.py", "--codec-only"]  # decode + encode CPU per 1 MP JPEG
    me = [str(Path(__file__).resolve()), "--child", "profile", "--out", out]
    if dry:
        return [
            ("train 32 px, batch 2", "train", [t, "--batch-sizes", "2", "--image-size", "32", "--variants", "auto",
                                               "--warmup", "0", "--repeat", "1"], DRY_CAP),
            ("stylize 64x48", "stylize", [s, "--sizes", "64x48", "--batches", "1", "--variants", "auto",
                                          "--warmup", "1", "--repeat", "1"], DRY_CAP),
            ("bulk, local, Pillow, 1 photo", "bulk", [b, "--engine", "local", "--count", "1", "--batch-size", "1",
                                                      "--codec-threads", "2"], DRY_CAP),
            *([("bulk, local, nvJPEG, 1 photo", "bulk", [b, "--engine", "local", "--codec", "nvjpeg", "--count", "1",
                                                         "--batch-size", "1"], DRY_CAP)] if gpu else []),
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

    bulk = [b, "--engine", "local", "--count", "2000", "--batch-size", "16"]
    return [
        train(64),
        train(4),
        stylize("1920x1080", "1,4,8,16", "auto,fp16", 70),
        stylize("3840x2160", "1,2,4,8", "auto,fp16", 80),
        ("bulk, local, nvJPEG, 2000 photos", "bulk", [*bulk, "--codec", "nvjpeg"], 100),
        ("codec ceiling per CPU, ~1 MP JPEGs (Pillow)", "codec", [*codec, "--codec-count", "24"], 40),
        ("profile", "profile", me, 60),
        train(16),
        train(32),
        train(8),
        ("bulk, local, Pillow, 2000 photos", "bulk", bulk, 100),
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


# --- child: profile (what bounds the figures) ---------------------------------------------


def count_flops() -> dict[str, Any]:
    """FLOPs per image, counted on the meta device (no memory, no time): a stylekit and a
    reference training step at 256 px, and a forward pass at 1080p and 4K."""
    import reference
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode
    from torchvision.models import vgg16

    from stylekit.infer.fastpath import FastTransformer
    from stylekit.nn.loss import PerceptualLoss
    from stylekit.nn.model import TransformerNet
    from stylekit.nn.vgg import load_vgg

    meta, side = torch.device("meta"), PAPER_SIDE

    def counted(fn: Any) -> float:
        with FlopCounterMode(display=False) as fc:
            fn()
        return float(fc.get_total_flops())

    x = torch.empty(1, 3, side, side, device=meta)
    net = TransformerNet().to(meta).train()
    loss = PerceptualLoss(
        load_vgg("random", seed=0).to(meta), x, 1.0, 1.0, 1.0
    )  # style Grams: once, not counted
    ref_net = reference.RefTransformerNet().to(meta).train()
    with meta:  # torchvision's VGG-16 is 138M parameters: built on the meta device, its init costs nothing
        ref_vgg = reference.RefVgg16(vgg16(weights=None).features)

    def stylekit_step() -> None:
        loss(net(x), x).total.backward()

    def reference_step() -> None:  # reference.ReferenceTrainer.step's work (Adam aside)
        fy, fx = ref_vgg(reference.normalize_batch(ref_net(x))), ref_vgg(reference.normalize_batch(x.clone()))
        total = F.mse_loss(fy.relu2_2, fx.relu2_2)
        for f in fy:
            g = reference.gram_matrix(f)
            total = total + F.mse_loss(g, torch.zeros_like(g))
        total.backward()

    flops: dict[str, Any] = {
        "train": counted(stylekit_step),
        "train_ref": counted(reference_step),
        "stylize": {},
        "stylize_ref": {},
    }
    with torch.no_grad():
        for w, h in ((1920, 1080), (3840, 2160)):
            x = torch.empty(1, 3, h, w, device=meta)
            fast = FastTransformer(TransformerNet(), nnpack=False).to(meta)
            flops["stylize"][f"{w}x{h}"] = counted(lambda x=x, fast=fast: fast(x))
            flops["stylize_ref"][f"{w}x{h}"] = counted(lambda x=x: reference.RefTransformerNet().to(meta)(x))
    return flops


def measure_roofs(device: Any, dry: bool) -> dict[str, float]:
    """What this machine does at best: a bf16 (CPU: fp32) matmul's TFLOP/s, device copy and
    host-to-device / device-to-host bandwidth in GB/s."""
    import torch

    gpu = device.type == "cuda"
    n = 8192 if gpu and not dry else 512
    dtype = torch.bfloat16 if gpu else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)

    def timed(fn: Any, reps: int) -> float:
        fn()
        if gpu:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        if gpu:
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) / reps

    roofs = {"matmul_tflops": 2 * n**3 / timed(lambda: a @ b, 10) / 1e12}
    size = (1 << 30) if gpu and not dry else (16 << 20)
    src = torch.empty(size, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    roofs["device_copy_gbps"] = 2 * size / timed(lambda: dst.copy_(src), 5) / 1e9  # bytes read + written
    if gpu:
        host = torch.empty(size // 4, dtype=torch.uint8).pin_memory()
        dev = torch.empty(size // 4, dtype=torch.uint8, device=device)
        roofs["h2d_gbps"] = host.numel() / timed(lambda: dev.copy_(host, non_blocking=True), 5) / 1e9
        roofs["d2h_gbps"] = host.numel() / timed(lambda: host.copy_(dev, non_blocking=True), 5) / 1e9
    return roofs


def kernel_category(name: str) -> str:
    n = name.lower()
    if "memcpy" in n or "memset" in n:
        return "memcpy"
    if "norm" in n or "welford" in n:
        return "norm"
    conv = ("conv", "gemm", "xmma", "cutlass", "wgrad", "dgrad", "fprop", "winograd", "implicit", "cudnn",
            "nnpack", "mkldnn", "aten::mm", "aten::bmm", "aten::addmm", "sm80_", "sm90_")  # fmt: skip
    if any(k in n for k in conv):
        return "conv/GEMM"
    if "nchw" in n or "nhwc" in n or "transpose" in n:
        return "layout"
    if "multi_tensor" in n or "adam" in n:
        return "optimizer"
    if "reduce" in n:
        return "reduce"
    return "elementwise/other"


def profiled(fn: Any, device: Any, reps: int) -> dict[str, Any]:
    """Where the time of `reps` calls of fn goes: the share of kernel (CPU: op) time per
    category, the top kernels, and (GPU) how busy the GPU was over the wall time."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    gpu = device.type == "cuda"
    for _ in range(2):
        fn()
    if gpu:
        torch.cuda.synchronize()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
    with profile(activities=acts) as prof:
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        if gpu:
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    want = torch.autograd.DeviceType.CUDA if gpu else torch.autograd.DeviceType.CPU
    times: dict[str, float] = {}
    for e in prof.key_averages():
        if e.device_type != want or (not gpu and not e.key.startswith("aten::")):
            continue
        us = getattr(e, "self_device_time_total", 0) if gpu else e.self_cpu_time_total
        if not gpu and us == 0:
            continue
        times[e.key] = times.get(e.key, 0.0) + float(us)
    total = sum(times.values()) or 1.0
    shares: dict[str, float] = {}
    for k, us in times.items():
        cat = kernel_category(k)
        shares[cat] = shares.get(cat, 0.0) + us / total
    top = sorted(times.items(), key=lambda kv: -kv[1])[:6]
    return {
        "wall_ms": 1000 * wall / reps,
        "kernel_ms": total / 1000 / reps,
        "busy": min(1.0, total / 1e6 / wall) if gpu else None,
        "shares": dict(sorted(shares.items(), key=lambda kv: -kv[1])),
        "top": [[k[:90], round(us / 1000 / reps, 3)] for k, us in top],
    }


def child_profile(args: argparse.Namespace) -> int:
    import common
    import numpy as np
    import torch

    from stylekit.infer.inference import InferenceOptions, Stylizer
    from stylekit.nn.loss import PerceptualLoss
    from stylekit.nn.vgg import load_vgg
    from stylekit.train.steps import train_step

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpu = device.type == "cuda"
    emit(kind="flops", **count_flops())
    emit(kind="roofs", **measure_roofs(device, args.dry_run))
    torch.backends.cudnn.benchmark = True
    batch, side = (2, 32) if args.dry_run or not gpu else (64, PAPER_SIDE)
    model = common.calibrated_model(0)
    net = model.to(device).train()
    style = torch.from_numpy(np.stack(common.photos(1, side, side))).permute(0, 3, 1, 2).float().to(device)
    loss = PerceptualLoss(load_vgg("random", seed=0).to(device), style, 1e5, 1e10, 10.0).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    pixels = torch.from_numpy(np.stack(common.photos(batch, side, side))).to(device)
    dtype = torch.bfloat16 if gpu else torch.float32
    result = profiled(lambda: train_step(net, loss, opt, pixels, dtype), device, 3 if gpu else 1)
    emit(kind="profile", what="train", batch=batch, side=side, path="auto", **result)
    (w, h), b = ((64, 48), 1) if args.dry_run or not gpu else ((1920, 1080), 8)
    stylizer = Stylizer(common.calibrated_model(0), InferenceOptions(device=str(device), max_batch=b))
    host = torch.from_numpy(np.stack(common.photos(b, w, h)))
    host = host.pin_memory() if gpu else host
    result = profiled(lambda: stylizer.forward(host), device, 3 if gpu else 1)
    emit(kind="profile", what="stylize", batch=b, size=f"{w}x{h}", path=stylizer.plan.describe(), **result)
    return 0


# --- child: train (the shipped styles, no Ray) --------------------------------------------


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
            cmd = [PYTHON, str(Path(__file__).resolve()), "--child", "train-style", "--style", style, "--out", args.out,
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
    import numpy as np
    import torch

    from stylekit.files import images
    from stylekit.nn.modelio import save_model
    from stylekit.train import training
    from stylekit.train.config import TrainConfig
    from stylekit.train.metadata import model_metadata
    from stylekit.train.steps import train_step

    stop = {"now": False}

    def on_signal(signum: int, frame: Any) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dry = args.dry_run
    side, style_size, batch = (32, 64, 2) if dry else (PAPER_SIDE, PAPER_STYLE_SIZE, PAPER_BATCH)
    steps = 2 if dry else PAPER_STEPS
    config = TrainConfig(
        style=str(EXAMPLES / "styles" / f"{args.style}.jpg"), data=args.data, data_description=args.data_description,
        output=tempfile.mkdtemp(prefix="gpu-run-train-"), name=args.style, max_steps=steps, batch_size=batch,
        image_size=side, style_size=style_size, vgg_weights="caffe", precision="auto",
    )  # fmt: skip
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the job's workers do
    state = training.new_state(config, device)
    loss_fn = training.build_loss(config, device)
    dtype = training.resolve_dtype(config.precision, device)
    files = sorted(
        p for p in Path(args.data).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp")
    )
    crops = []
    for p in files[:20_000]:
        try:
            crops.append(images.resize_crop(images.decode(p.read_bytes()), side))
        except Exception as e:
            print(f"{args.style}: skipping {p.name}: {e}", flush=True)
    data = torch.from_numpy(np.stack(crops)).to(device)  # the whole (small) set, on the device
    gen = torch.Generator().manual_seed(config.seed)
    order, pos = torch.randperm(len(data), generator=gen), 0
    out = Path(args.out) / "models" / args.style / "model.safetensors"
    out.parent.mkdir(parents=True, exist_ok=True)
    window, acc, recent = 50, torch.zeros(3, device=device), None
    gpu_name = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    )

    def save(step: int, seconds: float, why: str) -> None:
        meta = model_metadata(config, step, loss_fn.vgg.source, recent)
        meta.update({
            "trained_with": "benchmarks/gpu_run.py (train part): stylekit.train.steps.train_step in a Ray-free loop, "
                            "the training crops held on the device, shuffled each epoch",
            "device": gpu_name,
            "precision": "bf16 autocast" if dtype == torch.bfloat16 else "fp32",
            "schedule": f"the paper's: {PAPER_STEPS} steps of batch {PAPER_BATCH} at {PAPER_SIDE} px; "
                        f"this run did {step} ({100 * step / PAPER_STEPS:.1f}%) in {seconds:.0f} s ({why})",
            "training_seconds": f"{seconds:.1f}",
            "images_per_s": f"{step * config.batch_size / max(seconds, 1e-9):.1f}",
            "stored_dtype": "float16",
        })  # fmt: skip
        tmp = out.with_suffix(".tmp")
        save_model(str(tmp), state.model, meta, dtype=torch.float16)
        os.replace(tmp, out)

    weight_at = getattr(training, "style_weight_at", None)
    print(f"{args.style}: {len(data)} crops of {side} px on {device}; up to {steps} steps", flush=True)
    t0 = last_save = last_log = time.time()
    step, why = 0, "finished"
    while step < steps:
        if stop["now"] or time.time() > args.deadline - 4:
            why = "stopped by the time budget"
            break
        if pos + batch > len(data):
            order, pos = torch.randperm(len(data), generator=gen), 0
        idx = (
            order[pos : pos + batch]
            if len(data) >= batch
            else torch.randint(len(data), (batch,), generator=gen)
        )
        pos += batch
        if weight_at is not None:  # the job's schedule of the style weight, where it has one
            loss_fn.style_weight = weight_at(config, step)
        terms = train_step(state.model, loss_fn, state.optimizer, data[idx.to(device)], dtype)
        acc += torch.stack([terms.content, terms.style, terms.tv]).float()
        step += 1
        if step % window == 0 or step == steps:
            n = window if step % window == 0 else step % window
            c, s_, tv = (acc / n).tolist()
            recent = {"loss": c + s_ + tv, "content": c, "style": s_, "tv": tv}
            acc.zero_()
            now = time.time()
            if now - last_log > 15 or step == steps:
                print(
                    f"{args.style}: step {step}  {step * batch / (now - t0):.0f} img/s  loss {recent['loss']:.4g}",
                    flush=True,
                )
                last_log = now
            if now - last_save > 60:
                save(step, now - t0, "checkpoint during the run")
                last_save = now
    if recent is None and step:
        c, s_, tv = (acc / step).tolist()
        recent = {"loss": c + s_ + tv, "content": c, "style": s_, "tv": tv}
    seconds = time.time() - t0
    save(step, seconds, why)
    emit(kind="train", style=args.style, steps=step, seconds=round(seconds, 1),
         images_per_s=round(step * batch / max(seconds, 1e-9), 1), loss=recent, why=why,
         file=f"models.tar: {args.style}/model.safetensors", data=args.data_description)  # fmt: skip
    return 0


# --- child: ray (the jobs themselves on the GPU) ------------------------------------------


def nccl_checked_loop(probe_file: str) -> Any:
    """The training job's own per-worker loop, after checking the process group Ray Train set
    up: its backend (nccl on GPUs, gloo on CPUs), and one all_reduce through it."""

    def loop(loop_config: dict[str, Any]) -> None:
        import ray.train.torch
        import torch
        import torch.distributed as dist

        from stylekit.train import job

        device = ray.train.torch.get_device()
        info: dict[str, Any] = {"initialized": dist.is_initialized(), "device": str(device)}
        if dist.is_initialized():
            t = torch.ones(1, device=device)
            t0 = time.perf_counter()
            dist.all_reduce(t)
            info.update(backend=str(dist.get_backend()), world=dist.get_world_size(), all_reduce=float(t.item()),
                        all_reduce_ms=round(1000 * (time.perf_counter() - t0), 2))  # fmt: skip
        Path(probe_file).write_text(json.dumps(info))
        job.train_loop_per_worker(loop_config)

    return loop


def child_ray(args: argparse.Namespace) -> int:
    try:
        import ray
    except ImportError as e:
        emit(kind="ray", step="import", status=f"unavailable: {e}; carry it with benchmarks/gpu_wheels.sh")
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="gpu-run-ray-"))
    os.environ.setdefault("RAY_ADDRESS", "local")  # a Ray of our own, never someone's cluster
    try:
        ray_steps(args, tmp)
    finally:  # also when stopped at the budget (SIGINT): no Ray process outlives the part
        with contextlib.suppress(BaseException):
            ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def ray_steps(args: argparse.Namespace, tmp: Path) -> None:
    import argparse as ap

    import ray
    import torch

    from stylekit.ray_env import init_ray

    gpu = torch.cuda.is_available()
    dry = args.dry_run
    t0 = time.time()
    for attempt in (1, 2, 3):  # Ray gives its raylet 30 s to register: a loaded machine can miss that
        try:
            ray.init(include_dashboard=False, logging_level=logging.WARNING)
            break
        except Exception as e:
            ray.shutdown()
            if attempt == 3:
                emit(
                    kind="ray",
                    step="start",
                    status=f"failed 3 times: {type(e).__name__}: {str(e).strip()[:300]}",
                )
                raise
            print(f"Ray did not start ({e}); again", flush=True)
    init_ray()
    res = ray.cluster_resources()
    emit(kind="ray", step="start", status="ok", version=ray.__version__, cpus=res.get("CPU", 0),
         gpus=res.get("GPU", 0), seconds=round(time.time() - t0, 1))  # fmt: skip

    from stylekit.nn.modelio import load_model
    from stylekit.train import job
    from stylekit.train.config import TrainConfig

    data, _ = training_data()
    if dry:
        data = str(EXAMPLES / "content")
    probe = tmp / "probe.json"
    job.train_loop_per_worker = nccl_checked_loop(str(probe))  # run_training hands this to Ray Train
    steps, batch, side = (1, 2, 32) if dry else (30, 16, PAPER_SIDE)
    config = TrainConfig(
        style=str(EXAMPLES / "styles" / "starry_night.jpg"), data=data, output=str(tmp / "runs"), name="gpu-run",
        max_steps=steps, batch_size=batch, image_size=side, vgg_weights="random" if dry else "caffe",
        checkpoint_every=10**6, log_every=max(1, steps // 3), use_gpu=gpu, max_failures=0,
    )  # fmt: skip
    model_path = None
    t0 = time.time()
    try:
        model_path = job.run_training(config)
        seconds = time.time() - t0
        info = json.loads(probe.read_text()) if probe.is_file() else {"initialized": "no probe written"}
        meta = load_model(model_path).metadata
        want = "nccl" if gpu else "gloo"
        ok = info.get("backend") == want and info.get("all_reduce") == float(info.get("world", 0))
        emit(kind="ray", step="train", status="ok" if ok else f"process group not {want}: {info}",
             steps=meta.get("steps"), batch=batch, side=side, seconds=round(seconds, 1),
             images_per_s=round(int(meta.get("steps", 0)) * batch / max(seconds, 1e-9), 1), **info)  # fmt: skip
    except Exception as e:
        emit(kind="ray", step="train", status=f"failed: {type(e).__name__}: {str(e).strip()[:300]}")

    import bench_bulk

    count, bs = (2, 2) if dry else (500, 16)
    t0 = time.time()
    try:
        if dry:  # two small photos: a CPU takes seconds per ~1 MP one
            from PIL import Image

            (tmp / "in").mkdir()
            for i, name in enumerate(("chelsea", "coffee")):
                img = Image.open(EXAMPLES / "content" / f"{name}.jpg").convert("RGB")
                img.resize((64 + 16 * i, 48)).save(tmp / "in" / f"{name}.jpg", quality=90)
        else:
            bench_bulk.make_inputs(tmp / "in", count)
        model = model_path or str(tmp / "calibrated.safetensors")
        if model_path is None:
            import common
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in common.calibrated_model(0).state_dict().items()}, model,
                      metadata={"format": "stylekit"})  # fmt: skip
        made = time.time() - t0
        r = bench_bulk.run_ray(
            ap.Namespace(batch_size=bs, actors=None, format=None), model, tmp / "in", tmp / "out"
        )
        wait = r["wait"]
        emit(kind="ray", step="bulk", status="ok" if r["ok"] == count else f"{r['failed']} failed", photos=count,
             ok=r["ok"], failed=r["failed"], wall=round(r["wall"], 1), inputs_made_s=round(made, 1),
             images_per_s=round(count / r["wall"], 1), job_images_per_s=r["job images/s"],
             wait=round(sum(wait) / len(wait), 4) if wait else None, actors=len(wait), batch_size=bs)  # fmt: skip
    except Exception as e:
        emit(kind="ray", step="bulk", status=f"failed: {type(e).__name__}: {str(e).strip()[:300]}")


# --- the summary ---------------------------------------------------------------------------


def num(cell: str) -> float | None:
    m = re.search(r"-?\d+(?:\.\d+)?(?:e[+-]?\d+)?", cell or "")
    return float(m.group()) if m else None


def parse_table(lines: list[str]) -> tuple[list[str], list[list[str]]]:
    rows = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines if ln.startswith("|")]
    rows = [r for r in rows if not all(set(c) <= {"-", ":"} for c in r)]
    return (rows[0], rows[1:]) if rows else ([], [])


def verdict(value: float | None, target: float, higher: bool = True, unit: str = "") -> str:
    if value is None:
        return "not measured"
    if (value >= target) if higher else (value < target):
        return "**met**"
    if higher:
        return f"**missed** by {100 * (1 - value / target):.0f}% (needs {target / max(value, 1e-9):.2f}x)"
    return f"**missed** by {value - target:.1f} points{unit}"


class Findings:
    """The measured values the targets need, gathered from every part's results."""

    def __init__(self, records: dict[str, Any]):
        res = [r for rec in records.values() for r in rec.get("results", [])]
        self.flops = next((r for r in res if r.get("kind") == "flops"), {})
        self.roofs = next((r for r in res if r.get("kind") == "roofs"), {})
        self.profile = {r["what"]: r for r in res if r.get("kind") == "profile"}
        self.bench = [r for r in res if r.get("kind") == "bench"]
        self.tests = [r for r in res if r.get("kind") == "tests"]
        self.train = [r for r in res if r.get("kind") == "train"]
        self.ray = [r for r in res if r.get("kind") == "ray"]

    def tables(self, kind: str) -> list[tuple[list[str], list[list[str]], str]]:
        """(headers, rows, the header block) of each table the `kind` benchmark printed."""
        return [
            (*parse_table(b.get("table") or []), b.get("header") or "")
            for b in self.bench
            if b.get("bench") == kind and b.get("table")
        ]

    def training(self) -> dict[str, Any]:
        best: dict[str, Any] = {}
        for headers, rows, header in self.tables("train"):
            side = int((re.search(r"Training step, (\d+)x", header) or [0, PAPER_SIDE])[1])
            for row in rows:
                cells = dict(zip(headers, row, strict=False))
                batch, ref = num(cells.get("batch", "")), num(cells.get("reference img/s", ""))
                if ref and ref > best.get("ref", 0):
                    best.update(ref=ref, ref_batch=batch)
                for h, c in cells.items():
                    m = re.match(r"stylekit (\S+) img/s", h)
                    rate = num(c) if m and "OOM" not in c else None
                    if rate and rate > best.get("rate", 0):
                        best.update(rate=rate, variant=m.group(1), batch=batch, ref_same=ref, side=side)  # type: ignore[union-attr]
        return best

    def stylize(self, size: str) -> dict[str, Any]:
        best: dict[str, Any] = {}
        for headers, rows, _ in self.tables("stylize"):
            for row in rows:
                cells = dict(zip(headers, row, strict=False))
                if cells.get("size") != size:
                    continue
                rate = num(cells.get("img/s best batch", "").split("(")[0])
                batch = num((re.search(r"b=(\d+)", cells.get("img/s best batch", "")) or [""])[0])
                if cells.get("path") == "reference":
                    if rate and rate > best.get("ref", 0):
                        best["ref"] = rate
                elif rate and rate > best.get("rate", 0):
                    best.update(rate=rate, variant=cells.get("path"), batch=batch)
        return best

    def bulk(self) -> list[dict[str, Any]]:
        rows = []
        for headers, table_rows, _ in self.tables("bulk"):
            for row in table_rows:
                cells = dict(zip(headers, row, strict=False))
                rows.append({"engine": cells.get("engine", "?"), "photos": num(cells.get("photos", "")),
                             "rate": num(cells.get("photos/s end to end", "")),
                             "wait": (num(cells.get("model stage waiting", "")) or 0) / 100
                             if num(cells.get("model stage waiting", "")) is not None else None})  # fmt: skip
        for r in self.ray:
            if r.get("step") == "bulk" and r.get("images_per_s"):
                rows.append(
                    {
                        "engine": "ray (the bulk job)",
                        "photos": r.get("photos"),
                        "rate": r["images_per_s"],
                        "wait": r.get("wait"),
                    }
                )
        return rows


def tflops(flops: float | None, rate: float | None) -> float | None:
    return flops * rate / 1e12 if flops and rate else None


def profile_words(p: dict[str, Any] | None) -> str:
    if not p:
        return ""
    shares = ", ".join(f"{k} {100 * v:.0f}%" for k, v in list(p["shares"].items())[:4])
    busy = f"GPU busy {100 * p['busy']:.0f}% of the wall time; " if p.get("busy") is not None else ""
    head = ""
    if p.get("busy") is not None and p["busy"] < 0.85:
        head = f"the GPU idles {100 * (1 - p['busy']):.0f}% of the time (launches, host work, synchronous copies). "
    else:
        top = next(iter(p["shares"].items()), None)
        if top:
            head = f"{top[0]} kernels: {100 * top[1]:.0f}% of the kernel time. "
    return f"{head}{busy}kernel time: {shares} (profile: {p.get('what')} {p.get('size', p.get('side'))}, batch {p.get('batch')})"


def bound_rate(f: Findings, flops: float | None, rate: float | None, ref_flops: float | None, ref: float | None,
               prof: dict[str, Any] | None) -> str:  # fmt: skip
    """What bounds a rate: achieved TFLOP/s against the measured matmul roof, the profile,
    and the speed-up over the reference split into FLOPs saved x efficiency gained."""
    parts = []
    achieved, roof = tflops(flops, rate), f.roofs.get("matmul_tflops")
    if achieved:
        parts.append(
            f"{achieved:.3g} TFLOP/s"
            + (f" = {100 * achieved / roof:.0f}% of the measured matmul peak ({roof:.3g})" if roof else "")
        )
    words = profile_words(prof)
    if words:
        parts.append(words)
    ref_achieved = tflops(ref_flops, ref)
    if achieved and ref_achieved and flops and ref_flops:
        parts.append(f"speed-up = {ref_flops / flops:.2f}x fewer FLOPs x {achieved / ref_achieved:.2f}x the reference's "
                     f"efficiency ({ref_achieved:.3g} TFLOP/s)")  # fmt: skip
    return "; ".join(parts) or "no profile measured"


def target_rows(f: Findings, dry: bool) -> list[list[str]]:
    rows = []
    tr = f.training()
    rate, ref = tr.get("rate"), tr.get("ref")
    side = tr.get("side", PAPER_SIDE)
    where = f" ({tr.get('variant')}, batch {tr.get('batch'):.0f}, {side} px)" if rate else ""
    scale = (side / PAPER_SIDE) ** 2  # FLOPs were counted at 256 px (the dry run measures at 32)
    fl, fl_ref = (f.flops.get(k, 0) * scale or None for k in ("train", "train_ref"))
    bound = bound_rate(f, fl, rate, fl_ref, ref, f.profile.get("train")) if rate else ""
    rows.append(["training, 256 px: >= 1500 img/s", f"{rate:.0f} img/s{where}" if rate else "-",
                 verdict(rate, 1500), "" if rate and rate >= 1500 else bound])  # fmt: skip
    ratio = rate / ref if rate and ref else None
    rows.append(["training: >= 5x the reference", f"{ratio:.2f}x (reference best {ref:.0f} img/s)" if ratio else "-",
                 verdict(ratio, 5), "" if ratio and ratio >= 5 else bound])  # fmt: skip
    for size, label, goal in (("1920x1080", "1080p", 500), ("3840x2160", "4K", 120)):
        st = f.stylize(size)
        rate, ref = st.get("rate"), st.get("ref")
        w, h = (int(v) for v in size.split("x"))
        bound = bound_rate(f, f.flops.get("stylize", {}).get(size), rate, f.flops.get("stylize_ref", {}).get(size), ref,
                           f.profile.get("stylize") if size == "1920x1080" else None) if rate else ""  # fmt: skip
        h2d, d2h = f.roofs.get("h2d_gbps"), f.roofs.get("d2h_gbps")
        if rate and h2d and d2h:
            ms = 1000 * w * h * 3 * (1 / h2d + 1 / d2h) / 1e9
            bound += f"; uint8 frames in and out over PCIe: {ms:.2f} ms of the {1000 / rate:.2f} ms per frame"
        where = f" ({st.get('variant')}, batch {st.get('batch'):.0f})" if rate and st.get("batch") else ""
        rows.append([f"stylize {label}: >= {goal} frames/s", f"{rate:.0f}/s{where}" if rate else "-",
                     verdict(rate, goal), "" if rate and rate >= goal else bound])  # fmt: skip
        ratio = rate / ref if rate and ref else None
        rows.append([f"stylize {label}: >= 5x the reference", f"{ratio:.2f}x (reference {ref:.0f}/s)" if ratio else "-",
                     verdict(ratio, 5), "" if ratio and ratio >= 5 else bound])  # fmt: skip
    one_mp = f.stylize("1920x1080").get("rate")
    bulk = f.bulk()
    for b in bulk:
        rate, wait = b["rate"], b["wait"]
        if wait is not None and wait >= 0.10:
            why = f"input-bound: the model waits {100 * wait:.0f}% of the time for decoded photos"
        elif one_mp:
            why = (f"model-bound (waits {100 * (wait or 0):.0f}%): the model alone does ~{one_mp * 1920 * 1080 / 1.0e6:.0f} "
                   f"~1 MP photos/s (from its 1080p rate)")  # fmt: skip
        else:
            why = f"model-bound (waits {100 * (wait or 0):.0f}%)"
        count = f", {b['photos']:.0f} photos" if b.get("photos") else ""
        rows.append([f"bulk ({b['engine']}{count}): >= 1000 photos/s", f"{rate:.1f}/s" if rate else "-",
                     verdict(rate, 1000), "" if rate and rate >= 1000 else why])  # fmt: skip
        rows.append([f"bulk ({b['engine']}): model waits < 10%", f"{100 * wait:.1f}%" if wait is not None else "-",
                     verdict(100 * wait if wait is not None else None, 10, higher=False, unit=""), ""
                     if wait is not None and wait < 0.10 else why])  # fmt: skip
    if not bulk:
        rows.append(["bulk: >= 1000 photos/s, model waits < 10%", "-", "not measured", ""])
    for headers, table_rows, _ in f.tables("codec"):  # bench_pipeline.py --codec-only
        for row in table_rows:
            cells = dict(zip(headers, row, strict=False))
            per_cpu, cpus = (
                num(cells.get("images/s per CPU", "")),
                num(cells.get("CPUs for 1,000 images/s", "")),
            )
            rows.append([f"codec ceiling ({cells.get('JPEG', '?')}, Pillow): CPUs for 1000 photos/s",
                         f"{per_cpu:.0f}/s per CPU" if per_cpu else "-",
                         f"{cpus:.0f} CPUs" if cpus else "-", "decode + encode on the node's CPUs bound a GPU node"])  # fmt: skip
    return rows


def write_summary(out: Path, run: dict[str, Any], elapsed: float) -> str:
    f = Findings(run["records"])
    dry = run["dry"]
    md = [
        "# GPU run"
        + (" (dry run: tiny CPU sizes; the figures only show that every step runs)" if dry else ""),
        "",
        f"- device: {run['device']}",
        f"- {run['ray']}",
        f"- command: `{run['command']}`; commit {run['commit']}; started {run['started']}; "
        f"{elapsed:.0f} s of a {run['budget']:.0f} s budget",
        "",
        "| part | status | seconds | budget | log |",
        "|---|---|---|---|---|",
    ]
    for part in run["parts"]:
        rec = run["records"].get(part)
        if rec is None:
            md.append(f"| {part} | not reached | - | - | - |")
        else:
            md.append(
                f"| {part} | {rec['status']} | {rec['seconds']:.0f} | {rec['budget']:.0f} | {part}.log |"
            )
    md += ["", "## Targets (one H100)", ""]
    md.append("| target | measured | status | what bounds it (where missed) |")
    md.append("|---|---|---|---|")
    md += ["| " + " | ".join(r) + " |" for r in target_rows(f, dry)]
    if f.tests:
        md += ["", "## Tests (`pytest -m gpu`)", ""]
        for t in f.tests:
            md.append(f"- {t.get('run')}: {t.get('line')} (exit {t.get('rc')})")
        cases = [c for t in f.tests for c in t.get("cases", [])]
        if cases:
            md += ["", "| result | test | note |", "|---|---|---|"]
            md += [f"| {s} | `{n}` | {w} |" for s, n, w in cases]
    if f.bench:
        md += ["", "## Benchmarks (paste-ready)", ""]
        headers_seen = False
        for b in f.bench:
            if b.get("bench") == "profile":
                continue
            md.append(f"#### {b['item']}: {b['status']}")
            md.append("")
            if b.get("header") and not headers_seen:
                md += [b["header"], ""]
                headers_seen = True
            elif b.get("header"):
                cmd = [ln for ln in b["header"].splitlines() if ln.startswith("- command")]
                md += [*cmd, ""]
            if b.get("table"):
                md += [*b["table"], ""]
            if b.get("notes"):
                md += [b["notes"], ""]
            if b.get("tail"):
                md += ["```", b["tail"], "```", ""]
    if f.profile or f.roofs:
        md += ["", "## Where the time goes (profile)", ""]
        if f.roofs:
            md.append(
                "- measured roofs: " + ", ".join(f"{k} {v:.1f}" for k, v in f.roofs.items() if k != "kind")
            )
        if f.flops:
            md.append(
                f"- FLOPs per image: training step {f.flops['train'] / 1e9:.0f} G (reference {f.flops['train_ref'] / 1e9:.0f} G) "
                f"at 256 px; stylize 1080p {f.flops['stylize']['1920x1080'] / 1e9:.0f} G, 4K {f.flops['stylize']['3840x2160'] / 1e9:.0f} G"
            )
        for what, p in f.profile.items():
            md.append(f"- {what} ({p.get('path')}, {p.get('size', p.get('side'))}, batch {p.get('batch')}): "
                      f"{p['wall_ms']:.2f} ms per call, kernels {p['kernel_ms']:.2f} ms; {profile_words(p)}")  # fmt: skip
            md.append("  - top: " + "; ".join(f"`{k}` {ms:.3f} ms" for k, ms in p["top"]))
    if f.train:
        md += ["", "## Training the shipped styles (no Ray)", ""]
        md += [
            "| style | steps | of the paper's 40,000 | seconds | img/s | final loss | stopped |",
            "|---|---|---|---|---|---|---|",
        ]
        for t in f.train:
            if "style" not in t:
                md.append(f"| - | - | - | - | - | - | {t.get('status')} |")
                continue
            loss = (t.get("loss") or {}).get("loss")
            md.append(f"| {t['style']} | {t['steps']} | {100 * t['steps'] / PAPER_STEPS:.1f}% | {t['seconds']:.0f} | "
                      f"{t['images_per_s']:.0f} | {loss:.4g} | {t['why']} |" if loss is not None else
                      f"| {t['style']} | {t['steps']} | - | {t['seconds']:.0f} | - | - | {t['why']} |")  # fmt: skip
        md += ["", f"Data: {f.train[0].get('data', '-')}. Models: `models.tar` (<style>/model.safetensors, float16); "
               "install with `mkdir -p runs/gpu-zoo && tar -xf models.tar -C runs/gpu-zoo && "
               "python jobs/ship_models.py --install-only --output runs/gpu-zoo`."]  # fmt: skip
    if f.ray:
        md += ["", "## Ray on the GPU", "", "| step | status | details |", "|---|---|---|"]
        for r in f.ray:
            details = ", ".join(f"{k} {v}" for k, v in r.items() if k not in ("kind", "step", "status"))
            md.append(f"| {r.get('step')} | {r.get('status')} | {details} |")
    text = "\n".join(md) + "\n"
    (out / "summary.md").write_text(text)
    return text


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
