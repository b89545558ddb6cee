"""The inference options a command or job config holds, each written once: its type, default,
check and help text. No torch here: the bulk job's config, `--help` and the decode/encode
workers hold these without loading it; `inference.InferenceOptions.of` turns them into the
library's options.

One concern each: where and how the network runs (`RunOptions`), what the stylization
controls do to its pixels (`StyleControls`), and the memory budget that decides tiling
(`MemoryOptions`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stylekit.errors import ConfigError
from stylekit.infer import memory
from stylekit.infer.controls import MAX_STYLE_SCALE, MIN_STYLE_SCALE
from stylekit.options_meta import flag

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
COMPILE_MODES = ("off", "on", "cuda-graphs")


@dataclass(frozen=True)
class RunOptions:
    """Where the network runs, at which precision, and how many images go through one pass.
    "auto" picks the fastest path measured safe for the device (inference.py)."""

    device: str = field(default="auto", metadata=flag("auto, cpu, cuda or cuda:N"))
    precision: str = field(
        default="auto", metadata=flag("auto (bf16 on GPU, fp32 on CPU), fp32, bf16 or fp16")
    )
    batch_size: int = field(
        default=8,
        metadata=flag("images (video frames) per forward pass; only images of one size share a pass"),
    )
    # Off by default: measured no faster than the eager fast path on CPU once its compile
    # time is counted (benchmarks/RESULTS.md); on a GPU with one image size it can pay.
    compile: str = field(
        default="off",
        metadata=flag(
            "torch.compile the network: off, on, or cuda-graphs (on a GPU, CUDA graphs too; pays "
            "for many images of one size); falls back to eager if compiling fails",
            choices=list(COMPILE_MODES),
        ),
    )

    def __post_init__(self) -> None:
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise ConfigError(f"--device must be one of {', '.join(DEVICES)} (got {self.device!r})")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)} (got {self.precision!r})")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1 (got {self.batch_size})")
        if self.compile not in COMPILE_MODES:
            raise ConfigError(f"--compile must be one of {', '.join(COMPILE_MODES)} (got {self.compile!r})")


@dataclass(frozen=True)
class StyleControls:
    """The stylization controls (controls.py), applied around the network; at these defaults
    the pixels are the network's own."""

    strength: float = field(
        default=1.0,
        metadata=flag("how much style, 0-1: 1 the stylized image, 0 the original, between a blend"),
    )
    preserve_color: bool = field(
        default=False,
        metadata=flag("keep the original's own colours: only the stylized luminance is used"),
    )
    # None: the model's own scale (a pyramid on photos much larger than its `paint_side`).
    style_scale: float | None = field(
        default=None,
        metadata=flag(
            f"brush-stroke size relative to the image, {MIN_STYLE_SCALE:g}-{MAX_STYLE_SCALE:g}: 2 twice "
            "as large, 0.5 half (the network runs on the image resized by 1/SCALE); at the model's "
            "own scale it paints the same picture on an image of any size (stylekit models paint a "
            "large image as a pyramid from the size they were trained for; a reference .pth runs "
            "at full size)",
            default_text="the model's own scale",
        ),
    )

    def __post_init__(self) -> None:
        if not 0 <= self.strength <= 1:  # also refuses NaN
            raise ConfigError(f"--strength must be between 0 and 1 (got {self.strength})")
        if self.style_scale is not None and not MIN_STYLE_SCALE <= self.style_scale <= MAX_STYLE_SCALE:
            raise ConfigError(
                f"--style-scale must be between {MIN_STYLE_SCALE:g} and {MAX_STYLE_SCALE:g} "
                f"(got {self.style_scale})"
            )

    @property
    def active(self) -> bool:
        """Whether any control changes the network's pixels."""
        return self.strength != 1 or self.preserve_color or self.style_scale not in (None, 1)


@dataclass(frozen=True)
class MemoryOptions:
    """The memory budget as the user writes it ("2G"): an image whose untiled pass would go
    beyond it runs tiled (tiles.py), to the same pixels."""

    max_memory: str | None = field(
        default=None,
        metadata=flag(
            "peak memory of the stylizing process (in a bulk job, of each actor), e.g. 2G or 1500M: "
            "larger images run tiled to stay inside it (same pixels)",
            default_text="a share of the memory available (a bulk actor's: its CPU share of its node's)",
        ),
    )
    tile_dir: str | None = field(
        default=None,
        metadata=flag(
            "folder for tiled inference's scratch files", default_text="the system's temporary folder"
        ),
    )

    def __post_init__(self) -> None:
        self.budget  # noqa: B018 (validates)

    @property
    def budget(self) -> int | None:
        """The budget in bytes; None: left to the machine (memory.default_budget)."""
        return memory.parse_size(self.max_memory) if self.max_memory else None
