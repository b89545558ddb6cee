"""A training checkpoint is a folder of data files, never a pickle: `model.safetensors`,
`optimizer.safetensors` (Adam's moments, flattened), `state.json` (step, epoch, config; written
last, with the sizes of the other two so a half-copied checkpoint is recognised and skipped) and
`preview.jpg`. `find_latest_checkpoint` finds the newest complete one in a run folder, local or
in object storage, reading only the state.json files in place."""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow.fs as pafs
import torch
from safetensors.torch import load_file, save_file

from stylekit import __version__
from stylekit.files import images, storage

if TYPE_CHECKING:
    from stylekit.train.config import TrainConfig
    from stylekit.train.state import TrainState

STATE_FILE = "state.json"


def save_checkpoint(
    directory: str, state: TrainState, config: TrainConfig, preview: np.ndarray | None
) -> None:
    """Write the state as data files into a local `directory` (state.json last)."""
    os.makedirs(directory, exist_ok=True)
    model_file = os.path.join(directory, "model.safetensors")
    optim_file = os.path.join(directory, "optimizer.safetensors")
    save_file({k: v.detach().cpu().contiguous() for k, v in state.model.state_dict().items()}, model_file)
    tensors, groups = _flatten_optimizer(state.optimizer)
    save_file(tensors, optim_file, metadata={"param_groups": json.dumps(groups)})
    if preview is not None:
        with open(os.path.join(directory, "preview.jpg"), "wb") as f:
            f.write(images.encode(preview, "jpg", 90))
    meta = {
        "step": state.step,
        "epoch": state.epoch,
        "step_in_epoch": state.step_in_epoch,
        "worker_counts": state.worker_counts,
        "stylekit_version": __version__,
        "time": time.time(),
        "config": config.to_dict(),
        "files": {
            n: os.path.getsize(os.path.join(directory, n))
            for n in ("model.safetensors", "optimizer.safetensors")
        },
    }
    with open(os.path.join(directory, STATE_FILE), "w") as f:
        json.dump(meta, f, indent=1)


def load_checkpoint(directory: str, state: TrainState) -> dict[str, Any]:
    """Restore model and optimizer from a local checkpoint folder; returns its state.json."""
    with open(os.path.join(directory, STATE_FILE)) as f:
        meta = json.load(f)
    device = next(state.model.parameters()).device
    state.model.load_state_dict(load_file(os.path.join(directory, "model.safetensors"), device=str(device)))
    optim_path = os.path.join(directory, "optimizer.safetensors")
    from safetensors import safe_open

    with safe_open(optim_path, framework="pt", device=str(device)) as f:
        groups = json.loads(f.metadata()["param_groups"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no items()
    optim = _unflatten_optimizer(tensors, groups)
    # A one-style network's norms were (C,) parameters before they held styles, (1, C) now:
    # Adam's moments of a checkpoint from then take the parameter's shape.
    params = [p for group in state.optimizer.param_groups for p in group["params"]]
    for idx, moments in optim["state"].items():
        for name, value in moments.items():
            if value.dim() and value.shape != params[idx].shape and value.numel() == params[idx].numel():
                moments[name] = value.reshape(params[idx].shape)
    state.optimizer.load_state_dict(optim)
    state.step, state.epoch, state.step_in_epoch = meta["step"], meta["epoch"], meta["step_in_epoch"]
    state.worker_counts = [list(c) for c in meta.get("worker_counts", [])]
    return meta


def _flatten_optimizer(
    optimizer: torch.optim.Optimizer,
) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    sd = optimizer.state_dict()
    tensors = {
        f"state.{idx}.{name}": value.detach().cpu().contiguous()
        for idx, per_param in sd["state"].items()
        for name, value in per_param.items()
    }
    return tensors, sd["param_groups"]


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], groups: list[dict[str, Any]]) -> dict[str, Any]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = value
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    return {"state": state, "param_groups": groups}


def checkpoint_is_complete(read_text, size_of) -> dict[str, Any] | None:
    """state.json parsed, if it exists and the files it lists have their recorded sizes."""
    try:
        meta = json.loads(read_text(STATE_FILE))
        if all(size_of(n) == size for n, size in meta["files"].items()):
            return meta
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def find_latest_checkpoint(run_dir: str, opts: storage.StorageOptions) -> str | None:
    """URI of the complete checkpoint with the highest step under `run_dir`, if any."""
    best: tuple[int, str] | None = None
    for name in storage.list_folders(run_dir, opts):
        if not name.startswith("checkpoint_"):
            continue
        uri = storage.join(run_dir, name)
        fs, path = storage.arrow_filesystem(uri, opts, native_s3=False)
        meta = complete_checkpoint(fs, path)
        if meta is not None and (best is None or meta["step"] > best[0]):
            best = (meta["step"], uri)
    return best[1] if best else None


def complete_checkpoint(fs: pafs.FileSystem, path: str) -> dict[str, Any] | None:
    """A checkpoint's state.json if it is complete, read in place (nothing is downloaded)."""

    def read_text(name: str) -> str:
        with fs.open_input_stream(f"{path}/{name}") as f:
            return f.read().decode()

    def size_of(name: str) -> int:
        return fs.get_file_info(f"{path}/{name}").size or -1

    return checkpoint_is_complete(read_text, size_of)
