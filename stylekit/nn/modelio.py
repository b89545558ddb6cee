"""Model files are data: safetensors for ours, weights-only loading for the reference's .pth.

A stylekit model is `model.safetensors`: the TransformerNet state dict plus string metadata
(style image, loss weights, steps, image size, VGG weights used, stylekit version). A checkpoint
saved by the reference PyTorch example (a pickled state dict, .pth/.model) is read only through
`torch.load(weights_only=True)`, which refuses any object that is not plain tensors and
containers; older ones carry InstanceNorm running stats, which we drop as the example does.

The kind of network is read from the metadata: `task` "sr" with `factor` 4 or 8 is a
super-resolution SRNet (stylekit/nn/sr.py), anything else a TransformerNet, with as many styles
as its instance norms hold rows: (N, C) weights for N styles, the seed's (C,) for one.

A style model's metadata `styles` is a JSON list, one object per style in slot order: its
`name`, its `painting` (the style image's location) and that image's `digest`, its own
`schedule` (how and how long that slot was trained) and its `final_*` losses. A file without it
(the reference's, or one-style files of earlier stylekit) has one style, named by its
`style_name`, its style image's stem, or the file's own name.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from stylekit.errors import StylekitError, first_line
from stylekit.files import storage
from stylekit.nn import zoo
from stylekit.nn.model import TransformerNet
from stylekit.nn.sr import FACTORS, SRNet

log = logging.getLogger(__name__)

_RUNNING_STATS = re.compile(r"in\d+\.running_(mean|var)$|\.in\d\.running_(mean|var)$")
# A model paints for photos whose shorter side is this many times its training crops.
PAINT_SIDE_PER_CROP = 2
_SAFETENSORS_MAGIC_OFFSET = 8  # u64 header length, then a JSON header starting with '{'


@dataclass(frozen=True)
class LoadedModel:
    model: TransformerNet | SRNet
    metadata: dict[str, str] = field(default_factory=dict)
    digest: str = ""  # sha256 of the file's bytes, first 16 hex digits
    styles: tuple[str, ...] = ()  # a style model's style names, in slot order; () for SR


def model_bytes(
    model: torch.nn.Module, metadata: dict[str, str], dtype: torch.dtype = torch.float32
) -> bytes:
    """Serialise a network's state dict to safetensors bytes with string metadata. `dtype`
    float16 halves the file (the shipped models); loading always gives float32."""
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in model.state_dict().items()}
    meta = {k: str(v) for k, v in metadata.items()}
    meta["weights_sha256"] = weights_sha256(tensors)
    return _canonical_header(st_save(tensors, metadata=meta))


def _canonical_header(data: bytes) -> bytes:
    """The same file with its JSON header's keys sorted: safetensors writes metadata in hash
    order, so equal models would otherwise give different bytes (and bulk-job digests)."""
    n = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8 : 8 + n]), separators=(",", ":"), sort_keys=True).encode()
    header += b" " * (-len(header) % 8)  # keep the tensor data 8-byte aligned, as safetensors does
    return len(header).to_bytes(8, "little") + header + data[8 + n :]


def weights_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the tensors' names and fp32 bytes in name order: identifies the weights
    whatever the metadata, and catches a damaged file on load."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def save_model(
    location: str,
    model: TransformerNet | SRNet,
    metadata: dict[str, str],
    options: storage.StorageOptions = storage.StorageOptions(),
    dtype: torch.dtype = torch.float32,
) -> None:
    storage.write_bytes(location, model_bytes(model, metadata, dtype), options)


def load_model(location: str, options: storage.StorageOptions = storage.StorageOptions()) -> LoadedModel:
    """Read a stylekit .safetensors or a reference .pth/.model from a path or URI, or a shipped
    model by name (`starry_night`)."""
    if zoo.is_name(location):
        data = storage.read_bytes(zoo.resolve(location), options)
        zoo.verify(location, data)  # the bytes read once, checked, then loaded
        loaded = load_model_bytes(data, name=location)
        slot = zoo.index()[location].get("style")
        return loaded if slot is None else one_style_of(loaded, slot)
    data = storage.read_bytes(location, options)
    return load_model_bytes(data, name=location)


def one_style_of(loaded: LoadedModel, style: str) -> LoadedModel:
    """One style of a multi-style model, as a one-style model: a shipped name that is a slot of
    a multi-style file loads as this. Its digest tells it from the file's other styles."""
    from stylekit.nn.styles import one_style

    if style not in loaded.styles:
        raise StylekitError(f"the model holds no style {style!r} (it holds {', '.join(loaded.styles)})")
    slot = loaded.styles.index(style)
    model = one_style(loaded.model, [float(i == slot) for i in range(len(loaded.styles))])  # type: ignore[arg-type]
    entries = style_entries(loaded.metadata)
    metadata = {**loaded.metadata, "style_name": style}
    if entries:
        metadata["styles"] = json.dumps([entries[slot]])
    digest = hashlib.sha256(f"{loaded.digest}:{style}".encode()).hexdigest()[:16]
    return LoadedModel(model=model, metadata=metadata, digest=digest, styles=(style,))


def file_digest(data: bytes) -> str:
    """A model file's digest (`LoadedModel.digest`): sha256 of its bytes, first 16 hex digits."""
    return hashlib.sha256(data).hexdigest()[:16]


def load_model_bytes(data: bytes, name: str = "model") -> LoadedModel:
    digest = file_digest(data)
    if _looks_like_safetensors(data):
        state, metadata = _read_safetensors(data, name)
        recorded = metadata.get("weights_sha256")
        if recorded and weights_sha256(state) != recorded:
            raise StylekitError(f"{name} is damaged: its weights do not match the sha256 it records")
    else:
        state, metadata = _read_reference_checkpoint(data, name), {"format": "reference-pth"}
    model = network_for(metadata, name, styles=_slots(state))
    _load_state(model, state, name)
    model.eval()
    if not isinstance(model, TransformerNet):
        return LoadedModel(model=model, metadata=metadata, digest=digest)
    model.paint_side = paint_side_of(metadata)
    names = style_names(metadata, model.styles, name)
    return LoadedModel(model=model, metadata=metadata, digest=digest, styles=names)


def style_entries(metadata: dict[str, str]) -> list[dict[str, Any]]:
    """The `styles` metadata, one dict per slot; [] when the file has none."""
    text = metadata.get("styles")
    if not text:
        return []
    try:
        entries = json.loads(text)
    except ValueError:
        entries = None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and e.get("name") for e in entries):
        raise StylekitError("the model's styles metadata is not a list of named styles; re-save the model")
    return entries


def style_names(metadata: dict[str, str], styles: int, name: str = "model") -> tuple[str, ...]:
    """The names of a style model's `styles` slots (see the module docstring)."""
    entries = style_entries(metadata)
    if entries:
        if len(entries) != styles:
            raise StylekitError(f"{name} is damaged: it names {len(entries)} styles but holds {styles}")
        return tuple(str(e["name"]) for e in entries)
    if styles != 1:
        return tuple(f"style{i}" for i in range(styles))
    for source in (metadata.get("style_name", ""), metadata.get("style", ""), name):
        stem = PurePosixPath(source.rstrip("/")).stem
        if stem:
            return (stem,)
    return ("style",)


def _slots(state: dict[str, torch.Tensor]) -> int:
    """The number of styles a TransformerNet state dict holds: rows of its first norm's weight."""
    weight = state.get("in1.weight")
    return int(weight.shape[0]) if weight is not None and weight.dim() == 2 else 1


def paint_side_of(metadata: dict[str, str]) -> int | None:
    """The shorter photo side a stylekit style model's strokes are sized for: its recorded
    `paint_side`, else twice its training crops (`image_size`): measured on the shipped 128 px
    models against the paper's own outputs on chicago (RESULTS, shipped pictures), painting at
    256 px and adding half of the finer levels' detail (infer/controls.py) brings their grain
    from 1.8x the originals' to 1.2x with as much of the painting as the originals carry.
    None for a reference checkpoint, which keeps the reference example's pixels at any size."""
    for key, factor in (("paint_side", 1), ("image_size", PAINT_SIDE_PER_CROP)):
        value = metadata.get(key, "")
        if value.isdigit() and int(value) > 0:
            return int(value) * factor
    return None


def network_for(metadata: dict[str, str], name: str = "model", styles: int = 1) -> TransformerNet | SRNet:
    """A fresh network of the kind a model file's metadata names (a style network with
    `styles` slots)."""
    if metadata.get("task", "style") != "sr":
        return TransformerNet(styles)
    factor = metadata.get("factor", "")
    if not factor.isdigit() or int(factor) not in FACTORS:
        raise StylekitError(f"{name} is a super-resolution model with factor {factor!r}; expected 4 or 8")
    return SRNet(int(factor))


def _looks_like_safetensors(data: bytes) -> bool:
    if len(data) < _SAFETENSORS_MAGIC_OFFSET + 1:
        return False
    header_len = int.from_bytes(data[:8], "little")
    return 0 < header_len <= len(data) - 8 and data[8:9] == b"{"


def _read_safetensors(data: bytes, name: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        state = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
    except (SafetensorError, ValueError, UnicodeDecodeError) as e:
        raise StylekitError(f"{name} is not a valid safetensors file ({e}); re-export it") from None
    return state, dict(header.get("__metadata__") or {})


def _refusal(e: BaseException) -> str:
    """Why torch.load refused a file, in whole sentences: the unpickler's own reason (e.g.
    "Unsupported global: GLOBAL posix.system") when it gives one, else its first sentence; never
    torch's advice to retry with weights_only=False."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    for i, line in enumerate(lines[:-1]):
        if line.endswith("WeightsUnpickler error:"):
            return first_line(lines[i + 1])
    text = first_line(str(e)) or type(e).__name__
    end = text.find(". ")
    return text[: end + 1] if end > 0 else text


def _read_reference_checkpoint(data: bytes, name: str) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:
        raise StylekitError(
            f"{name} is neither a safetensors model nor a plain PyTorch state dict "
            f"(refused to unpickle it: {_refusal(e)}); give a stylekit .safetensors or a "
            "reference-example .pth"
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise StylekitError(f"{name} holds no state dict of tensors; is it a TransformerNet checkpoint?")
    return {k: v for k, v in state.items() if not _RUNNING_STATS.search(k)}


def _load_state(model: TransformerNet | SRNet, state: dict[str, torch.Tensor], name: str) -> None:
    wanted = model.state_dict()
    missing = sorted(set(wanted) - set(state))
    extra = sorted(set(state) - set(wanted))
    if missing or extra:
        what = f"missing {missing[0]}" if missing else f"unexpected {extra[0]}"
        raise StylekitError(
            f"{name} is not a {type(model).__name__} state dict ({what}, {len(missing)} missing, "
            f"{len(extra)} unexpected keys)"
        )
    for k, v in state.items():
        if tuple(v.shape) != tuple(wanted[k].shape):
            raise StylekitError(f"{name}: {k} has shape {tuple(v.shape)}, expected {tuple(wanted[k].shape)}")
        if not torch.isfinite(v).all():
            raise StylekitError(f"{name}: {k} contains NaN or infinite values")
    model.load_state_dict({k: v.float() for k, v in state.items()})
