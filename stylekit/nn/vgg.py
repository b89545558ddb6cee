"""The frozen loss network phi: VGG-16 (Simonyan & Zisserman) up to relu4_3.

Layers keep torchvision's `features.N` numbering (conv1_1 = features.0 ... conv4_3 =
features.21), so torchvision's ImageNet state dict loads directly. Weight sources:

- "caffe" (the default): the paper's own loss network, the ImageNet-trained Caffe VGG-16
  (VGG_ILSVRC_16_layers, CC BY 4.0: Simonyan & Zisserman, VGG, University of Oxford), shipped
  inside the package as safetensors. Caffe input convention: BGR, 0-255 minus the BGR mean.
- "imagenet": torchvision's IMAGENET1K_V1 weights through its cache. torchvision convention:
  RGB in [0, 1], minus the ImageNet mean, divided by its std.
- a local file: a state dict in torchvision layout (.pth loaded weights-only, or .safetensors);
  its convention is read from the safetensors metadata ("input" mentioning BGR means Caffe),
  or given as `caffe:PATH` / `torchvision:PATH`.
- "random": a seeded, *untrained* VGG-16 for tests. Its losses carry no perceptual meaning.

Everything outside this module passes RGB 0-255 pixels; the network converts them to its own
convention in `forward`. The two conventions differ by about 57x in feature scale (torchvision
divides by a std of ~0.226 * 255), so loss weights tuned for one are wrong for the other:
`default_loss_weights` gives each convention its own.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from stylekit.errors import StylekitError
from stylekit.files import storage

log = logging.getLogger(__name__)

# torchvision's VGG-16 "D" configuration up to conv4_3; "M" is a 2x2 max-pool.
_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512]
# Output taps, as indices into `features` (after the ReLU): relu1_2, relu2_2, relu3_3, relu4_3.
TAPS = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22}
IMAGENET_FILE = "vgg16-397923af.pth"
CAFFE_FILE = "vgg16_caffe_conv1_1-conv4_3.safetensors"
WEIGHT_CHOICES = ("caffe", "imagenet", "random")


@dataclass(frozen=True)
class InputConvention:
    """How a VGG-16 wants its pixels: phi(x) sees (x[:, order] / 255 * scale255 - mean) / std,
    written here for x in RGB 0-255."""

    name: str
    bgr: bool  # reverse the channel order before normalising
    mean: tuple[float, float, float]  # in the network's own channel order and 0-255 units
    std: tuple[float, float, float]  # likewise (1 = no division)

    def apply(self, x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) RGB 0-255 -> the network's input; `mean`/`std` are this convention's
        values as (1,3,1,1) buffers on x's device. Returns a new tensor (x is not modified)."""
        if self.bgr:
            x = x.flip(1)
        return (x - mean) / std


# Caffe: BGR, 0-255, minus the BGR mean (Simonyan & Zisserman's preprocessing).
CAFFE = InputConvention("caffe", bgr=True, mean=(103.939, 116.779, 123.68), std=(1.0, 1.0, 1.0))
# torchvision: RGB / 255, ImageNet mean and std; folded into one affine map on 0-255 pixels.
TORCHVISION = InputConvention(
    "torchvision",
    bgr=False,
    mean=tuple(255.0 * m for m in (0.485, 0.456, 0.406)),  # type: ignore[arg-type]
    std=tuple(255.0 * s for s in (0.229, 0.224, 0.225)),  # type: ignore[arg-type]
)
CONVENTIONS = {c.name: c for c in (CAFFE, TORCHVISION)}


@dataclass(frozen=True)
class LossWeights:
    content: float
    style: float
    tv: float


# One source of the default loss weights, per input convention. Caffe: the paper's values
# (Johnson's fast-neural-style: content 1, style 5 per layer, tv_strength 1e-6 on the summed
# squared differences; our TV is a mean, so 1e-6 * 0.5 * 4 images * 3 * 256 * 256 ~ 0.4).
# torchvision: the reference PyTorch example's 1e5 / 1e10, TV 10 (same conversion, x57^2).
DEFAULT_LOSS_WEIGHTS = {
    "caffe": LossWeights(content=1.0, style=5.0, tv=0.4),
    "torchvision": LossWeights(content=1e5, style=1e10, tv=10.0),
}


def _prefix_convention(weights: str) -> InputConvention | None:
    prefix, _, rest = weights.partition(":")
    return CONVENTIONS[prefix] if rest and prefix in CONVENTIONS else None


def convention_of(weights: str) -> InputConvention:
    """The input convention a --vgg-weights value implies, without loading anything heavy."""
    if (by_prefix := _prefix_convention(weights)) is not None:
        return by_prefix
    if weights == "caffe":
        return CAFFE
    if weights in ("imagenet", "random"):
        return TORCHVISION
    return _file_convention(weights)


def default_loss_weights(weights: str) -> LossWeights:
    return DEFAULT_LOSS_WEIGHTS[convention_of(weights).name]


def _make_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    in_channels = 3
    for v in _CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_channels, int(v), 3, padding=1), nn.ReLU(inplace=True)]
            in_channels = int(v)
    return nn.Sequential(*layers)


class VGGFeatures(nn.Module):
    """x (B,3,H,W) RGB in [0,255] -> the four style taps, shapes
    (B,64,H,W), (B,128,H/2,W/2), (B,256,H/4,W/4), (B,512,H/8,W/8)."""

    def __init__(self, source: str = "unset", convention: InputConvention = TORCHVISION) -> None:
        super().__init__()
        self.features = _make_features()
        self.source = source
        self.convention = convention
        self.register_buffer("mean", torch.tensor(convention.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(convention.std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor, n_taps: int = len(TAPS)) -> list[torch.Tensor]:
        """The first `n_taps` taps (all four by default); layers past the last one asked for
        are not run (the content loss needs relu2_2 only: a third of the network)."""
        h = self.convention.apply(x, self.mean, self.std)
        taps: list[torch.Tensor] = []
        tap_indices = sorted(TAPS.values())[:n_taps]
        last = tap_indices[-1]
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in tap_indices:
                taps.append(h)
            if i == last:
                break
        return taps


def builtin_caffe_path() -> str:
    """The Caffe VGG-16 shipped in the package (30 MB of safetensors)."""
    return str(resources.files("stylekit.nn") / "weights" / CAFFE_FILE)


def load_vgg(
    weights: str = "caffe", seed: int = 0, options: storage.StorageOptions = storage.StorageOptions()
) -> VGGFeatures:
    """Build the frozen loss network from "caffe", "imagenet", "random", a file (a path or
    any fsspec URL), or "caffe:FILE" / "torchvision:FILE"."""
    if weights == "random":
        net = _random_vgg(seed)
    elif weights == "caffe":
        net = VGGFeatures(source="caffe", convention=CAFFE)
        _load_into(net, _file_state_dict(builtin_caffe_path(), "caffe"), "Caffe VGG-16 (built in)")
    elif weights == "imagenet":
        net = VGGFeatures(source="imagenet", convention=TORCHVISION)
        _load_into(net, _imagenet_state_dict(), "torchvision IMAGENET1K_V1")
    else:
        prefix, _, rest = weights.partition(":")
        path = rest if rest and prefix in CONVENTIONS else weights
        with _local_weights(path, weights, options) as local:
            convention = _prefix_convention(weights) or _file_convention(local)
            net = VGGFeatures(source=f"file:{Path(path).name}:{convention.name}", convention=convention)
            state = _file_state_dict(local, weights)
        _load_into(net, state, f"{path} ({convention.name} input convention)")
    return freeze(net)


def freeze(net: VGGFeatures) -> VGGFeatures:
    """Eval mode and no gradients to the weights: phi is a fixed measuring instrument."""
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def _random_vgg(seed: int) -> VGGFeatures:
    log.warning(
        "VGG-16 weights: RANDOM (untrained, seed %d). Losses are computed against an untrained "
        "network: fine for tests, meaningless as a style model. Use --vgg-weights caffe (the "
        "default) for real training.",
        seed,
    )
    net = VGGFeatures(source=f"random:{seed}", convention=TORCHVISION)
    gen = torch.Generator().manual_seed(seed)
    for m in net.features:
        if isinstance(m, nn.Conv2d):
            # torchvision's VGG init: Kaiming normal (fan_out, ReLU), zero bias.
            fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
            with torch.no_grad():
                m.weight.normal_(0.0, (2.0 / fan_out) ** 0.5, generator=gen)
                m.bias.zero_()
    return net


def _imagenet_state_dict() -> dict[str, torch.Tensor]:
    cache = Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_FILE
    try:
        from torchvision.models import VGG16_Weights

        state = VGG16_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
    except Exception as e:
        raise StylekitError(
            f"cannot get the VGG-16 ImageNet weights ({type(e).__name__}): put {IMAGENET_FILE} "
            f"in {cache.parent}/ (or set TORCH_HOME), or pass --vgg-weights PATH to a local "
            "copy, or use --vgg-weights caffe (the built-in loss network, no download)"
        ) from None
    return state


def _safetensors_metadata(path: str) -> dict[str, str]:
    """The string metadata of a .safetensors file, {} if it cannot be read as one. A remote
    file's header is read by range (8 bytes of length, then the JSON header), not downloaded."""
    from safetensors import safe_open

    if storage.is_uri(path) and not storage.is_local(path):
        try:
            size = int.from_bytes(storage.read_range(path, 0, 8), "little")
            header = json.loads(storage.read_range(path, 8, 8 + size))
            return {str(k): str(v) for k, v in (header.get("__metadata__") or {}).items()}
        except (StylekitError, ValueError, AttributeError):
            return {}
    try:
        with safe_open(path, framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception:  # not a file, not safetensors: the loader says so later, in one line
        return {}


def _file_convention(path: str) -> InputConvention:
    """A file's convention: Caffe when its safetensors metadata says BGR input or Caffe
    layout, else torchvision's."""
    meta = _safetensors_metadata(path) if path.endswith(".safetensors") else {}
    said = " ".join(meta.get(k, "") for k in ("input", "format", "convention")).lower()
    return CAFFE if ("bgr" in said or "caffe" in said) else TORCHVISION


@contextlib.contextmanager
def _local_weights(path: str, flag: str, options: storage.StorageOptions) -> Iterator[str]:
    """A local file with the weights at `path` (a path or any fsspec URL)."""
    try:
        with storage.local_copy(path, options) as local:
            yield local
    except StylekitError as e:
        if "not found" not in str(e):
            raise
        raise StylekitError(
            f"--vgg-weights {flag!r}: no such file {path!r}; give 'caffe', 'imagenet', 'random', "
            "or a VGG-16 state dict (.pth or .safetensors, a path or URL, optionally caffe:FILE)"
        ) from None


def _file_state_dict(path: str, flag: str) -> dict[str, torch.Tensor]:
    if not os.path.isfile(path):
        raise StylekitError(
            f"--vgg-weights {flag!r}: no such file {path!r}; give 'caffe', 'imagenet', 'random', "
            "or a path to a VGG-16 state dict (.pth or .safetensors, optionally caffe:PATH)"
        )
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise StylekitError(
            f"--vgg-weights {flag!r} is not a readable VGG-16 state dict "
            f"({type(e).__name__}); give a torchvision-layout vgg16 .pth or .safetensors file."
        ) from None


def _load_into(net: VGGFeatures, state: object, what: str) -> None:
    if not isinstance(state, dict):
        raise StylekitError(f"{what}: expected a state dict, found {type(state).__name__}")
    wanted = net.state_dict()
    # Accept a full vgg16 state dict (features.* + classifier.*) or a features-only one.
    picked = {k: v for k, v in state.items() if k in wanted}
    missing = sorted(set(wanted) - set(picked))
    if missing:
        raise StylekitError(
            f"{what} is not a VGG-16 state dict: missing {missing[0]} (and {len(missing) - 1} "
            "more); give weights in torchvision's vgg16 layout (features.0 ... features.21)."
        )
    for k, v in picked.items():
        if tuple(v.shape) != tuple(wanted[k].shape):
            raise StylekitError(f"{what}: {k} has shape {tuple(v.shape)}, expected {tuple(wanted[k].shape)}")
    net.load_state_dict({k: v.float() for k, v in picked.items()})
    log.info("VGG-16 loss network: %s", what)
