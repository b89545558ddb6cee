"""The Ray Train glue: data-parallel training (TransformerNet, or a super-resolution network)
over `num_workers` workers, the job `jobs/train.py` runs.

The driver (`run_training`) checks every input once (`preflight`), lists the data to size the
epochs, and runs a TorchTrainer whose workers each run `train_loop_per_worker`: the Ray-free
loop (train/loop.py) over their shard of a streaming Ray Dataset (train/data.py), reporting a
checkpoint with a preview every `--checkpoint-every` steps; the driver then writes the model
file from the last checkpoint. At every (re)start the workers resume from the newer of Ray's
latest checkpoint and the newest complete checkpoint in `<output>/<name>/`: a replaced worker
and a rerun after the driver died both go on from there, even from a checkpoint Ray had not yet
recorded as reported.

A style run's paintings are listed once, by the driver (train/paintings.py), and the workers
get the list. An --add-style run trains a network of the new styles only, on the --init-from
model's frozen convolutions; the driver joins it to that model at the end (nn/styles.join).
"""

from __future__ import annotations

import collections
import collections.abc
import contextlib
import dataclasses
import logging
import math
import os
import shutil
import tempfile
import time
from typing import Any

import pyarrow.fs as pafs
import ray
import ray.train
import ray.train.torch
import torch
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig

from stylekit.errors import RunFailed, StylekitError
from stylekit.files import storage
from stylekit.logs import Progress, setup_logging
from stylekit.nn.loss import LossTerms
from stylekit.nn.modelio import load_model, save_model
from stylekit.nn.styles import join
from stylekit.nn.vgg import load_vgg
from stylekit.ray_env import cluster_nodes, init_ray, on_head, plan_on_nodes
from stylekit.redact import redact, root_cause
from stylekit.train import previews
from stylekit.train.board import Board, loss_scalars, painting_scalars
from stylekit.train.checkpoint import (
    complete_checkpoint,
    find_latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from stylekit.train.config import TrainConfig
from stylekit.train.data import SR_CROPS_PER_IMAGE, SkipCounter, count_training_images, training_dataset
from stylekit.train.loop import RECENT_STEPS, TERMS, LoopHooks, RecentLosses, Schedule, train_loop
from stylekit.train.losses import build_loss
from stylekit.train.metadata import StyleRecord, added_metadata, model_metadata
from stylekit.train.metrics import TrainMetrics
from stylekit.train.paintings import Painting, list_paintings, name_of, read_painting
from stylekit.train.precision import resolve_dtype
from stylekit.train.sizing import plan_workers
from stylekit.train.state import TrainState, new_state
from stylekit.train.step import to_channels_last
from stylekit.train.watch import StepClock, fit_watched

log = logging.getLogger(__name__)

CHECKPOINTS_KEPT = 3
RATE_WINDOW = 20  # steps: the images/s of progress lines and metrics is the current speed


def run_training(config: TrainConfig) -> str:
    """Train a network end to end (one style, several, styles added to a model, or
    super-resolution); returns the location of the finished model.safetensors."""
    opts = config.storage_options
    vgg_source = preflight(config)
    paintings: tuple[Painting, ...] = ()
    if config.task == "style":
        # The workers get the paintings themselves: folders are listed once, here.
        paintings = list_paintings(config.style, opts)
        config = dataclasses.replace(config, style=tuple(p.location for p in paintings))
    if "runtime_resources" in os.getcwd() and config.output.startswith(os.getcwd()):
        log.warning(
            "--output %s is inside this job's temporary working directory and is deleted with "
            "it: pass an absolute path or an s3:// URI",
            config.output,
        )
    n_images = count_training_images(config.data, opts)
    if n_images < config.max_workers:
        raise StylekitError(
            f"{n_images} training images cannot feed {config.max_workers} workers; add images or "
            "lower --num-workers"
        )
    # Ray Data splits the rows equally; each worker sees ceil(rows / batch) batches an epoch.
    # An epoch is a number of steps, counted at MAX workers: with fewer (an elastic run while
    # a node is gone) each step, and so each epoch, sees fewer images; the schedule is unchanged.
    rows = n_images * (SR_CROPS_PER_IMAGE if config.task == "sr" else 1)
    steps_per_epoch = max(1, math.ceil((rows // config.max_workers) / config.batch_size))
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    init_ray()
    workers = plan_on_nodes(lambda nodes: plan_workers(config, nodes), config.wait_for_nodes)
    scaling = ScalingConfig(
        num_workers=workers.num_workers, use_gpu=workers.use_gpu, resources_per_worker=workers.resources
    )
    if len(paintings) > 1 or config.add_style:
        log.info(
            "%s %d painting(s): %s",
            "adding" if config.add_style else "one network for",
            len(paintings),
            ", ".join(p.name for p in paintings),
        )
    log.info(
        "training %r: %d images under %s, %s worker(s) %s, batch %d per worker, %d steps "
        "(%d per epoch), run folder %s",
        config.name,
        n_images,
        config.data,
        config.num_workers,
        "on GPUs" if scaling.use_gpu else f"on CPUs ({scaling.resources_per_worker['CPU']} each)",
        config.batch_size,
        total_steps,
        steps_per_epoch,
        config.run_dir,
    )
    counter = SkipCounter.options(**on_head()).remote()  # on the head, which outlives workers
    clock = StepClock.options(**on_head()).remote()
    factor = config.factor if config.task == "sr" else None
    dataset = training_dataset(
        config.data,
        config.image_size,
        opts,
        counter=counter,
        seed=config.seed,
        factor=factor,
        crop_scale=config.crop_scale,
    )
    # s3fs under Ray Train's checkpoint uploads: it retries resets pyarrow's S3 does not.
    fs, run_parent = storage.arrow_filesystem(config.output, opts, native_s3=False)
    trainer = ray.train.torch.TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "config": config.to_dict(),
            "total_steps": total_steps,
            "steps_per_epoch": steps_per_epoch,
            "cpus_per_worker": scaling.resources_per_worker.get("CPU", 1),
            "clock": clock,
        },
        scaling_config=scaling,
        run_config=RunConfig(
            name=config.name,
            storage_path=run_parent,
            storage_filesystem=fs,
            failure_config=FailureConfig(max_failures=config.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
        ),
        datasets={"train": dataset},
    )
    started = time.time()
    try:
        result = fit_watched(
            trainer, clock, config.stall_timeout, lambda: plan_workers(config, cluster_nodes())
        )
    except ray.train.TrainingFailedError as e:
        raise RunFailed(f"training failed: {root_cause(e)}") from None
    skipped, examples = ray.get(counter.summary.remote())
    if skipped:
        log.warning("skipped %d unreadable training image(s), e.g. %s", skipped, ", ".join(examples[:3]))
    if result.checkpoint is None:
        raise StylekitError("training ended without a checkpoint; see the log above")
    with result.checkpoint.as_directory() as directory:
        state = TrainState(*_blank_model_and_optimizer(config))
        load_checkpoint(directory, state)

    metrics = result.metrics or {}
    final = {k: v for k, v in metrics.items() if k in TERMS}
    styles = [
        StyleRecord(
            p,
            read_painting(p, None, opts)[1],
            {t: metrics[f"{t}@{p.name}"] for t in TERMS if f"{t}@{p.name}" in metrics},
        )
        for p in paintings
    ]
    metadata = model_metadata(config, state.step, vgg_source, final, state.worker_counts, styles)
    model = state.model
    if config.add_style:
        # The new styles join the model they were trained on: its own slots are copied as they are.
        base = load_model(config.init_from or "", opts)
        model = join(base.model, state.model)  # type: ignore[arg-type]
        metadata = added_metadata(base, metadata)
    save_model(config.model_path, model, metadata, opts)
    log.info("finished %d steps in %.0f s; model written", state.step, time.time() - started)
    return config.model_path


def preflight(config: TrainConfig) -> str:
    """Fail fast, on the driver, with one line: the paintings decode and the VGG weights can
    be had (for "imagenet" this also fills this node's torchvision cache), every location is
    one Ray's workers can reach, and the run folder can be written. Returns the VGG weights'
    description for the model's metadata."""
    for flag, location in (
        *(("--style", s) for s in (config.style if config.task == "style" else ())),
        ("--data", config.data),
        ("--output", config.output),
        ("--init-from", config.init_from or ""),
        ("--vgg-weights", config.vgg_weights.partition(":")[2] or config.vgg_weights),
    ):
        storage.require_shared(location, flag)
    storage.check_writable(config.run_dir, config.storage_options, folder=True)
    paintings = list_paintings(config.style, config.storage_options) if config.task == "style" else ()
    for painting in paintings:
        read_painting(painting, config.style_size, config.storage_options)
    if config.init_from:
        start = load_model(config.init_from, config.storage_options)  # a bad --init-from fails here
        if config.add_style:
            taken = set(start.styles) & {p.name for p in paintings}
            if taken:
                raise StylekitError(
                    f"--add-style: {config.init_from} already holds {', '.join(sorted(taken))}; "
                    "rename the new painting's file, or train the model again with it"
                )
    if config.task == "sr" and config.sr_loss == "pixel":
        return "none (per-pixel loss)"
    return load_vgg(config.vgg_weights, seed=config.seed, options=config.storage_options).source


def _blank_model_and_optimizer(config: TrainConfig) -> tuple[Any, Any]:
    # A checkpoint is loaded into it next: no need to read --init-from's weights first.
    state = new_state(config, torch.device("cpu"), warm_start=False)
    return state.model, state.optimizer


# --- the per-worker loop --------------------------------------------------------------------


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    setup_logging()
    config = TrainConfig.from_dict(loop_config["config"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        # Ray's CPU reservation is for scheduling (it keeps one CPU free so data tasks can
        # always run); the math uses this node's cores, shared among its workers. Decoding
        # takes a small share (measured: ~15% of a 2-core node at 128 px), so one thread per
        # reserved CPU would leave most of a small node idle.
        node_cpus = os.cpu_count() or 1
        threads = max(int(loop_config["cpus_per_worker"]), node_cpus // max(1, ctx.get_local_world_size()))
        torch.set_num_threads(max(1, threads))
    else:
        torch.backends.cudnn.benchmark = True
    dtype = resolve_dtype(config.precision, device)
    state = new_state(config, device)
    loss_fn = build_loss(config, device)
    if device.type == "cpu" and dtype == torch.bfloat16:
        # --precision bf16 on a CPU: oneDNN's bf16 convolutions run channels_last without
        # reorders (measured with AMX: 2.0x the reference step with it, 1.8x without).
        to_channels_last(state.model, loss_fn)
    _restore(state, loop_config, config, rank)
    if not state.worker_counts or state.worker_counts[-1][1] != world:
        state.worker_counts.append([state.step + 1, world])  # this group's size, from its first step
        if rank == 0 and len(state.worker_counts) > 1:
            log.info("training goes on with %d worker(s) from step %d", world, state.step + 1)
    clock = loop_config.get("clock")
    board = Board(config.run_dir, config.storage_options, purge_step=state.step + 1) if rank == 0 else None

    model = ray.train.torch.prepare_model(state.model)
    shard = ray.train.get_dataset_shard("train")
    schedule = Schedule(loop_config["total_steps"], loop_config["steps_per_epoch"])

    def epoch_batches(epoch: int) -> collections.abc.Iterable[dict[str, torch.Tensor]]:
        return shard.iter_torch_batches(
            batch_size=config.batch_size,
            dtypes=torch.uint8,
            device=device,
            local_shuffle_buffer_size=config.batch_size * 8,
            local_shuffle_seed=config.seed + epoch * 1000 + rank,
            prefetch_batches=2,
        )

    step_metrics = TrainMetrics(config.name, config.batch_size * world) if rank == 0 else None
    hooks = _WorkerHooks(
        config, rank, schedule.total_steps, config.batch_size * world, clock, board, step_metrics
    )
    train_loop(config, state, model, loss_fn, dtype, epoch_batches, schedule, hooks)
    _report(state, config, rank, hooks.losses(), board)
    if board is not None:
        board.close()


class _WorkerHooks(LoopHooks):
    """What a worker does around its steps: the stall watchdog's tick, Ray metrics, progress
    lines and TensorBoard scalars (rank 0), and every `checkpoint_every` steps a report."""

    def __init__(
        self,
        config: TrainConfig,
        rank: int,
        total: int,
        images_per_step: int,
        clock: Any,
        board: Board | None,
        step_metrics: TrainMetrics | None,
    ):
        self.config, self.rank, self.total, self.images_per_step = config, rank, total, images_per_step
        self.meter = Progress(window=RATE_WINDOW)  # images/s over the last steps
        self.clock, self.board, self.step_metrics = clock, board, step_metrics
        self.recent = RecentLosses(RECENT_STEPS)
        # A run of several paintings trains one a step: each has its own recent losses.
        self.names = [name_of(s) for s in config.style] if config.task == "style" else []
        self.by_painting = [RecentLosses(RECENT_STEPS) for _ in self.names] if len(self.names) > 1 else []

    def losses(self) -> dict[str, float]:
        """The mean loss terms of the recent steps, and of each painting's (`TERM@NAME`)."""
        out = dict(self.recent.mean() or {})
        for name, recent in zip(self.names, self.by_painting, strict=False):
            out.update({f"{term}@{name}": v for term, v in (recent.mean() or {}).items()})
        return out

    def after_step(self, state: TrainState, terms: LossTerms) -> None:
        self.meter.add(self.images_per_step)
        if self.rank == 0 and self.clock is not None:
            self.clock.tick.remote(state.step)  # the driver's stall watchdog (train/watch.py)
        values = terms.as_floats()
        self.recent.add(terms)
        if self.by_painting:
            self.by_painting[terms.painting].add(terms)
        if self.step_metrics is not None:
            self.step_metrics.step(state.step, self.meter.rate(), values)
        if self.rank == 0 and (state.step % self.config.log_every == 0 or state.step == self.total):
            log.info(
                "step %d/%d epoch %d  %.1f images/s  loss %.4g = content %.4g + style %.4g + tv %.4g%s",
                state.step,
                self.total,
                state.epoch + 1,
                self.meter.rate(),
                values["loss"],
                values["content"],
                values["style"],
                values["tv"],
                f"  ({self.names[terms.painting]})" if self.by_painting else "",
            )
        if self.board is not None:
            if state.step % self.config.log_every == 0 or state.step == self.total:
                self.board.log_scalars(state.step, loss_scalars(values, self.meter.rate()))
            if self.by_painting:  # every step: each painting has only its share of them
                self.board.log_scalars(state.step, painting_scalars(self.names[terms.painting], values))

    def checkpoint(self, state: TrainState) -> None:
        _report(state, self.config, self.rank, self.losses(), self.board)


def _restore(state: TrainState, loop_config: dict[str, Any], config: TrainConfig, rank: int) -> None:
    """Resume from the newer of Ray's latest checkpoint (a replaced worker) and the newest
    complete checkpoint found in storage when the job started (a rerun). Steps are read in
    place; only the chosen checkpoint is fetched, through Ray's `as_directory`, which
    downloads once per node (shared by that node's workers) and removes the copy after."""
    candidates: list[tuple[int, ray.train.Checkpoint, str]] = []
    ray_ckpt = ray.train.get_checkpoint()
    opts = config.storage_options
    if ray_ckpt is not None:
        meta = complete_checkpoint(ray_ckpt.filesystem, ray_ckpt.path)
        candidates.append((-1 if meta is None else int(meta["step"]), ray_ckpt, "Ray's latest checkpoint"))
    # Scanned here, at every (re)start, not once by the driver: a worker group restarted just
    # after a checkpoint landed in storage, before Ray registered it, still finds it.
    latest = find_latest_checkpoint(config.run_dir, opts)
    if latest:
        fs, path = storage.arrow_filesystem(latest, opts, native_s3=False)
        meta = complete_checkpoint(fs, path)
        step = -1 if meta is None else int(meta["step"])
        candidates.append((step, ray.train.Checkpoint(path, filesystem=fs), redact(latest)))
    if not candidates:
        return
    step, checkpoint, origin = max(candidates, key=lambda c: c[0])
    with _local_copy(checkpoint) as directory:
        load_checkpoint(directory, state)
    if rank == 0:
        log.info("resumed from step %d (%s)", step, origin)


@contextlib.contextmanager
def _local_copy(checkpoint: ray.train.Checkpoint) -> collections.abc.Iterator[str]:
    """The checkpoint as a local folder: read in place on a local filesystem, otherwise
    downloaded into this worker's own temporary folder and removed after. (Ray's
    `as_directory` shares one download per node by a uuid that is random per Checkpoint
    object, so two workers' objects for the same found location would not share it anyway;
    a checkpoint is tens of MB, one copy per worker costs little.)"""
    if isinstance(checkpoint.filesystem, pafs.LocalFileSystem):
        yield checkpoint.path
        return
    with tempfile.TemporaryDirectory(prefix="stylekit-resume-") as directory:
        checkpoint.to_directory(directory)
        yield directory


def _report(
    state: TrainState,
    config: TrainConfig,
    rank: int,
    losses: dict[str, float] | None,
    board: Board | None = None,
) -> None:
    """Every worker reports (Ray Train's report is collective); rank 0 attaches the checkpoint,
    then adds a row to previews.jpg and the preview to TensorBoard (see train/previews.py).
    `losses` are the mean loss terms of the last RECENT_STEPS steps on this worker (and of
    each painting's, `TERM@NAME`)."""
    metrics: dict[str, Any] = {"step": state.step, "epoch": state.epoch}
    metrics.update(losses or {})
    if rank != 0:
        ray.train.report(metrics)
        return
    directory = tempfile.mkdtemp(prefix="stylekit-ckpt-")
    try:
        preview = previews.preview_pixels(state.model)
        save_checkpoint(directory, state, config, preview)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))
        log.info("checkpoint at step %d (with preview.jpg)", state.step)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    names = [name_of(s) for s in config.style] if config.task == "style" else []
    previews.record(config.run_dir, state.step, state.model, config.storage_options, names)
    if board is not None:
        board.log_image(state.step, "preview", preview)
        board.sync()
