"""Training TransformerNet against the perceptual loss, or (task "sr") a super-resolution
network against the feature or per-pixel loss: config, one step, checkpoint state.

Nothing here knows about Ray: `train_job` runs this on every Ray Train worker. A checkpoint is
a folder of data files, never a pickle: `model.safetensors`, `optimizer.safetensors` (Adam's
moments, flattened), `state.json` (step, epoch, config; written last, with the sizes of the
other two so a half-copied checkpoint is recognised and skipped) and `preview.jpg`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from stylekit import __version__
from stylekit.errors import ConfigError, StylekitError
from stylekit.files import images, storage
from stylekit.nn.loss import LossTerms, PerceptualLoss
from stylekit.nn.model import TransformerNet
from stylekit.nn.sr import FACTORS, SRNet
from stylekit.nn.sr import MIN_SIDE as SR_MIN_SIDE
from stylekit.nn.srloss import SR_LOSSES, SRLoss
from stylekit.nn.vgg import WEIGHT_CHOICES, default_loss_weights, load_vgg
from stylekit.train import previews, steps

log = logging.getLogger(__name__)

EXAMPLES = resources.files("stylekit") / "examples"
DEFAULT_STYLE = str(EXAMPLES / "styles" / "starry_night.jpg")
DEFAULT_DATA = str(EXAMPLES / "content")
DEFAULT_OUTPUT = "runs"
PREVIEW_IMAGE = str(EXAMPLES / "content" / "chelsea.jpg")
PREVIEW_SIDE = 256
STATE_FILE = "state.json"
TASKS = ("style", "sr")


def _help(text: str, **more: Any) -> dict[str, Any]:
    return {"help": text, **more}


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; `jobs/train.py` builds its flags from these fields."""

    task: str = field(
        default="style",
        metadata=_help(
            "style: a style-transfer network (--style); sr: a super-resolution network (--factor, --sr-loss; --style unused)",
            choices=list(TASKS),
        ),
    )
    factor: int = field(
        default=4,
        metadata=_help("--task sr: the upscaling factor, 4 or 8", choices=list(FACTORS)),
    )
    sr_loss: str = field(
        default="feature",
        metadata=_help(
            "--task sr: 'feature' (the paper's VGG relu2_2 feature reconstruction loss + TV) or 'pixel' (per-pixel MSE, its baseline)",
            choices=list(SR_LOSSES),
        ),
    )
    style: str = field(
        default=DEFAULT_STYLE,
        metadata=_help(
            "style image: local path or fsspec URL (s3://, gs://, az://, ...) (default: the bundled Starry Night)"
        ),
    )
    data: str = field(
        default=DEFAULT_DATA,
        metadata=_help(
            "training images: a folder or fsspec URL prefix (s3://, gs://, az://, ...), searched recursively for jpg/jpeg/png/webp (default: the bundled example photos)"
        ),
    )
    output: str = field(
        default=DEFAULT_OUTPUT,
        metadata=_help(
            "where runs go: a local folder or fsspec URL prefix (not memory://); the run lives in OUTPUT/NAME"
        ),
    )
    name: str = field(
        default="",
        metadata=_help("run name (default: the style file's stem; for --task sr, sr_xF or sr_xF_pixel)"),
    )
    epochs: int | None = field(
        default=None,
        metadata=_help(
            "passes over the training data (default: 2, or as many as --max-steps needs when that is given)"
        ),
    )
    max_steps: int | None = field(
        default=None,
        metadata=_help("optimizer steps to train for (with --epochs too, whichever ends first)"),
    )
    data_description: str = field(
        default="",
        metadata=_help(
            "what the training data is, recorded in the model's metadata (default: the --data location)"
        ),
    )
    batch_size: int = field(default=4, metadata=_help("images per step per worker"))
    image_size: int = field(
        default=256,
        metadata=_help(
            "training crops are IMAGE_SIZE x IMAGE_SIZE (shorter side resized, centre crop; --task sr: random windows at full resolution, a multiple of --factor)"
        ),
    )
    lr: float = field(default=1e-3, metadata=_help("Adam learning rate"))
    content_weight: float | None = field(
        default=None,
        metadata=_help(
            "weight of the relu2_2 feature loss (default: the loss network's: 1 for caffe, 1e5 for imagenet)"
        ),
    )
    style_weight: float | None = field(
        default=None,
        metadata=_help(
            "weight of the Gram-matrix style loss (default: the loss network's: 5 for caffe, 1e10 for imagenet)"
        ),
    )
    tv_weight: float | None = field(
        default=None,
        metadata=_help(
            "weight of the total-variation loss, a mean squared neighbour difference of 0-255 pixels (default: the loss network's: 0.4 for caffe, 10 for imagenet; both are Johnson's tv_strength 1e-6 at 256 px, batch 4; --task sr: the same with the feature loss, 0 with the pixel loss)"
        ),
    )
    style_size: int | None = field(
        default=None, metadata=_help("resize the style image so its longest side is this (default: as is)")
    )
    vgg_weights: str = field(
        default="caffe",
        metadata=_help(
            "loss network: 'caffe' (the paper's Caffe VGG-16, built in), 'imagenet' (torchvision's, via its cache), a local state-dict file (caffe:PATH or torchvision:PATH to say its input convention), or 'random' (seeded, untrained: tests only)"
        ),
    )
    seed: int = field(default=42, metadata=_help("seed for weights, data order and a random VGG"))
    checkpoint_every: int = field(
        default=2000, metadata=_help("steps between checkpoints (one is always written at the end)")
    )
    log_every: int = field(default=20, metadata=_help("steps between progress lines"))
    num_workers: int = field(default=1, metadata=_help("data-parallel training workers"))
    use_gpu: bool | None = field(default=None, metadata={"cli": False})
    cpus_per_worker: float | None = field(
        default=None,
        metadata=_help(
            "CPUs reserved per worker (default: 1 with GPUs; on CPU-only clusters, what leaves one CPU for data loading)"
        ),
    )
    precision: str = field(
        default="auto",
        metadata=_help(
            "auto (bf16 autocast on GPU, fp32 on CPU), fp32 or bf16", choices=["auto", "fp32", "bf16"]
        ),
    )
    max_failures: int = field(
        default=3,
        metadata=_help("worker failures to recover from (from the last checkpoint) before giving up"),
    )
    content_warmup: int = field(
        default=0,
        metadata=_help(
            "train the first N steps on content and TV only, then add the style: the network (whose output starts black) first learns to reproduce the photo, so short runs keep recognisable content (0: the paper's schedule, style from the start)"
        ),
    )
    init_from: str | None = field(
        default=None,
        metadata=_help(
            "start from this model's weights (a shipped name like starry_night, or a model file) instead of a random initialisation: a new style then needs far fewer steps, since the network already reproduces content; a resumed run continues from its checkpoint instead"
        ),
    )
    s3_endpoint: str | None = field(
        default=None, metadata=_help("S3-compatible endpoint URL (else AWS_ENDPOINT_URL, else AWS)")
    )

    def __post_init__(self) -> None:
        # Ray Train runs each worker in its own directory: local paths must not be relative.
        if self.init_from and not storage.is_uri(self.init_from) and os.path.exists(self.init_from):
            object.__setattr__(self, "init_from", os.path.abspath(self.init_from))
        for name in ("style", "data", "output", "vgg_weights"):
            value = getattr(self, name)
            if name == "vgg_weights":
                value = _absolute_vgg_weights(value)
            elif not storage.is_uri(value):
                value = os.path.abspath(value)
            object.__setattr__(self, name, value)
        if self.task not in TASKS:
            raise ConfigError(f"--task must be style or sr (got {self.task!r})")
        # Loss weights follow the loss network: its feature scale decides them (see nn/vgg.py).
        defaults = default_loss_weights(self.vgg_weights)
        for name, value in (
            ("content_weight", defaults.content),
            ("style_weight", defaults.style if self.task == "style" else 0.0),
            ("tv_weight", defaults.tv if self.task == "style" else sr_tv_default(self.sr_loss, defaults.tv)),
        ):
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        if self.epochs is None:
            object.__setattr__(self, "epochs", 2 if self.max_steps is None else 1_000_000)
        positive = ("epochs", "batch_size", "image_size", "checkpoint_every", "log_every", "num_workers")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1 (got {getattr(self, name)})")
        if self.image_size < 16:
            raise ConfigError(f"--image-size must be >= 16 (got {self.image_size})")
        if self.content_warmup < 0:
            raise ConfigError(f"--content-warmup must be >= 0 (got {self.content_warmup})")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"--max-steps must be >= 1 (got {self.max_steps})")
        if self.style_size is not None and self.style_size < 16:
            raise ConfigError(f"--style-size must be >= 16 (got {self.style_size})")
        if not self.lr > 0:
            raise ConfigError(f"--lr must be > 0 (got {self.lr})")
        for name in ("content_weight", "style_weight", "tv_weight"):
            if getattr(self, name) < 0:  # type: ignore[operator]
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0 (got {getattr(self, name)})")
        if self.cpus_per_worker is not None and not self.cpus_per_worker > 0:
            raise ConfigError(f"--cpus-per-worker must be > 0 (got {self.cpus_per_worker})")
        if self.max_failures < -1:
            raise ConfigError("--max-failures must be >= 0, or -1 for no limit")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"--precision must be auto, fp32 or bf16 (got {self.precision!r})")
        if self.task == "sr":
            self._check_sr()
        if not self.name:
            object.__setattr__(self, "name", default_name(self))
        if "/" in self.name or self.name in (".", ".."):
            raise ConfigError(f"--name {self.name!r} must be a plain name, not a path")
        storage.StorageOptions(self.s3_endpoint)  # validates the endpoint

    def _check_sr(self) -> None:
        if self.factor not in FACTORS:
            raise ConfigError(f"--factor must be 4 or 8 (got {self.factor})")
        if self.sr_loss not in SR_LOSSES:
            raise ConfigError(f"--sr-loss must be feature or pixel (got {self.sr_loss!r})")
        if self.image_size % self.factor or self.image_size // self.factor < SR_MIN_SIDE:
            raise ConfigError(
                f"--image-size must be a multiple of --factor {self.factor} and at least "
                f"{SR_MIN_SIDE * self.factor} (got {self.image_size})"
            )
        if self.content_warmup:
            raise ConfigError("--content-warmup applies to style training only; drop it for --task sr")

    @property
    def run_dir(self) -> str:
        return storage.join(self.output, self.name)

    @property
    def model_path(self) -> str:
        return storage.join(self.run_dir, "model.safetensors")

    @property
    def storage_options(self) -> storage.StorageOptions:
        return storage.StorageOptions(self.s3_endpoint)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def sr_tv_default(sr_loss: str, feature_tv: float) -> float:
    """TV weight for super-resolution: the style default with the feature loss (Johnson's
    tv_strength 1e-6, whose scale the feature loss shares); none with the per-pixel loss, which
    is the plain MSE baseline (SRCNN) and is itself a smoothing loss."""
    return feature_tv if sr_loss == "feature" else 0.0


def default_name(config: TrainConfig) -> str:
    if config.task == "sr":
        return f"sr_x{config.factor}" + ("_pixel" if config.sr_loss == "pixel" else "")
    return Path(config.style.rstrip("/")).stem or "style"


def _absolute_vgg_weights(value: str) -> str:
    """Keep named sources; make local file paths absolute (Ray workers run elsewhere)."""
    if value in WEIGHT_CHOICES:
        return value
    prefix, _, rest = value.partition(":")
    if rest and prefix in ("caffe", "torchvision"):
        return f"{prefix}:{rest if storage.is_uri(rest) else os.path.abspath(rest)}"
    return value if storage.is_uri(value) else os.path.abspath(value)


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return torch.bfloat16 if precision == "bf16" else torch.float32


def load_style_tensor(config: TrainConfig) -> torch.Tensor:
    """The style image as (1, 3, H, W) float in [0, 255]."""
    try:
        pixels = images.decode(storage.read_bytes(config.style, config.storage_options))
    except images.ImageError as e:
        raise StylekitError(f"--style {config.style}: {e}") from None
    if config.style_size:
        pixels = images.resize_longest(pixels, config.style_size)
    return images.to_tensor(pixels)


@dataclass
class TrainState:
    """The mutable part of a run: network, optimizer and where we are."""

    model: TransformerNet | SRNet
    optimizer: torch.optim.Adam
    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0


def new_state(config: TrainConfig, device: torch.device) -> TrainState:
    torch.manual_seed(config.seed)
    model: TransformerNet | SRNet = SRNet(config.factor) if config.task == "sr" else TransformerNet()
    if config.init_from:
        from stylekit.files.modelio import load_model

        start = load_model(config.init_from, config.storage_options).model
        if type(start) is not type(model) or getattr(start, "scale", 1) != getattr(model, "scale", 1):
            raise StylekitError(f"--init-from {config.init_from} is not a model of this task and factor")
        model.load_state_dict(start.state_dict())
    model = model.to(device)
    return TrainState(model, torch.optim.Adam(model.parameters(), lr=config.lr))


def build_loss(config: TrainConfig, device: torch.device) -> PerceptualLoss | SRLoss:
    if config.task == "sr":
        # The per-pixel loss needs no loss network: no VGG is loaded for it.
        vgg = (
            load_vgg(config.vgg_weights, seed=config.seed, options=config.storage_options)
            if config.sr_loss == "feature"
            else None
        )
        loss = SRLoss(config.sr_loss, vgg, float(config.content_weight), float(config.tv_weight))  # type: ignore[arg-type]
        return loss.to(device)
    vgg = load_vgg(config.vgg_weights, seed=config.seed, options=config.storage_options).to(device)
    style = load_style_tensor(config).to(device)
    return PerceptualLoss(vgg, style, config.content_weight, config.style_weight, config.tv_weight).to(device)


def style_weight_at(config: TrainConfig, step: int) -> float:
    """The style weight for the step after `step` steps: 0 during the content warm-up."""
    return 0.0 if step < config.content_warmup else float(config.style_weight)  # type: ignore[arg-type]


def train_step(
    model: torch.nn.Module,
    loss_fn: PerceptualLoss | SRLoss,
    optimizer: torch.optim.Optimizer,
    batch: torch.Tensor,
    dtype: torch.dtype = torch.float32,
    lowres: torch.Tensor | None = None,
) -> LossTerms:
    """One Adam step on a (B, H, W, 3) uint8 batch already on the device (see
    `stylekit.train.steps.train_step`: what it does to be fast, and the benchmark that measures it).
    Super-resolution: `lowres` (B, H/f, W/f, 3) uint8 is the input and `batch` the target."""
    if lowres is not None:
        return steps.sr_train_step(model, loss_fn, optimizer, lowres, batch, dtype)
    return steps.train_step(model, loss_fn, optimizer, batch, dtype)  # type: ignore[arg-type]


# --- checkpoints: plain data files -------------------------------------------------------


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
    state.optimizer.load_state_dict(_unflatten_optimizer(tensors, groups))
    state.step, state.epoch, state.step_in_epoch = meta["step"], meta["epoch"], meta["step_in_epoch"]
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


def preview_pixels(model: torch.nn.Module) -> np.ndarray:
    """The current stylization of the fixed preview photo, (H, W, 3) uint8."""
    pixels = images.resize_longest(images.load_image(PREVIEW_IMAGE), PREVIEW_SIDE)
    pixels = previews.network_input(model, pixels)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.no_grad():
        y = model(images.to_tensor(pixels).to(device))
    model.train(was_training)
    return images.to_pixels(y[0])


def model_metadata(
    config: TrainConfig, step: int, vgg_source: str, final_losses: dict[str, float] | None = None
) -> dict[str, str]:
    """What a model file says about itself: task, style, data, schedule, loss network and
    weights, final losses (mean weighted terms over the last steps)."""
    if config.task == "sr":
        return sr_metadata(config, step, vgg_source, final_losses)
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
        # The shorter photo side the strokes are sized for (inference paints larger photos as
        # a pyramid from it, infer/controls.py): measured on 128 px models, four times the
        # training crops (files/modelio.paint_side_of).
        "paint_side": str(4 * config.image_size),
        "style_size": str(config.style_size or "original"),
        "batch_size": str(config.batch_size),
        "num_workers": str(config.num_workers),
        "lr": repr(config.lr),
        "vgg_weights": vgg_source,
        "loss_network": LOSS_NETWORKS.get(vgg_source.split(":")[0], vgg_source),
        "seed": str(config.seed),
    }
    if config.content_warmup:
        meta["content_warmup_steps"] = str(config.content_warmup)
    if config.init_from:
        meta["initialised_from"] = _start_name(config.init_from)
    for name, value in (final_losses or {}).items():
        meta[f"final_{name}"] = f"{value:.6g}"
    return meta


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
