"""Export a TransformerNet to ONNX or TorchScript, for runtimes without stylekit.

The exported graph takes (B, 3, H, W) float32 RGB in [0, 255] and returns (B, 3, H, W) float32
RGB, unclamped (clamp to [0, 255] and round, as `Stylizer` does), with batch, height and width
all dynamic. It is the plain `TransformerNet` in eval mode (not the Stylizer's fast path), so
its pixels match stylekit's within float rounding. The stylization controls (strength,
preserve_color, style_scale) are not part of the graph.

Input constraint: H and W must be at least 5. `TransformerNet.forward` decides its padding in
Python (reflect up to a multiple of 4, at least 8; replicate for tiny images), which a trace
would freeze at the example's size; `ExportableNet` computes the reflection padding from the
input's shape with tensor arithmetic instead, which both exporters record as graph operations.
For H, W >= 5 this is exactly `TransformerNet.forward`'s padding; smaller images need the
replicate padding that only stylekit itself applies.

A multi-style network exported whole takes a second input, `style`: (N,) float32 weights over
its N styles in slot order (the metadata's `styles`), one-hot for one style, weights that sum
to 1 for a blend; the instance norms' gamma and beta are the weighted sums of the styles', as
in stylekit. One graph serves every style and blend. (One style or blend can also be exported
alone, as a one-style network: `nn/styles.one_style`.)

The model's metadata (style, training settings, ...) travels with the file: ONNX
`metadata_props`, and TorchScript `_extra_files["metadata.json"]`. Both are made by tracing
(`torch.onnx.export(dynamo=False)`, `torch.jit.trace`): the newer dynamo ONNX exporter needs
the onnxscript package, and `torch.jit.script` cannot compile `F.interpolate` with an int
scale factor as TransformerNet calls it.
"""

from __future__ import annotations

import io
import json
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from stylekit.errors import StylekitError
from stylekit.nn.model import MULTIPLE, TransformerNet

FORMATS = ("onnx", "torchscript")
ONNX_OPSET = 17
MIN_EXPORT_SIDE = 5  # smallest H and W the exported graph takes (see the module docstring)
INPUT_NAME, OUTPUT_NAME, STYLE_INPUT = "image", "stylized", "style"
METADATA_FILE = "metadata.json"  # TorchScript: the name in _extra_files
_EXAMPLE_SIZE = (37, 51)  # the trace's example input: padded in both sides
INSTALL_HINT = "pip install 'stylekit[export]'"


class ExportableNet(nn.Module):
    """`TransformerNet.forward` with its padding computed from the input's shape as tensor
    operations: (B, 3, H, W) float in [0, 255], H, W >= 5 -> (B, 3, H, W); a multi-style
    network also takes the (N,) style weights."""

    def __init__(self, net: TransformerNet):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]  # traced: graph values, not Python ints
        # Pad bottom/right up to the next multiple of 4 ((-h) mod 4, written without a negative
        # operand); for 5 <= h < 8 that is 8, TransformerNet's minimum too.
        pad_h = (MULTIPLE - h % MULTIPLE) % MULTIPLE
        pad_w = (MULTIPLE - w % MULTIPLE) % MULTIPLE
        y = self.net.transform(F.pad(x, [0, pad_w, 0, pad_h], mode="reflect"), style)
        return y[:, :, :h, :w]


def export_metadata(metadata: dict[str, str], digest: str, styles: tuple[str, ...] = ()) -> dict[str, str]:
    """The model's own metadata plus what a runtime needs to know about the graph (`styles`:
    a multi-style network's style names, in the order of its style input)."""
    from stylekit import __version__

    scale = f"{metadata['factor']}*" if metadata.get("task") == "sr" else ""  # SR: f times larger
    out = {
        **metadata,
        "source_model_digest": digest,
        "exported_by": f"stylekit {__version__}",
        "input": f"{INPUT_NAME}: (B, 3, H, W) float32 RGB in [0, 255], H and W >= {MIN_EXPORT_SIDE}",
        "output": f"{OUTPUT_NAME}: (B, 3, {scale}H, {scale}W) float32 RGB; clamp to [0, 255] and round",
    }
    if styles:
        out["style_input"] = (
            f"{STYLE_INPUT}: ({len(styles)},) float32 weights over the styles {', '.join(styles)} (in this "
            "order): one-hot for one style, weights summing to 1 for a blend"
        )
    return out


def export_bytes(model: nn.Module, fmt: str, metadata: dict[str, str]) -> bytes:
    """The exported file's bytes, `fmt` "onnx" or "torchscript"."""
    if fmt not in FORMATS:
        raise StylekitError(f"--format must be one of {', '.join(FORMATS)} (got {fmt!r})")
    # A super-resolution network needs no padding for H, W >= 5: it is exported as it is.
    net = (ExportableNet(model) if isinstance(model, TransformerNet) else model).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    example: tuple[torch.Tensor, ...] = (
        torch.rand(1, 3, *_EXAMPLE_SIZE, generator=torch.Generator().manual_seed(0)) * 255,
    )
    styles = model.styles if isinstance(model, TransformerNet) else 1
    if styles > 1:
        example = (*example, torch.full((styles,), 1.0 / styles))  # traced as a blend: any weights
    with warnings.catch_warnings():
        # The tracers warn that shape checks inside InstanceNorm (channel counts: fixed) are
        # frozen, that ONNX cannot constant-fold the reversed slices of reflection padding, and
        # that TorchScript is deprecated; none changes the graph's results.
        warnings.simplefilter("ignore")
        if fmt == "onnx":
            return _onnx_bytes(net, example, metadata)
        return _torchscript_bytes(net, example, metadata)


def _onnx_bytes(net: nn.Module, example: tuple[torch.Tensor, ...], metadata: dict[str, str]) -> bytes:
    onnx = _require("onnx")
    dims = {0: "batch", 2: "height", 3: "width"}
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            net,
            example,
            buf,
            input_names=[INPUT_NAME, STYLE_INPUT][: len(example)],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: dims, OUTPUT_NAME: dims},
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
    proto = onnx.load_from_string(buf.getvalue())
    onnx.helper.set_model_props(proto, metadata)
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def _torchscript_bytes(net: nn.Module, example: tuple[torch.Tensor, ...], metadata: dict[str, str]) -> bytes:
    with torch.no_grad():
        traced = torch.jit.trace(net, example)
    buf = io.BytesIO()
    torch.jit.save(traced, buf, _extra_files={METADATA_FILE: json.dumps(metadata, indent=1)})
    return buf.getvalue()


def _require(name: str) -> Any:
    try:
        return __import__(name)
    except ImportError:
        raise StylekitError(f"ONNX export needs the {name} package: {INSTALL_HINT}") from None
