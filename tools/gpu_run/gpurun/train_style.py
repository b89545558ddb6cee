"""One style of the train part: the library's training loop (stylekit.train.loop) without Ray,
on the training photos held on the device (stylekit.train.held), at the paper's schedule until
the part's deadline; the model saved every minute and at the end, with metadata saying how far
it got."""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

from gpurun.procs import emit
from gpurun.setting import EXAMPLES, PAPER_BATCH, PAPER_SIDE, PAPER_STEPS, PAPER_STYLE_SIZE
from stylekit.logs import setup_logging
from stylekit.nn.loss import LossTerms
from stylekit.nn.modelio import save_model
from stylekit.train.config import TrainConfig
from stylekit.train.held import HeldBatches, load_crops
from stylekit.train.loop import LoopHooks, RecentLosses, Schedule, train_loop
from stylekit.train.losses import build_loss
from stylekit.train.metadata import model_metadata
from stylekit.train.precision import resolve_dtype
from stylekit.train.state import TrainState, new_state

LOG_EVERY_S = 15  # a progress line
SAVE_EVERY_S = 60  # the model so far: a run cut off by its machine still returns one
STOP_MARGIN_S = 4  # stop this long before the deadline: the last save and the result line


class BudgetHooks(LoopHooks):
    """The style's run around its steps: the recent losses, a progress line and a save now and
    then (by the clock: reading the losses back is the only wait on the GPU), and a stop at the
    deadline or at a signal (the part's stop)."""

    def __init__(
        self,
        name: str,
        batch: int,
        deadline: float,
        signalled: threading.Event,
        save: Callable[[int, float, str], None],
    ):
        self.name, self.batch, self.deadline, self.signalled, self.save = (
            name,
            batch,
            deadline,
            signalled,
            save,
        )
        self.recent = RecentLosses()
        self.started = self.last_log = self.last_save = time.time()

    def after_step(self, state: TrainState, terms: LossTerms) -> None:
        self.recent.add(terms)
        now = time.time()
        if now - self.last_log > LOG_EVERY_S:
            loss = (self.recent.mean() or {}).get("loss", float("nan"))
            rate = state.step * self.batch / (now - self.started)
            print(f"{self.name}: step {state.step}  {rate:.0f} img/s  loss {loss:.4g}", flush=True)
            self.last_log = now
        if now - self.last_save > SAVE_EVERY_S:
            self.save(state.step, now - self.started, "checkpoint during the run")
            self.last_save = now

    def stop(self) -> bool:
        return self.signalled.is_set() or time.time() > self.deadline - STOP_MARGIN_S


def train_style(args: argparse.Namespace) -> int:
    signalled = threading.Event()  # the part's stop: the step under way ends, then the model is saved
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: signalled.set())
    setup_logging()  # the library's lines (photos skipped, the loss network) reach the log
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
    state = new_state(config, device)
    loss_fn = build_loss(config, device)
    dtype = resolve_dtype(config.precision, device)
    held = HeldBatches(torch.from_numpy(load_crops(args.data, side)).to(device), batch, seed=config.seed)
    out = Path(args.out) / "models" / args.style / "model.safetensors"
    gpu_name = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    )

    def save(step: int, seconds: float, why: str) -> None:
        meta = model_metadata(config, step, loss_fn.vgg.source, hooks.recent.mean())
        meta.update({
            "trained_with": "tools/gpu_run/gpu_run.py (train part): stylekit.train.loop.train_loop without Ray, "
                            "the training crops held on the device (stylekit.train.held), shuffled each epoch",
            "device": gpu_name,
            "precision": "bf16 autocast" if dtype == torch.bfloat16 else "fp32",
            "schedule": f"the paper's: {PAPER_STEPS} steps of batch {PAPER_BATCH} at {PAPER_SIDE} px; "
                        f"this run did {step} ({100 * step / PAPER_STEPS:.1f}%) in {seconds:.0f} s ({why})",
            "training_seconds": f"{seconds:.1f}",
            "images_per_s": f"{step * config.batch_size / max(seconds, 1e-9):.1f}",
            "stored_dtype": "float16",
        })  # fmt: skip
        save_model(str(out), state.model, meta, dtype=torch.float16)  # written whole or not at all

    print(f"{args.style}: {len(held.data)} crops of {side} px on {device}; up to {steps} steps", flush=True)
    schedule = Schedule(steps, held.steps_per_epoch)
    hooks = BudgetHooks(args.style, batch, args.deadline, signalled, save)  # its clock starts here
    done = train_loop(config, state, state.model, loss_fn, dtype, held, schedule, hooks)
    why = "finished" if done else "stopped by the time budget"
    seconds = time.time() - hooks.started
    save(state.step, seconds, why)
    recent = hooks.recent.mean()
    if recent is not None:
        print(f"{args.style}: step {state.step}  loss {recent['loss']:.4g} ({why})", flush=True)
    emit(kind="train", style=args.style, steps=state.step, seconds=round(seconds, 1),
         images_per_s=round(state.step * batch / max(seconds, 1e-9), 1), loss=recent, why=why,
         file=f"models.tar: {args.style}/model.safetensors", data=args.data_description)  # fmt: skip
    return 0
