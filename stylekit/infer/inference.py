"""Run a TransformerNet over images: the one code path of `python -m stylekit stylize` and of
the bulk job's actors, so both give the same pixels.

Images are grouped by size, so a batch never pads a small photo up to a large one; each group
runs in chunks of at most `max_batch`. Pixels travel to the device as uint8 (a quarter of the
bytes of float32) and are converted there.

The stylization controls (`strength`, `preserve_color`, `style_scale`; stylekit/infer/controls.py)
wrap the network in `Stylizer.stylize`; at their defaults they leave its pixels untouched.

`InferenceOptions` fields left at None/"auto" resolve per device to the fastest path measured
safe (within 40 dB PSNR of the fp32 reference; benchmarks/RESULTS.md has the numbers):

- CPU: fp32, NCHW, `fastpath.FastTransformer` with NNPACK (Winograd/FFT) convs, one image at a
  time, and the C allocator tuned (`fastpath.tune_cpu_allocator`). bf16/fp16 are emulated on
  CPUs without AMX/AVX512-BF16 and measured slower; torch.compile measured no faster after its
  compile time (it stays available as `compile=True`).
- CUDA: bf16 autocast, channels_last, the sub-pixel FastTransformer, cudnn.benchmark.
  Not yet measured on a GPU here: `benchmarks/bench_stylize.py` prints every variant so the
  choice can be checked (see RESULTS.md, "GPU: to be measured").
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from stylekit.errors import ConfigError, first_line
from stylekit.infer import controls, memory, tiles
from stylekit.infer.fastpath import FastTransformer, nnpack_available, tune_cpu_allocator
from stylekit.infer.options import MemoryOptions, RunOptions, StyleControls
from stylekit.nn.model import MIN_SIDE, TransformerNet
from stylekit.nn.sr import output_scale

log = logging.getLogger(__name__)

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# An image whose every channel's standard deviation is below this (0-255 units) is all but flat: its
# instance-norm statistics are ~0, which amplifies rounding differences without bound, so it is
# run without Winograd (NNPACK) convolutions, whose rounding differs most from the reference.
FLAT_IMAGE_STD = 1.0
# NNPACK costs a few ms per call whatever the size (14 calls per image): below about 256x256
# the fast path without it is faster (benchmarks/RESULTS.md, "small images").
NNPACK_MIN_PIXELS = 256 * 256
# Kept free of the memory budget for what tiling does not count (decoders, encoders, Python).
TILE_MARGIN = 96 << 20


@dataclass(frozen=True)
class InferenceOptions:
    """How to run the network. None / "auto" pick the fastest safe path measured for the device.

    The options a user sets have their home in options.py (type, default, check, help text);
    this flat form is the library's, built from them by `of` or written out in code
    (`InferenceOptions(device="cpu", strength=0.5)`), with their defaults and checks (a
    dataclass field's default is its class attribute: `RunOptions.device` is "auto")."""

    device: str = RunOptions.device
    precision: str = RunOptions.precision
    channels_last: bool | None = None  # None: on for CUDA, off for CPU
    compile: bool = False  # torch.compile, falling back to eager if it fails (--compile on)
    max_batch: int = RunOptions.batch_size
    fast: bool | None = None  # FastTransformer (sub-pixel upsample-convs, ...); None: on
    nnpack: bool | None = None  # NNPACK convs on the CPU; None: on where it works (fp32 only)
    threads: int | None = None  # torch CPU threads (process-wide); None: leave as is
    tune_allocator: bool | None = None  # glibc: reuse large blocks (process-wide); None: on for CPU
    cuda_graphs: bool = False  # with compile on CUDA: mode="reduce-overhead" (--compile cuda-graphs)
    # Stylization controls (options.StyleControls), applied by `Stylizer.stylize` only.
    strength: float = StyleControls.strength
    preserve_color: bool = StyleControls.preserve_color
    style_scale: float | None = StyleControls.style_scale
    # Memory: the peak resident bytes the process may reach (options.MemoryOptions, parsed);
    # None: a share of the machine's available memory (memory.default_budget). `tile_dir`:
    # the tiles' scratch files.
    max_memory: int | None = None
    tile_dir: str | None = MemoryOptions.tile_dir

    def __post_init__(self) -> None:
        RunOptions(self.device, self.precision, self.max_batch)  # validates
        StyleControls(self.strength, self.preserve_color, self.style_scale)  # validates
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be >= 1 (got {self.threads})")
        if self.max_memory is not None and self.max_memory <= 0:
            raise ConfigError(f"--max-memory must be positive (got {self.max_memory})")

    @classmethod
    def of(
        cls,
        run: RunOptions,
        style: StyleControls = StyleControls(),
        memory_options: MemoryOptions = MemoryOptions(),
    ) -> InferenceOptions:
        """The options a command or job config holds, as the library's."""
        return cls(
            device=run.device,
            precision=run.precision,
            max_batch=run.batch_size,
            compile=run.compile != "off",
            cuda_graphs=run.compile == "cuda-graphs",
            strength=style.strength,
            preserve_color=style.preserve_color,
            style_scale=style.style_scale,
            max_memory=memory_options.budget,
            tile_dir=memory_options.tile_dir,
        )

    @property
    def style_controls(self) -> StyleControls:
        return StyleControls(self.strength, self.preserve_color, self.style_scale)

    @property
    def controls_active(self) -> bool:
        """Whether any stylization control changes the network's pixels."""
        return self.style_controls.active

    def resolve_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError("--device cuda asked for, but no CUDA GPU is visible")
        return torch.device(self.device)

    def resolve_dtype(self, device: torch.device) -> torch.dtype:
        precision = self.precision
        if precision == "auto":
            precision = "bf16" if device.type == "cuda" else "fp32"
        return _DTYPES[precision]

    def resolve(self) -> Plan:
        """The concrete path these options mean on this machine."""
        device = self.resolve_device()
        dtype = self.resolve_dtype(device)
        cpu = device.type == "cpu"
        fast = True if self.fast is None else self.fast
        nnpack = self.nnpack if self.nnpack is not None else True
        nnpack = fast and cpu and dtype == torch.float32 and nnpack and nnpack_available()
        if self.nnpack and not nnpack:
            log.warning(
                "NNPACK asked for but not usable here (needs the fast path, fp32 on a CPU it supports)"
            )
        return Plan(
            device=device,
            dtype=dtype,
            channels_last=(not cpu) if self.channels_last is None else self.channels_last,
            fast=fast,
            nnpack=nnpack,
            compile=self.compile,
            cuda_graphs=self.cuda_graphs and self.compile and device.type == "cuda",
            threads=self.threads,
            tune_allocator=cpu if self.tune_allocator is None else self.tune_allocator and cpu,
            cudnn_benchmark=device.type == "cuda",  # process-wide; fixed shapes gain from it
            per_image=cpu and fast,
        )


@dataclass(frozen=True)
class Plan:
    """Resolved InferenceOptions: what a Stylizer actually does."""

    device: torch.device
    dtype: torch.dtype
    channels_last: bool
    fast: bool
    nnpack: bool
    compile: bool
    cuda_graphs: bool
    threads: int | None
    tune_allocator: bool
    cudnn_benchmark: bool
    per_image: bool  # run a batch image by image (CPU: no gain from batching; batch-independent pixels)

    def describe(self) -> str:
        parts = [str(self.device), str(self.dtype).removeprefix("torch.")]
        parts.append("channels_last" if self.channels_last else "NCHW")
        parts.append("fast path" + (" + NNPACK" if self.nnpack else "") if self.fast else "reference module")
        if self.compile:
            parts.append("compiled" + (" + CUDA graphs" if self.cuda_graphs else ""))
        if self.threads:
            parts.append(f"{self.threads} threads")
        if self.tune_allocator:
            parts.append("allocator tuned")
        if self.cudnn_benchmark and self.device.type == "cuda":
            parts.append("cudnn.benchmark")
        return ", ".join(parts)


class Stylizer:
    """Holds one model on one device and stylizes lists of (H, W, 3) uint8 images. A
    super-resolution network (stylekit/nn/sr.py) runs the same way; its outputs are `scale`
    times larger than its inputs."""

    def __init__(self, model: torch.nn.Module, options: InferenceOptions = InferenceOptions()):
        self.options = options
        if options.threads:  # first: NNPACK sizes its thread pool once, at its first use
            torch.set_num_threads(options.threads)
        self.scale = output_scale(model)  # output side / input side: 1 for style networks
        # The shorter photo side the network's strokes are sized for (modelio sets it from the
        # model file's metadata; a reference checkpoint has none and keeps its own pixels).
        self.paint_side: int | None = getattr(model, "paint_side", None) if self.scale == 1 else None
        if isinstance(model, TransformerNet) and model.styles > 1:
            raise ConfigError(
                f"this model holds {model.styles} styles: run one of them or a blend "
                "(nn/styles.one_style; the commands' --style)"
            )
        if self.scale != 1 and options.controls_active:
            raise ConfigError("--strength, --preserve-color and --style-scale apply to style models only")
        if not isinstance(model, TransformerNet):  # the fast paths are TransformerNet's
            options = dataclasses.replace(options, fast=False)
        self.plan = plan = options.resolve()
        self.device, self.dtype = plan.device, plan.dtype
        self.memory_format = torch.channels_last if plan.channels_last else torch.contiguous_format
        if plan.tune_allocator:
            tune_cpu_allocator()
        if plan.cudnn_benchmark and self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        if plan.fast:
            net: torch.nn.Module = FastTransformer(model, nnpack=plan.nnpack)
        else:
            net = model.eval()
            for p in net.parameters():
                p.requires_grad_(False)
        self.model: torch.nn.Module = net.to(self.device, memory_format=self.memory_format)
        # Small and near-flat images run without NNPACK (NNPACK_MIN_PIXELS, FLAT_IMAGE_STD).
        self._without_nnpack: torch.nn.Module | None = None
        if isinstance(net, FastTransformer) and plan.nnpack:
            self._without_nnpack = copy.deepcopy(net)
            self._without_nnpack.set_nnpack(False)
        self._source = model
        self._tiler: FastTransformer | None = net if isinstance(net, FastTransformer) else None
        self._compiled: Callable[[torch.Tensor], torch.Tensor] | None = None
        if plan.compile:
            self._compiled = _try_compile(self.model, plan)
        log.info("stylizer on %s", plan.describe())

    @torch.inference_mode()
    def forward(self, batch: torch.Tensor, *, keep_on_device: bool = False) -> torch.Tensor:
        """(B, H, W, 3) uint8 (any device) -> (B, s*H, s*W, 3) uint8 on the CPU (s = `scale`;
        on the model's device with keep_on_device, e.g. for GPU JPEG encoding)."""
        x = batch.to(self.device, non_blocking=True).permute(0, 3, 1, 2)
        if self.plan.per_image:
            b, h, w, c = batch.shape
            out = torch.empty((b, h * self.scale, w * self.scale, c), dtype=torch.uint8, device=self.device)
            for i in range(x.shape[0]):
                out[i] = self._run(_to_float(x[i : i + 1], self.memory_format))[0].permute(1, 2, 0)
            return out
        y = self._run(_to_float(x, self.memory_format)).permute(0, 2, 3, 1)
        return y if keep_on_device else y.cpu()

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float in [0, 255] -> (B, 3, H, W) uint8, clamped then truncated exactly
        as the reference example saves its images."""
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            if self._without_nnpack is not None and (
                x.shape[-2] * x.shape[-1] < NNPACK_MIN_PIXELS or _is_flat(x)
            ):
                y = self._without_nnpack(x)
            else:
                y = self._call_model(x)
        return torch.clamp(y.float(), 0, 255).to(torch.uint8)  # not in place: may be a CUDA graph's output

    def _call_model(self, x: torch.Tensor) -> torch.Tensor:
        if self._compiled is not None:
            try:
                return self._compiled(x)
            except Exception as e:
                log.warning(
                    "torch.compile failed (%s: %s); running eagerly from now on",
                    type(e).__name__,
                    first_line(str(e)),
                )
                self._compiled = None
        return self.model(x)

    def stylize(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Stylize each (H, W, 3) uint8 image; the result list is in input order, each at its
        input's size. The options' controls apply here (`forward` is the bare network): the
        stroke size (by default the model's own scale, as a pyramid on photos much larger than
        its `paint_side`; with an explicit style_scale the network runs on each photo resized
        by 1/style_scale and its result is resized back), then preserve_color and strength mix
        in the photo (controls.py)."""
        opts = self.options
        if opts.style_scale is None:
            stylized = self._stylize_at_paint_scale(images)
        elif opts.style_scale != 1:
            work = [
                controls.resize(img, *controls.working_size(*img.shape[:2], opts.style_scale, MIN_SIDE))
                for img in images
            ]
            stylized = self._stylize_network(work)
        else:
            stylized = self._stylize_network(images)
        if not opts.controls_active:
            return stylized
        return [
            controls.finish(out, photo, strength=opts.strength, keep_color=opts.preserve_color)
            for out, photo in zip(stylized, images, strict=True)
        ]

    def _stylize_at_paint_scale(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The network's output at the model's own stroke scale, each at its input's size: an
        image painted at its own size (or a model with no `paint_side`) is the network's own
        pixels; others are painted from `paint_side` up, level by level, and composed
        (controls.pyramid_sides, compose_levels)."""
        plans = [
            controls.pyramid_sides(*img.shape[:2], self.paint_side) if self.paint_side else [img.shape[:2]]
            for img in images
        ]
        own = [i for i, sides in enumerate(plans) if sides == [images[i].shape[:2]]]
        out: list[np.ndarray | None] = [None] * len(images)
        for i, result in zip(own, self._stylize_network([images[i] for i in own]), strict=True):
            out[i] = result
        for i, sides in enumerate(plans):
            if out[i] is None:
                levels = [controls.resize(images[i], h, w) for h, w in sides]
                painted = self._stylize_network(levels)
                del levels  # the resized inputs are not needed while the levels are blended
                out[i] = controls.resize(controls.compose_levels(painted), *images[i].shape[:2])
        return out  # type: ignore[return-value]

    def _stylize_network(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The network's own (H, W, 3) uint8 output for each image, in input order. Images too
        large for the memory budget run tiled, one at a time."""
        out: list[np.ndarray | None] = [None] * len(images)
        whole = []
        for i, img in enumerate(images):
            budget = self._tile_budget(*img.shape[:2])
            if budget is None:
                whole.append(i)
            else:
                out[i] = self._stylize_tiled(img, budget)
        for group in group_by_size([images[i] for i in whole], self.options.max_batch):
            indices = [whole[j] for j in group]
            stacked = torch.from_numpy(np.stack([images[i] for i in indices]))
            if self.device.type == "cuda":
                stacked = stacked.pin_memory()
            result = self.forward(stacked).numpy()
            for j, i in enumerate(indices):
                out[i] = result[j]
        return out  # type: ignore[return-value]

    def _tile_budget(self, height: int, width: int) -> int | None:
        """None when the image fits the memory budget untiled; else the bytes its tiled run's
        activations may take (the budget less what the process holds and the output image).
        Super-resolution networks always run whole (tiles.py is TransformerNet's)."""
        if not isinstance(self._source, TransformerNet):
            return None
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            room = int(free * 0.8)
            return None if tiles.untiled_peak(height, width) <= room else room
        budget = self.options.max_memory or memory.default_budget()
        if budget is None:
            return None
        room = budget - memory.resident_bytes() - height * width * 3 - TILE_MARGIN
        if tiles.untiled_peak(height, width) <= room:
            return None
        if room <= 0:
            raise ConfigError(
                f"--max-memory {memory.format_size(budget)} is less than this process already holds "
                f"({memory.format_size(memory.resident_bytes())}) plus a {width}x{height} image: raise it"
            )
        return room

    def _stylize_tiled(self, image: np.ndarray, budget: int) -> np.ndarray:
        if self._tiler is None:  # the reference module: tile with the same function's fast form
            self._tiler = FastTransformer(self._source, nnpack=False).to(self.device)
        log.info(
            "%dx%d image: tiled to stay within the memory budget (%s for activations)",
            image.shape[1], image.shape[0], memory.format_size(budget),
        )  # fmt: skip
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            return tiles.stylize_tiled(
                self._tiler, image, budget, tile_dir=self.options.tile_dir, device=self.device
            )


def _is_flat(x: torch.Tensor) -> bool:
    """Every channel of the (1, 3, H, W) image all but constant (see FLAT_IMAGE_STD)."""
    return float(x.std(dim=(2, 3)).max()) < FLAT_IMAGE_STD if x.shape[-1] * x.shape[-2] > 1 else True


def _to_float(x: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    """(B, 3, H, W) uint8 view -> float32 in `memory_format`, in one conversion pass."""
    out = torch.empty(x.shape, dtype=torch.float32, device=x.device, memory_format=memory_format)
    return out.copy_(x)


def group_by_size(images: Sequence[np.ndarray], max_batch: int) -> list[list[int]]:
    """Indices of images grouped by (H, W), each group split into chunks of <= max_batch."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, img in enumerate(images):
        groups[img.shape[:2]].append(i)
    return [idx[k : k + max_batch] for idx in groups.values() for k in range(0, len(idx), max_batch)]


def _try_compile(model: torch.nn.Module, plan: Plan) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """torch.compile'd `model`; None when torch.compile is unavailable. Compilation itself
    happens at the first call, whose failure `Stylizer` also catches (then runs eagerly)."""
    try:
        mode = "reduce-overhead" if plan.cuda_graphs else None
        return torch.compile(model, mode=mode)  # type: ignore[return-value]
    except Exception as e:
        log.warning("torch.compile unavailable (%s); running eagerly", e)
        return None
