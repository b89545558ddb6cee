"""Shared benchmark code: the reference path, timing, images, PSNR and table printing.

The REFERENCE is the seed / pytorch/examples fast_neural_style code path, copied here verbatim
in structure so that it does not move when stylekit changes: the seed's TransformerNet (reflection
pad modules, nearest upsample, instance norm), fp32, eager, NCHW, batch as given; its training
step has separate VGG-16 passes for the output y and the content x (both to relu4_3, built with
autograd enabled), Gram / (c*h*w), MSE, Adam. Its style Grams are computed once, as the example
does (it repeats the style image to the batch size and slices).

Needs only torch, torchvision, numpy, pillow and safetensors (no Ray, no pyarrow), so every
benchmark but bench_bulk runs on a bare GPU machine: `python benchmarks/bench_X.py`.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections import namedtuple
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from stylekit.nn.model import TransformerNet  # noqa: E402

PHOTO_DIRS = [REPO.parent / "shared" / "data" / "content", REPO / "stylekit" / "examples" / "content"]
STYLE_IMAGE = REPO / "stylekit" / "examples" / "styles" / "starry_night.jpg"
DATE = os.environ.get("BENCH_DATE") or datetime.date.today().isoformat()


# --- the reference network (the seed, verbatim in structure) ------------------------------


class RefConvLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int):
        super().__init__()
        reflection_padding = kernel_size // 2
        self.reflection_pad = nn.ReflectionPad2d(reflection_padding)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.reflection_pad(x)
        return self.conv2d(out)


class RefResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = RefConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in1 = nn.InstanceNorm2d(channels, affine=True)
        self.conv2 = RefConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in2 = nn.InstanceNorm2d(channels, affine=True)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        out = self.relu(self.in1(self.conv1(x)))
        out = self.in2(self.conv2(out))
        return out + residual


class RefUpsampleConvLayer(nn.Module):
    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int, upsample: int | None = None
    ):
        super().__init__()
        self.upsample = upsample
        reflection_padding = kernel_size // 2
        self.reflection_pad = nn.ReflectionPad2d(reflection_padding)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_in = x
        if self.upsample:
            x_in = F.interpolate(x_in, mode="nearest", scale_factor=self.upsample)
        out = self.reflection_pad(x_in)
        return self.conv2d(out)


class RefTransformerNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = RefConvLayer(3, 32, kernel_size=9, stride=1)
        self.in1 = nn.InstanceNorm2d(32, affine=True)
        self.conv2 = RefConvLayer(32, 64, kernel_size=3, stride=2)
        self.in2 = nn.InstanceNorm2d(64, affine=True)
        self.conv3 = RefConvLayer(64, 128, kernel_size=3, stride=2)
        self.in3 = nn.InstanceNorm2d(128, affine=True)
        self.res1 = RefResidualBlock(128)
        self.res2 = RefResidualBlock(128)
        self.res3 = RefResidualBlock(128)
        self.res4 = RefResidualBlock(128)
        self.res5 = RefResidualBlock(128)
        self.deconv1 = RefUpsampleConvLayer(128, 64, kernel_size=3, stride=1, upsample=2)
        self.in4 = nn.InstanceNorm2d(64, affine=True)
        self.deconv2 = RefUpsampleConvLayer(64, 32, kernel_size=3, stride=1, upsample=2)
        self.in5 = nn.InstanceNorm2d(32, affine=True)
        self.deconv3 = RefConvLayer(32, 3, kernel_size=9, stride=1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.in1(self.conv1(x)))
        y = self.relu(self.in2(self.conv2(y)))
        y = self.relu(self.in3(self.conv3(y)))
        y = self.res1(y)
        y = self.res2(y)
        y = self.res3(y)
        y = self.res4(y)
        y = self.res5(y)
        y = self.relu(self.in4(self.deconv1(y)))
        y = self.relu(self.in5(self.deconv2(y)))
        y = self.deconv3(y)
        return y


def reference_net(model: TransformerNet, device: torch.device) -> RefTransformerNet:
    """The seed network holding `model`'s weights (state-dict names are the same)."""
    ref = RefTransformerNet()
    ref.load_state_dict(model.state_dict())
    return ref.to(device).eval()


def reference_stylize(net: nn.Module, batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The example's stylize(): pixels to a float NCHW tensor in [0, 255] on the device,
    no_grad forward, clamp(0, 255), truncate to uint8. (B, H, W, 3) uint8 -> same, on the CPU."""
    with torch.no_grad():
        x = batch.to(device).permute(0, 3, 1, 2).float()
        y = net(x)
        return y.clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu()


# --- the reference loss and training step (pytorch/examples fast_neural_style) ------------


class RefVgg16(nn.Module):
    """The example's Vgg16: torchvision vgg16().features sliced at relu1_2/2_2/3_3/4_3."""

    def __init__(self, features: nn.Sequential):
        super().__init__()
        self.slice1, self.slice2, self.slice3, self.slice4 = (nn.Sequential() for _ in range(4))
        for x in range(4):
            self.slice1.add_module(str(x), features[x])
        for x in range(4, 9):
            self.slice2.add_module(str(x), features[x])
        for x in range(9, 16):
            self.slice3.add_module(str(x), features[x])
        for x in range(16, 23):
            self.slice4.add_module(str(x), features[x])
        for param in self.parameters():
            param.requires_grad = False

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:  # a namedtuple, as in the example
        h = self.slice1(x)
        h_relu1_2 = h
        h = self.slice2(h)
        h_relu2_2 = h
        h = self.slice3(h)
        h_relu3_3 = h
        h = self.slice4(h)
        h_relu4_3 = h
        vgg_outputs = namedtuple("VggOutputs", ["relu1_2", "relu2_2", "relu3_3", "relu4_3"])
        return vgg_outputs(h_relu1_2, h_relu2_2, h_relu3_3, h_relu4_3)


def reference_vgg(seed: int, device: torch.device) -> RefVgg16:
    """torchvision's vgg16 features with stylekit's seeded random weights (ImageNet weights
    cost the same to run; a bare benchmark machine may not have them)."""
    from torchvision.models import vgg16

    from stylekit.nn.vgg import load_vgg

    features = vgg16(weights=None).features
    features.load_state_dict(
        {k.removeprefix("features."): v for k, v in load_vgg("random", seed).state_dict().items()},
        strict=False,
    )
    return RefVgg16(features).to(device).eval()


def normalize_batch(batch: torch.Tensor) -> torch.Tensor:
    mean = batch.new_tensor([0.485, 0.456, 0.406]).view(-1, 1, 1)
    std = batch.new_tensor([0.229, 0.224, 0.225]).view(-1, 1, 1)
    batch = batch.div_(255.0)
    return (batch - mean) / std


def gram_matrix(y: torch.Tensor) -> torch.Tensor:
    (b, ch, h, w) = y.size()
    features = y.view(b, ch, w * h)
    features_t = features.transpose(1, 2)
    return features.bmm(features_t) / (ch * h * w)


class ReferenceTrainer:
    """One training step exactly as the example's train() loop body."""

    def __init__(
        self,
        model: TransformerNet,
        vgg: RefVgg16,
        style: torch.Tensor,
        batch_size: int,
        content_weight: float = 1e5,
        style_weight: float = 1e10,
        lr: float = 1e-3,
    ):
        device = style.device
        self.transformer = reference_net(model, device).train()
        self.optimizer = torch.optim.Adam(self.transformer.parameters(), lr)
        self.mse_loss = torch.nn.MSELoss()
        self.vgg = vgg
        self.content_weight, self.style_weight = content_weight, style_weight
        style = style.repeat(batch_size, 1, 1, 1)
        features_style = vgg(normalize_batch(style.clone()))
        self.gram_style = [gram_matrix(y).detach() for y in features_style]

    def step(self, x: torch.Tensor) -> float:
        """x: (B, 3, H, W) float in [0, 255] on the device (the example's ToTensor * 255)."""
        n_batch = len(x)
        self.optimizer.zero_grad()
        y = self.transformer(x)
        y = normalize_batch(y)
        x = normalize_batch(x.clone())
        features_y = self.vgg(y)
        features_x = self.vgg(x)
        content_loss = self.content_weight * self.mse_loss(features_y.relu2_2, features_x.relu2_2)
        style_loss = 0.0
        for ft_y, gm_s in zip(features_y, self.gram_style, strict=True):
            gm_y = gram_matrix(ft_y)
            style_loss += self.mse_loss(gm_y, gm_s[:n_batch, :, :])
        style_loss *= self.style_weight
        total_loss = content_loss + style_loss
        total_loss.backward()
        self.optimizer.step()
        return total_loss  # a tensor: reading it would synchronise


# --- models --------------------------------------------------------------------------------


def calibrated_model(seed: int = 0) -> TransformerNet:
    """A seeded TransformerNet whose output spans 0-255 like a trained model's (an untrained
    one outputs ~0, which clamps to black and makes any PSNR meaningless): random instance-norm
    affines, and the last conv scaled to mean 128, std ~60. Use --model for a real one."""
    torch.manual_seed(seed)
    model = TransformerNet().eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.InstanceNorm2d):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=gen))
                m.bias.copy_(0.5 * torch.randn(m.bias.shape, generator=gen))
        x = torch.from_numpy(np.stack(photos(2, 128, 128))).permute(0, 3, 1, 2).float()
        y = model(x)
        conv = model.deconv3.conv2d
        scale = 60.0 / float(y.std())
        conv.weight.mul_(scale)
        conv.bias.mul_(scale).add_(128.0 - float(model(x).mean()))
    return model


def load_model(path: str | None, seed: int = 0) -> tuple[TransformerNet, str]:
    """A stylekit .safetensors or a reference .pth state dict, else `calibrated_model`.
    Only torch and safetensors: no stylekit.nn.modelio (it needs pyarrow for URIs)."""
    if not path:
        return calibrated_model(seed), f"calibrated random TransformerNet (seed {seed})"
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not re.search(r"in\d+\.running_(mean|var)$", k)}
    model = TransformerNet()
    model.load_state_dict(state)
    return model.eval(), Path(path).name


# --- images ----------------------------------------------------------------------------------


def photo_files() -> list[Path]:
    for d in PHOTO_DIRS:
        files = sorted(p for p in d.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if files:
            return files
    raise SystemExit("no content photos found in " + ", ".join(map(str, PHOTO_DIRS)))


def photos(n: int, width: int, height: int, start: int = 0) -> list[np.ndarray]:
    """n real photos (from the `start`-th), each resized (cover) and centre-cropped to
    height x width, RGB uint8."""
    files = photo_files()
    out = []
    for i in range(start, start + n):
        img = Image.open(files[i % len(files)]).convert("RGB")
        s = max(width / img.width, height / img.height)
        img = img.resize(
            (max(width, round(img.width * s)), max(height, round(img.height * s))), Image.Resampling.BILINEAR
        )
        left, top = (img.width - width) // 2, (img.height - height) // 2
        out.append(np.asarray(img.crop((left, top, left + width, top + height)), dtype=np.uint8))
    return out


def psnr(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """PSNR in dB of two uint8 images (inf when identical)."""
    a64 = np.asarray(a, dtype=np.float64)
    b64 = np.asarray(b, dtype=np.float64)
    mse = float(np.mean((a64 - b64) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


# --- timing ----------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCK = "wall"  # "cpu": process CPU time (all threads) instead of wall time, on the CPU only


def time_once(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds for one call: CUDA events around it on a GPU, perf_counter on the CPU (or the
    process's CPU time with CLOCK = "cpu": with 1 thread, stable on a machine other jobs share)."""
    if device.type == "cpu" and CLOCK == "cpu":
        t0 = time.process_time()
        fn()
        return time.process_time() - t0
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved(
    fns: dict[str, Callable[[], object]], device: torch.device, warmup: int, repeat: int
) -> dict[str, list[float]]:
    """Warm each up, then `repeat` rounds that call each once, rotating the order: on a shared
    machine, load that comes and goes then hits every path alike. Seconds per call."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
        sync(device)
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(repeat):
        order = names[r % len(names) :] + names[: r % len(names)]
        for k in order:
            times[k].append(time_once(fns[k], device))
    return times


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def spread(xs: Sequence[float]) -> str:
    """min-max of per-call seconds as a +-% around the median, to show how noisy a row is."""
    m = median(xs)
    return f"{100 * (max(xs) - min(xs)) / (2 * m):.0f}%" if len(xs) > 1 and m > 0 else "-"


# --- machine description and tables ------------------------------------------------------


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        m = re.search(r"Model name:\s*(.+)", out)
        if m:
            return m.group(1).strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown CPU"


def cpu_flags() -> str:
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split("flags", 2)[1].split("\n", 1)[0].split())
    except (OSError, IndexError):
        return "?"
    wanted = ["avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_tile"]
    return " ".join(f for f in wanted if f in flags) or "none of avx2/avx512/amx"


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def header(title: str, device: torch.device) -> str:
    """Markdown lines describing the run: what, where, which versions, when, how."""
    import torchvision

    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        dev = f"{props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"
    else:
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        dev = (
            f"{cpu_model()}, {os.cpu_count()} logical CPUs, flags: {cpu_flags()}; torch threads "
            f"{torch.get_num_threads()}; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}; "
            f"load average at start {load}; clock: {'process CPU time' if CLOCK == 'cpu' else 'wall'}"
        )
    cmd = "python " + " ".join([os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]])
    return "\n".join(
        [
            f"### {title}",
            "",
            f"- device: {dev}",
            f"- torch {torch.__version__}, torchvision {torchvision.__version__}, Python {platform.python_version()}",
            f"- date: {DATE} (run at {datetime.datetime.now().strftime('%H:%M')})",
            f"- command: `{cmd}`",
            "",
        ]
    )


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """'512x512,1920x1080' -> [(512, 512), (1920, 1080)] as (width, height)."""
    out = []
    for part in text.split(","):
        w, h = part.lower().split("x")
        out.append((int(w), int(h)))
    return out


def add_cpu_clock_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="CPU runs: time by wall clock (default) or by the process's CPU time, which other jobs "
        "on a shared machine disturb far less (use with --threads 1 to compare kernels)",
    )


def apply_cpu_clock_flag(args: argparse.Namespace) -> None:
    global CLOCK
    CLOCK = args.clock


def parse_ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]
