"""The inference options a command or job config holds, each written once: its type, default,
check and help text. No torch here: the bulk job's config, `--help` and the decode/encode
workers hold these without loading it; `inference.InferenceOptions.of` turns them into the
library's options.

One concern each: where and how the network runs (`RunOptions`), which of a model's styles
it paints (`StyleChoice`), what the stylization controls do to its pixels (`StyleControls`),
and the memory budget that decides tiling (`MemoryOptions`).
"""

from __future__ import annotations

import math
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


# One selection: (style name, weight) pairs; one pair of weight 1 for a single style.
Blend = tuple[tuple[str, float], ...]
WEIGHT_SUM_TOLERANCE = 1e-3


@dataclass(frozen=True)
class StyleChoice:
    """Which of a model's styles to paint with (a multi-style model holds several; see
    docs/multistyle.md). The text is checked here; the names against the model when it is read
    (infer/selection.py)."""

    style: str | None = field(
        default=None,
        metadata=flag(
            "which style of a multi-style model: NAME; NAME,NAME,... for each in turn (one output "
            "each, in a folder named after the style); NAME:W+NAME:W for a blend, a painting "
            "between them (weights that sum to 1; NAME+NAME for equal parts). A one-style model "
            "needs none",
            metavar="STYLE",
        ),
    )

    def __post_init__(self) -> None:
        self.blends  # noqa: B018 (validates)

    @property
    def blends(self) -> tuple[Blend, ...]:
        """The selections in order, each a blend; () when none was given."""
        if self.style is None:
            return ()
        blends = tuple(parse_blend(part) for part in self.style.split(","))
        labels = [blend_label(b) for b in blends]
        twice = sorted({label for label in labels if labels.count(label) > 1})
        if twice:
            raise ConfigError(f"--style {self.style}: {twice[0]} is chosen twice; name each style once")
        return blends


def parse_blend(text: str) -> Blend:
    """`NAME`, `NAME:W+NAME:W` or `NAME+NAME` (equal parts) -> ((name, weight), ...)."""
    parts = [p.strip() for p in text.split("+")]
    if not all(parts):
        raise ConfigError(
            f"--style {text.strip()!r}: a style name is missing; e.g. --style wave or a:0.5+b:0.5"
        )
    pairs = [p.partition(":") for p in parts]
    names = [name.strip() for name, _, _ in pairs]
    if not all(names):
        raise ConfigError(f"--style {text.strip()!r}: a weight without a style name; write NAME:WEIGHT")
    if len(set(names)) != len(names):
        raise ConfigError(f"--style {text.strip()!r}: a style appears twice in one blend; give each once")
    given = [weight.strip() for _, colon, weight in pairs if colon]
    if not given:
        return tuple((name, 1.0 / len(names)) for name in names)
    if len(given) != len(names):
        raise ConfigError(
            f"--style {text.strip()!r}: give every style in the blend a weight, or none for equal parts"
        )
    weights = []
    for w in given:
        try:
            value = float(w)
        except ValueError:
            raise ConfigError(f"--style {text.strip()!r}: weight {w!r} is not a number") from None
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(
                f"--style {text.strip()!r}: weights must be positive (got {w}); leave a style out instead"
            )
        weights.append(value)
    total = sum(weights)
    if abs(total - 1) > WEIGHT_SUM_TOLERANCE:
        hint = (
            "a single style takes no weight (less style: --strength)"
            if len(names) == 1
            else "make them sum to 1"
        )
        raise ConfigError(f"--style {text.strip()!r}: the weights sum to {total:g}; {hint}")
    return tuple(zip(names, weights, strict=True))


def blend_label(blend: Blend) -> str:
    """How outputs of a selection are named: the style's name, or `a=0.7+b=0.3` for a blend."""
    if len(blend) == 1:
        return blend[0][0]
    return "+".join(f"{name}={weight:g}" for name, weight in blend)


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
