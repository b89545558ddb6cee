"""The train part: the shipped styles at the paper's schedule for the time left, one process per
style on the one GPU, without Ray; models with metadata saying how far they got."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from gpurun.procs import GRACE, PYTHON, RUNNER, child_env, emit
from gpurun.setting import (
    EXAMPLES,
    PAPER_BATCH,
    PAPER_SIDE,
    PAPER_STEPS,
    PAPER_STYLE_SIZE,
    REPO,
    cuda_here,
    training_data,
)

MIN_TRAIN = 45  # seconds a training process needs to be worth starting
TRAIN_STYLES = ("starry_night", "wave", "the_scream", "composition_vii")  # jobs/ship_models.py's default


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
