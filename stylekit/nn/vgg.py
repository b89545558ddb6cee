"""The frozen loss network phi: VGG-16 (Simonyan & Zisserman) up to relu4_3.

Layers keep torchvision's `features.N` numbering, so torchvision's ImageNet state dict (or any
local copy of it) loads directly. Three weight sources:

- "imagenet": torchvision's IMAGENET1K_V1 weights through its cache (the paper's loss network);
- a local file: a torchvision-style state dict (.pth, loaded with weights_only) or .safetensors;
- "random": a seeded, *untrained* VGG-16 for offline runs and tests. Its losses are well defined
  but carry no perceptual meaning; models trained against it are not real style models.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

from stylekit.errors import StylekitError

log = logging.getLogger(__name__)

# torchvision's VGG-16 "D" configuration up to conv4_3; "M" is a 2x2 max-pool.
_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512]
# Output taps, as indices into `features` (after the ReLU): relu1_2, relu2_2, relu3_3, relu4_3.
TAPS = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22}
IMAGENET_FILE = "vgg16-397923af.pth"
# ImageNet statistics the pretrained VGG expects, for RGB in [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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

    def __init__(self, source: str = "unset") -> None:
        super().__init__()
        self.features = _make_features()
        self.source = source
        # Fold /255 and the ImageNet normalisation into one affine map: (x - 255*mean) / (255*std).
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def forward(self, x: torch.Tensor, n_taps: int = len(TAPS)) -> list[torch.Tensor]:
        """The first `n_taps` taps (all four by default); layers past the last one asked for
        are not run (the content loss needs relu2_2 only: a third of the network)."""
        h = (x - self.mean) / self.std
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


def load_vgg(weights: str, seed: int = 0) -> VGGFeatures:
    """Build the frozen loss network from "imagenet", "random" or a local file path."""
    if weights == "random":
        net = _random_vgg(seed)
    elif weights == "imagenet":
        net = VGGFeatures(source="imagenet")
        _load_into(net, _imagenet_state_dict(), "torchvision IMAGENET1K_V1")
    else:
        net = VGGFeatures(source=f"file:{Path(weights).name}")
        _load_into(net, _file_state_dict(weights), weights)
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
        "network: fine for offline runs and tests, meaningless as a style model. Use "
        "--vgg-weights imagenet (or a local file) for real training.",
        seed,
    )
    net = VGGFeatures(source=f"random:{seed}")
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
            "copy, or --vgg-weights random for an untrained network (offline tests only)"
        ) from None
    return state


def _file_state_dict(path: str) -> dict[str, torch.Tensor]:
    if not os.path.isfile(path):
        raise StylekitError(
            f"--vgg-weights {path!r}: no such file; give 'imagenet', 'random' or a path to a "
            "VGG-16 state dict (.pth or .safetensors)"
        )
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise StylekitError(
            f"--vgg-weights {path!r} is not a readable VGG-16 state dict "
            f"({type(e).__name__}); give a torchvision vgg16 .pth or .safetensors file"
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
            "more); give torchvision's vgg16 weights"
        )
    for k, v in picked.items():
        if tuple(v.shape) != tuple(wanted[k].shape):
            raise StylekitError(f"{what}: {k} has shape {tuple(v.shape)}, expected {tuple(wanted[k].shape)}")
    net.load_state_dict(picked)
    log.info("VGG-16 loss network: %s", what)
