"""What a trained model file says about itself (its safetensors metadata): the run's settings
and, for a style model, `styles`: each style's name, painting, digest, its own schedule and its
final losses (nn/modelio.py reads them)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stylekit import __version__
from stylekit.nn.modelio import PAINT_SIDE_PER_CROP, LoadedModel, style_entries
from stylekit.train.config import TrainConfig
from stylekit.train.paintings import Painting, steps_each


@dataclass(frozen=True)
class StyleRecord:
    """A painting a run trained: where it is, its digest, its final mean loss terms."""

    painting: Painting
    digest: str
    final_losses: Mapping[str, float] = field(default_factory=dict)


def model_metadata(
    config: TrainConfig,
    step: int,
    vgg_source: str,
    final_losses: dict[str, float] | None = None,
    worker_counts: list[list[int]] | None = None,
    styles: Sequence[StyleRecord] = (),
) -> dict[str, str]:
    """What a model file says about itself: task, style, data, schedule, loss network and
    weights, final losses (mean weighted terms over the last steps), and each of `styles`."""
    if config.task == "sr":
        meta = sr_metadata(config, step, vgg_source, final_losses)
        meta.update(_workers(worker_counts))
        return meta
    meta = {
        "format": "stylekit",
        "task": "style",
        "stylekit_version": __version__,
        "style": ", ".join(config.style),
        "content_weight": repr(config.content_weight),
        "style_weight": repr(config.style_weight),
        "tv_weight": repr(config.tv_weight),
        "steps": str(step),
        "training_data": config.data_description or config.data,
        "image_size": str(config.image_size),
        # The shorter photo side the strokes are sized for (inference paints every photo from
        # that size up, infer/controls.py; modelio.paint_side_of).
        "paint_side": str(PAINT_SIDE_PER_CROP * config.image_size),
        "style_size": str(config.style_size or "original"),
        "crop_scale": repr(config.crop_scale),
        "batch_size": str(config.batch_size),
        "num_workers": str(config.num_workers),
        "lr": repr(config.lr),
        "vgg_weights": vgg_source,
        "loss_network": LOSS_NETWORKS.get(vgg_source.split(":")[0], vgg_source),
        "seed": str(config.seed),
    }
    meta.update(_workers(worker_counts))
    if config.content_warmup:
        meta["content_warmup_steps"] = str(config.content_warmup)
    if config.init_from:
        meta["initialised_from"] = _start_name(config.init_from)
    for name, value in (final_losses or {}).items():
        meta[f"final_{name}"] = f"{value:.6g}"
    if len(config.style) == 1:
        meta["style_name"] = Path(config.style[0].rstrip("/")).stem
    if styles:
        meta["styles"] = json.dumps(_style_entries(config, step, styles))
    return meta


def _style_entries(config: TrainConfig, step: int, styles: Sequence[StyleRecord]) -> list[dict[str, Any]]:
    """One entry a style: its name, painting, digest, own schedule and final losses. A run of
    several paintings gives each its share of the steps (train/paintings.py)."""
    counts = steps_each(step, len(styles), config.seed)
    mode = "added" if config.add_style else ("joint" if len(styles) > 1 else "single")
    entries = []
    for record, steps in zip(styles, counts, strict=True):
        schedule: dict[str, Any] = {
            "mode": mode,  # single, joint (one network, a painting a step), added (gamma/beta only)
            "steps": steps,
            "run_steps": step,
            "run_paintings": len(styles),
            "image_size": config.image_size,
            "style_size": config.style_size or "original",
            "crop_scale": config.crop_scale,
            "batch_size": config.batch_size,
            "num_workers": config.num_workers,
            "lr": config.trained_lr,
            "content_weight": config.content_weight,
            "style_weight": config.style_weight,
            "tv_weight": config.tv_weight,
            "content_warmup": config.content_warmup,
            "seed": config.seed,
        }
        if config.init_from:
            schedule["initialised_from"] = _start_name(config.init_from)
        entry: dict[str, Any] = {
            "name": record.painting.name,
            "painting": record.painting.location,
            "digest": record.digest,
            "schedule": schedule,
        }
        entry.update({f"final_{k}": float(f"{v:.6g}") for k, v in record.final_losses.items()})
        entries.append(entry)
    return entries


def added_metadata(base: LoadedModel, added: dict[str, str]) -> dict[str, str]:
    """The metadata of `base` with the styles an --add-style run trained (`added`, its own
    metadata) after its own: the file keeps what it said of its own training."""
    own = style_entries(base.metadata) or [{"name": name} for name in base.styles]
    meta = {k: v for k, v in base.metadata.items() if k not in ("style_name", "weights_sha256")}
    meta["styles"] = json.dumps(own + style_entries(added))
    meta["stylekit_version"] = __version__
    return meta


def _workers(worker_counts: list[list[int]] | None) -> dict[str, str]:
    """The worker counts the run had: "2 from step 1, 1 from step 41" (an elastic run that lost
    a node at step 41); absent when unknown."""
    if not worker_counts:
        return {}
    return {"worker_counts": ", ".join(f"{n} from step {first}" for first, n in worker_counts)}


def _start_name(init_from: str) -> str:
    """runs/NAME/model.safetensors is known by its run's name; a shipped model by its own."""
    start = Path(init_from.rstrip("/"))
    return start.parent.name if start.stem == "model" else start.stem


def sr_metadata(
    config: TrainConfig, step: int, vgg_source: str, final_losses: dict[str, float] | None = None
) -> dict[str, str]:
    """A super-resolution model's metadata: task=sr, factor, loss, data, schedule."""
    meta = {
        "format": "stylekit",
        "task": "sr",
        "stylekit_version": __version__,
        "factor": str(config.factor),
        "loss": config.sr_loss,
        "content_weight": repr(config.content_weight),
        "tv_weight": repr(config.tv_weight),
        "degradation": "Gaussian blur sigma 1.0, then MATLAB-style antialiased bicubic downsampling",
        "steps": str(step),
        "training_data": config.data_description or config.data,
        "data": config.data_description or config.data,
        "image_size": str(config.image_size),
        "batch_size": str(config.batch_size),
        "num_workers": str(config.num_workers),
        "lr": repr(config.lr),
        "seed": str(config.seed),
    }
    if config.sr_loss == "feature":
        meta["vgg_weights"] = vgg_source
        meta["loss_network"] = LOSS_NETWORKS.get(vgg_source.split(":")[0], vgg_source)
    if config.init_from:
        meta["initialised_from"] = _start_name(config.init_from)
    for name, value in (final_losses or {}).items():
        meta[f"final_{name}"] = f"{value:.6g}"
    return meta


LOSS_NETWORKS = {
    "caffe": "VGG-16 conv1_1..relu4_3, Caffe ImageNet weights (Simonyan & Zisserman), BGR minus mean",
    "imagenet": "VGG-16 conv1_1..relu4_3, torchvision IMAGENET1K_V1 weights, RGB mean/std",
    "random": "VGG-16, seeded random weights (untrained: not a real style model)",
}
