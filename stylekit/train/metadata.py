"""What a trained model file says about itself (its safetensors metadata)."""

from __future__ import annotations

from pathlib import Path

from stylekit import __version__
from stylekit.nn.modelio import PAINT_SIDE_PER_CROP
from stylekit.train.config import TrainConfig


def model_metadata(
    config: TrainConfig,
    step: int,
    vgg_source: str,
    final_losses: dict[str, float] | None = None,
    worker_counts: list[list[int]] | None = None,
) -> dict[str, str]:
    """What a model file says about itself: task, style, data, schedule, loss network and
    weights, final losses (mean weighted terms over the last steps)."""
    if config.task == "sr":
        meta = sr_metadata(config, step, vgg_source, final_losses)
        meta.update(_workers(worker_counts))
        return meta
    meta = {
        "format": "stylekit",
        "task": "style",
        "stylekit_version": __version__,
        "style": config.style,
        "style_name": Path(config.style.rstrip("/")).stem,
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
