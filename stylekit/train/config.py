"""The training run's config: every flag of `jobs/train.py`, validated once, with the defaults
that follow the loss network and the task."""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from stylekit.errors import ConfigError, StylekitError
from stylekit.files import storage
from stylekit.nn.sr import FACTORS
from stylekit.nn.sr import MIN_SIDE as SR_MIN_SIDE
from stylekit.nn.srloss import SR_LOSSES
from stylekit.nn.vgg import WEIGHT_CHOICES, default_loss_weights
from stylekit.options_meta import flag

EXAMPLES = resources.files("stylekit") / "examples"
DEFAULT_STYLE = str(EXAMPLES / "styles" / "starry_night.jpg")
DEFAULT_DATA = str(EXAMPLES / "content")
DEFAULT_OUTPUT = "runs"
PREVIEW_IMAGE = str(EXAMPLES / "content" / "chelsea.jpg")
PREVIEW_SIDE = 256
TASKS = ("style", "sr")
# --crop-scale's ceiling: past 4x the shorter side a 128 px window holds a sliver of texture, not
# a scene the network must keep.
MAX_CROP_SCALE = 4.0


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; `jobs/train.py` builds its flags from these fields."""

    task: str = field(
        default="style",
        metadata=flag(
            "style: a style-transfer network (--style); sr: a super-resolution network (--factor, --sr-loss; --style unused)",
            choices=list(TASKS),
        ),
    )
    factor: int = field(
        default=4,
        metadata=flag("--task sr: the upscaling factor, 4 or 8", choices=list(FACTORS)),
    )
    sr_loss: str = field(
        default="feature",
        metadata=flag(
            "--task sr: 'feature' (the paper's VGG relu2_2 feature reconstruction loss + TV) or 'pixel' (per-pixel MSE, its baseline)",
            choices=list(SR_LOSSES),
        ),
    )
    # One entry a painting or a folder of them; a str given in code is one entry.
    style: tuple[str, ...] = field(
        default=(DEFAULT_STYLE,),
        metadata=flag(
            "a painting to train: an image (local path or fsspec URL: s3://, gs://, az://, ...), or a "
            "folder or prefix of them; repeat for one network of several paintings, one style each "
            "(docs/multistyle.md)",
            metavar="PAINTING",
            default_text="the bundled Starry Night",
        ),
    )
    data: str = field(
        default=DEFAULT_DATA,
        metadata=flag(
            "training images: a folder or fsspec URL prefix (s3://, gs://, az://, ...), searched recursively for jpg/jpeg/png/webp",
            default_text="the bundled example photos",
        ),
    )
    output: str = field(
        default=DEFAULT_OUTPUT,
        metadata=flag(
            "where runs go: a local folder or fsspec URL prefix (not memory://); the run lives in OUTPUT/NAME"
        ),
    )
    name: str = field(
        default="",
        metadata=flag("run name", default_text="the style file's stem; for --task sr, sr_xF or sr_xF_pixel"),
    )
    epochs: int | None = field(
        default=None,
        metadata=flag(
            "passes over the training data",
            default_text="2, or as many as --max-steps needs when that is given",
        ),
    )
    max_steps: int | None = field(
        default=None,
        metadata=flag("optimizer steps to train for (with --epochs too, whichever ends first)"),
    )
    data_description: str = field(
        default="",
        metadata=flag(
            "what the training data is, recorded in the model's metadata", default_text="the --data location"
        ),
    )
    batch_size: int = field(default=4, metadata=flag("images per step per worker"))
    image_size: int = field(
        default=256,
        metadata=flag(
            "training crops are IMAGE_SIZE x IMAGE_SIZE (shorter side resized, centre crop, or random windows with --crop-scale; --task sr: random windows at full resolution, a multiple of --factor)"
        ),
    )
    crop_scale: float = field(
        default=1.0,
        metadata=flag(
            "style training: each epoch a random IMAGE_SIZE window of the photo with its shorter side resized to a random length from IMAGE_SIZE to CROP_SCALE x IMAGE_SIZE, so the network sees the photos' contents at every scale in between; 1: the paper's fixed centre crop of the whole photo"
        ),
    )
    lr: float = field(default=1e-3, metadata=flag("Adam learning rate"))
    content_weight: float | None = field(
        default=None,
        metadata=flag(
            "weight of the relu2_2 feature loss",
            default_text="the loss network's: 1 for caffe, 1e5 for imagenet",
        ),
    )
    style_weight: float | None = field(
        default=None,
        metadata=flag(
            "weight of the Gram-matrix style loss",
            default_text="the loss network's: 5 for caffe, 1e10 for imagenet",
        ),
    )
    tv_weight: float | None = field(
        default=None,
        metadata=flag(
            "weight of the total-variation loss, a mean squared neighbour difference of 0-255 pixels",
            default_text="the loss network's: 0.4 for caffe, 10 for imagenet, both Johnson's tv_strength 1e-6 at 256 px, batch 4; --task sr: the same with the feature loss, 0 with the pixel loss",
        ),
    )
    style_size: int | None = field(
        default=None,
        metadata=flag("resize the style image so its longest side is this", default_text="as is"),
    )
    vgg_weights: str = field(
        default="caffe",
        metadata=flag(
            "loss network: 'caffe' (the paper's Caffe VGG-16, built in), 'imagenet' (torchvision's, via its cache), a local state-dict file (caffe:PATH or torchvision:PATH to say its input convention), or 'random' (seeded, untrained: tests only)"
        ),
    )
    seed: int = field(default=42, metadata=flag("seed for weights, data order and a random VGG"))
    checkpoint_every: int = field(
        default=2000, metadata=flag("steps between checkpoints (one is always written at the end)")
    )
    log_every: int = field(default=20, metadata=flag("steps between progress lines"))
    num_workers: str | int = field(
        default="1",
        metadata=flag(
            "data-parallel training workers: N, or MIN-MAX for an elastic run that goes on with "
            "fewer workers (at least MIN) while nodes are gone and grows back to MAX when they return",
            metavar="N|MIN-MAX",
        ),
    )
    use_gpu: bool | None = field(
        default=None,
        metadata={
            "switch": {
                "--gpu": (True, "train on GPUs (fails if the cluster has none)"),
                "--cpu": (False, "train on CPUs even if the cluster has GPUs"),
            }
        },
    )
    cpus_per_worker: float | None = field(
        default=None,
        metadata=flag(
            "CPUs reserved per worker",
            default_text="1 with GPUs; on CPU-only clusters, what leaves one CPU for data loading",
        ),
    )
    precision: str = field(
        default="auto",
        metadata=flag(
            "auto (bf16 autocast on GPU, fp32 on CPU), fp32 or bf16 (on a CPU with AMX about 2x faster than fp32, but its models are grainier)",
            choices=["auto", "fp32", "bf16"],
        ),
    )
    max_failures: int = field(
        default=3,
        metadata=flag("worker failures to recover from (from the last checkpoint) before giving up"),
    )
    wait_for_nodes: float = field(
        default=600.0,
        metadata=flag(
            "seconds to wait for an autoscaling cluster to add nodes the workers fit on (a 0-CPU "
            "head, GPU nodes not up yet) before giving up with one line; 0: do not wait"
        ),
    )
    stall_timeout: float = field(
        default=1800.0,
        metadata=flag(
            "seconds with no training step before the run ends with one line (workers that "
            "cannot be placed, a hung data read); a rerun resumes from the last checkpoint; 0: never"
        ),
    )
    content_warmup: int = field(
        default=0,
        metadata=flag(
            "train the first N steps on content and TV only, then add the style: the network (whose output starts black) first learns to reproduce the photo, so short runs keep recognisable content (0: the paper's schedule, style from the start)"
        ),
    )
    init_from: str | None = field(
        default=None,
        metadata=flag(
            "start from this model's weights (a shipped name like starry_night, or a model file) instead of a random initialisation: a new style then needs far fewer steps, since the network already reproduces content (a model of several styles: slot by slot; --add-style: add the paintings to it instead); a resumed run continues from its checkpoint instead"
        ),
    )
    add_style: bool = field(
        default=False,
        metadata=flag(
            "add the --style paintings to the --init-from model as new styles, training only their "
            "instance-norm scales and shifts (every convolution frozen): its own styles keep their "
            "pixels bit for bit. Without it --init-from is a warm start: every weight trains"
        ),
    )
    # Measured (benchmarks/bench_multistyle.py, 128 px, a painting added in 37 steps against a
    # whole network's 150): total loss 1.6x the whole network's at the network's 1e-3, 1.17x
    # at 1e-2, 1.08x at 3e-2, 1.03x at 1e-1: the new gamma and beta must travel far.
    add_lr: float = field(
        default=1e-1,
        metadata=flag(
            "--add-style: Adam learning rate of the new styles' scales and shifts (a few thousand "
            "numbers that must travel far from their start, so larger than --lr)"
        ),
    )
    storage_options: storage.StorageOptions = field(default_factory=storage.StorageOptions)

    def __post_init__(self) -> None:
        styles = (self.style,) if isinstance(self.style, str) else tuple(self.style)
        object.__setattr__(self, "style", styles)
        # Ray Train runs each worker in its own directory: local paths must not be relative.
        if self.init_from and not storage.is_uri(self.init_from) and os.path.exists(self.init_from):
            object.__setattr__(self, "init_from", os.path.abspath(self.init_from))
        for name in ("data", "output", "vgg_weights"):
            value = getattr(self, name)
            if name == "vgg_weights":
                value = _absolute_vgg_weights(value)
            elif not storage.is_uri(value):
                value = os.path.abspath(value)
            object.__setattr__(self, name, value)
        object.__setattr__(self, "style", tuple(_absolute(s) for s in self.style))
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
        object.__setattr__(self, "num_workers", str(self.num_workers).strip())
        self.worker_range  # noqa: B018 (validates)
        positive = ("epochs", "batch_size", "image_size", "checkpoint_every", "log_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1 (got {getattr(self, name)})")
        if self.image_size < 16:
            raise ConfigError(f"--image-size must be >= 16 (got {self.image_size})")
        if self.content_warmup < 0:
            raise ConfigError(f"--content-warmup must be >= 0 (got {self.content_warmup})")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"--max-steps must be >= 1 (got {self.max_steps})")
        if not 1 <= self.crop_scale <= MAX_CROP_SCALE:
            raise ConfigError(f"--crop-scale must be from 1 to {MAX_CROP_SCALE:g} (got {self.crop_scale:g})")
        if self.style_size is not None and self.style_size < 16:
            raise ConfigError(f"--style-size must be >= 16 (got {self.style_size})")
        for name in ("lr", "add_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be > 0 (got {getattr(self, name)})")
        for name in ("content_weight", "style_weight", "tv_weight"):
            if getattr(self, name) < 0:  # type: ignore[operator]
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0 (got {getattr(self, name)})")
        if self.cpus_per_worker is not None and not self.cpus_per_worker > 0:
            raise ConfigError(f"--cpus-per-worker must be > 0 (got {self.cpus_per_worker})")
        for name in ("wait_for_nodes", "stall_timeout"):
            if getattr(self, name) < 0:
                raise ConfigError(
                    f"--{name.replace('_', '-')} must be >= 0 seconds (got {getattr(self, name)})"
                )
        if self.max_failures < -1:
            raise ConfigError("--max-failures must be >= 0, or -1 for no limit")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"--precision must be auto, fp32 or bf16 (got {self.precision!r})")
        if self.task == "sr":
            self._check_sr()
        else:
            self._check_styles()
        if not self.name:
            object.__setattr__(self, "name", default_name(self))
        if "/" in self.name or self.name in (".", ".."):
            raise ConfigError(f"--name {self.name!r} must be a plain name, not a path")

    def _check_styles(self) -> None:
        if not self.style or not all(self.style):
            raise ConfigError("--style needs a painting: an image file, or a folder or prefix of them")
        if self.add_style and not self.init_from:
            raise ConfigError("--add-style needs --init-from MODEL: the model to add the paintings to")
        # Folders are listed (and their paintings' names checked) when the run starts.
        from stylekit.train.paintings import check_names, is_folder, name_of

        files = [s for s in self.style if not is_folder(s)]
        try:
            check_names([name_of(s) for s in files], files)
        except StylekitError as e:
            raise ConfigError(str(e)) from None

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
        if self.crop_scale != 1:
            raise ConfigError(
                "--crop-scale applies to style training only (--task sr takes random full-resolution windows); drop it"
            )
        if self.add_style:
            raise ConfigError("--add-style applies to style models only; drop it for --task sr")

    @property
    def worker_range(self) -> tuple[int, int]:
        """(MIN, MAX) of --num-workers; equal for a fixed number."""
        low, dash, high = self.num_workers.partition("-")
        try:
            lo, hi = int(low), int(high if dash else low)
        except ValueError:
            raise ConfigError(f"--num-workers must be N or MIN-MAX (got {self.num_workers!r})") from None
        if not 1 <= lo <= hi:
            raise ConfigError(f"--num-workers needs 1 <= MIN <= MAX (got {self.num_workers!r})")
        return lo, hi

    @property
    def min_workers(self) -> int:
        return self.worker_range[0]

    @property
    def max_workers(self) -> int:
        return self.worker_range[1]

    @property
    def trained_lr(self) -> float:
        """The learning rate of what trains: --add-lr for added styles, else --lr."""
        return self.add_lr if self.add_style else self.lr

    @property
    def run_dir(self) -> str:
        return storage.join(self.output, self.name)

    @property
    def model_path(self) -> str:
        return storage.join(self.run_dir, "model.safetensors")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """The config `to_dict` gave (as Ray Train hands it to each worker): the option
        dataclasses it holds come back as themselves."""
        hints = typing.get_type_hints(cls)
        return cls(
            **{
                k: hints[k](**v) if dataclasses.is_dataclass(hints[k]) and isinstance(v, dict) else v
                for k, v in values.items()
            }
        )


def sr_tv_default(sr_loss: str, feature_tv: float) -> float:
    """TV weight for super-resolution: the style default with the feature loss (Johnson's
    tv_strength 1e-6, whose scale the feature loss shares); none with the per-pixel loss, which
    is the plain MSE baseline (SRCNN) and is itself a smoothing loss."""
    return feature_tv if sr_loss == "feature" else 0.0


def default_name(config: TrainConfig) -> str:
    """sr_xF (sr_xF_pixel) for super-resolution; for style, the painting's (or folder's) stem,
    several joined by '+' (the first and a count past three); BASE+... with --add-style."""
    if config.task == "sr":
        return f"sr_x{config.factor}" + ("_pixel" if config.sr_loss == "pixel" else "")
    stems = [Path(s.rstrip("/")).stem or "style" for s in config.style]
    name = "+".join(stems) if len(stems) <= 3 else f"{stems[0]}+{len(stems) - 1}more"
    if config.add_style and config.init_from:
        start = Path(config.init_from.rstrip("/"))
        name = f"{start.parent.name if start.stem == 'model' else start.stem}+{name}"
    return name


def _absolute(location: str) -> str:
    """A local path made absolute (Ray's workers run elsewhere), keeping a folder's '/'."""
    if storage.is_uri(location):
        return location
    return os.path.abspath(location) + ("/" if location.endswith("/") and location != "/" else "")


def _absolute_vgg_weights(value: str) -> str:
    """Keep named sources; make local file paths absolute (Ray workers run elsewhere)."""
    if value in WEIGHT_CHOICES:
        return value
    prefix, _, rest = value.partition(":")
    if rest and prefix in ("caffe", "torchvision"):
        return f"{prefix}:{rest if storage.is_uri(rest) else os.path.abspath(rest)}"
    return value if storage.is_uri(value) else os.path.abspath(value)
