"""The ray part: Ray itself on the GPU: the training job for a few steps with its worker checking
the NCCL process group, then the bulk job's GPU actors over a small folder."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from gpurun.procs import emit
from gpurun.setting import EXAMPLES, PAPER_SIDE, training_data


def nccl_checked_loop(probe_file: str) -> Any:
    """The training job's own per-worker loop, after checking the process group Ray Train set
    up: its backend (nccl on GPUs, gloo on CPUs), and one all_reduce through it."""

    def loop(loop_config: dict[str, Any]) -> None:
        import ray.train.torch
        import torch
        import torch.distributed as dist

        from stylekit.train import ray_job

        device = ray.train.torch.get_device()
        info: dict[str, Any] = {"initialized": dist.is_initialized(), "device": str(device)}
        if dist.is_initialized():
            t = torch.ones(1, device=device)
            t0 = time.perf_counter()
            dist.all_reduce(t)
            info.update(backend=str(dist.get_backend()), world=dist.get_world_size(), all_reduce=float(t.item()),
                        all_reduce_ms=round(1000 * (time.perf_counter() - t0), 2))  # fmt: skip
        Path(probe_file).write_text(json.dumps(info))
        ray_job.train_loop_per_worker(loop_config)

    return loop


def child_ray(args: argparse.Namespace) -> int:
    try:
        import ray
    except ImportError as e:
        emit(kind="ray", step="import", status=f"unavailable: {e}; carry it with tools/gpu_run/gpu_wheels.sh")
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
    from stylekit.train import ray_job
    from stylekit.train.config import TrainConfig

    data, _ = training_data()
    if dry:
        data = str(EXAMPLES / "content")
    probe = tmp / "probe.json"
    ray_job.train_loop_per_worker = nccl_checked_loop(str(probe))  # run_training hands this to Ray Train
    steps, batch, side = (1, 2, 32) if dry else (30, 16, PAPER_SIDE)
    config = TrainConfig(
        style=str(EXAMPLES / "styles" / "starry_night.jpg"), data=data, output=str(tmp / "runs"), name="gpu-run",
        max_steps=steps, batch_size=batch, image_size=side, vgg_weights="random" if dry else "caffe",
        checkpoint_every=10**6, log_every=max(1, steps // 3), use_gpu=gpu, max_failures=0,
    )  # fmt: skip
    model_path = None
    t0 = time.time()
    try:
        model_path = ray_job.run_training(config)
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

    import harness

    from stylekit.bulk.config import BulkConfig
    from stylekit.cli import config_from_flags

    count, bs = (2, 2) if dry else (500, 16)
    t0 = time.time()
    try:
        if dry:  # two small photos: a CPU takes seconds per ~1 MP one
            harness.make_inputs(tmp / "in", [(64, 48), (80, 48)])
        else:
            harness.make_inputs(tmp / "in", [harness.ONE_MP[i % len(harness.ONE_MP)] for i in range(count)])
        model = model_path or str(tmp / "calibrated.safetensors")
        if model_path is None:
            import common
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in common.calibrated_model(0).state_dict().items()}, model,
                      metadata={"format": "stylekit"})  # fmt: skip
        made = time.time() - t0
        config = config_from_flags(
            BulkConfig, model=model, input=str(tmp / "in"), output=str(tmp / "out"), batch_size=bs
        )
        r = harness.run_job(config, actor="timed")  # the model stage's wait, from its actors' own clocks
        wait, done = r["wait"], r["summary"]
        emit(kind="ray", step="bulk", status="ok" if done["ok"] == count else f"{done['failed']} failed", photos=count,
             ok=done["ok"], failed=done["failed"], wall=round(r["wall"], 1), inputs_made_s=round(made, 1),
             images_per_s=round(count / r["wall"], 1), job_images_per_s=done["images_per_s"],
             wait=round(sum(wait) / len(wait), 4) if wait else None, actors=len(wait), batch_size=bs)  # fmt: skip
    except Exception as e:
        emit(kind="ray", step="bulk", status=f"failed: {type(e).__name__}: {str(e).strip()[:300]}")
