"""The super-resolution networks (stylekit/nn/sr.py) and their model files: shapes, parameter
counts, the bicubic start, loading by metadata, and the stylize command's 4x output."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import PYTHON, REPO
from stylekit.errors import ConfigError, StylekitError
from stylekit.infer.inference import InferenceOptions, Stylizer
from stylekit.nn.model import TransformerNet, count_parameters
from stylekit.nn.modelio import load_model, load_model_bytes, model_bytes, save_model
from stylekit.nn.sr import SRNet, output_scale
from stylekit.nn.srloss import SRLoss
from stylekit.train.step import train_step


def _by_hand(factor: int) -> int:
    """c9s1-64, 4 x R64 (two 3x3 convs each), log2(f) x u64 (3x3), c9s1-3: weights + biases."""
    conv = lambda k, cin, cout: k * k * cin * cout + cout  # noqa: E731
    stages = int(np.log2(factor))
    return conv(9, 3, 64) + 4 * 2 * conv(3, 64, 64) + stages * conv(3, 64, 64) + conv(9, 64, 3)


@pytest.mark.parametrize(("factor", "params"), [(4, 400_451), (8, 437_379)])
def test_shapes_and_parameter_counts(factor: int, params: int) -> None:
    net = SRNet(factor)
    assert count_parameters(net) == params == _by_hand(factor)
    assert output_scale(net) == factor and output_scale(TransformerNet()) == 1
    for h, w in ((24, 24), (7, 13), (1, 3)):
        assert net(torch.rand(2, 3, h, w) * 255).shape == (2, 3, factor * h, factor * w)
    assert len(net.up) == int(np.log2(factor))


def test_a_fresh_network_starts_at_bicubic() -> None:
    torch.manual_seed(0)
    x = torch.rand(1, 3, 16, 16) * 255
    with torch.no_grad():
        y = SRNet(4)(x)
    bicubic = F.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False)
    assert (y - bicubic).abs().mean() < 1.0  # 0-255 units: the residual starts near zero


def test_other_factors_are_refused() -> None:
    with pytest.raises(ValueError, match="4, 8"):
        SRNet(3)


def _sr_file(path: Path, factor: int = 4) -> Path:
    torch.manual_seed(1)
    meta = {"format": "stylekit", "task": "sr", "factor": str(factor), "loss": "pixel", "steps": "0"}
    save_model(str(path), SRNet(factor), meta)
    return path


def test_the_kind_of_network_is_read_from_the_metadata(tmp_path: Path) -> None:
    loaded = load_model(str(_sr_file(tmp_path / "x8.safetensors", 8)))
    assert isinstance(loaded.model, SRNet) and loaded.model.scale == 8
    assert loaded.metadata["task"] == "sr" and loaded.metadata["loss"] == "pixel"
    bad = model_bytes(SRNet(4), {"task": "sr", "factor": "3"})
    with pytest.raises(StylekitError, match="factor '3'"):
        load_model_bytes(bad, "bad")
    mislabelled = model_bytes(SRNet(4), {"task": "sr", "factor": "8"})
    with pytest.raises(StylekitError, match=r"not a SRNet state dict|has shape"):
        load_model_bytes(mislabelled, "mislabelled")


def test_stylizer_upscales_and_refuses_style_controls(tmp_path: Path) -> None:
    model = load_model(str(_sr_file(tmp_path / "m.safetensors"))).model
    stylizer = Stylizer(model, InferenceOptions(device="cpu"))
    photos = [np.full((10, 12, 3), 100, np.uint8), np.zeros((5, 7, 3), np.uint8)]
    out = stylizer.stylize(photos)
    assert [o.shape for o in out] == [(40, 48, 3), (20, 28, 3)]
    assert abs(float(out[0].mean()) - 100) < 2  # a flat image stays flat
    with pytest.raises(ConfigError, match="style models only"):
        Stylizer(model, InferenceOptions(device="cpu", strength=0.5))


def test_stylize_command_writes_an_image_four_times_larger(tmp_path: Path) -> None:
    model = _sr_file(tmp_path / "m.safetensors")
    src = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(src)
    out = tmp_path / "out.png"
    args = [PYTHON, "-m", "stylekit", "stylize", "--model", str(model), "--output", str(out), str(src)]
    result = subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert Image.open(out).size == (160, 120)


def test_export_keeps_the_factor_and_dynamic_sizes(tmp_path: Path) -> None:
    import io

    from stylekit.infer import export

    net = load_model(str(_sr_file(tmp_path / "m.safetensors"))).model
    meta = export.export_metadata({"task": "sr", "factor": "4"}, "digest")
    assert "(B, 3, 4*H, 4*W)" in meta["output"]
    traced = torch.jit.load(io.BytesIO(export.export_bytes(net, "torchscript", meta)))
    x = torch.rand(1, 3, 9, 14) * 255  # not the trace's example size
    with torch.no_grad():
        assert torch.allclose(traced(x), net(x), atol=1e-3) and traced(x).shape == (1, 3, 36, 56)


def test_a_training_step_is_the_plain_formulation_bit_for_bit() -> None:
    """`train_step` with a low-resolution input: the network maps it up, the loss compares
    with the originals, Adam steps; the same arithmetic as written out by hand, to the last bit."""
    gen = torch.Generator().manual_seed(0)
    target = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8, generator=gen)
    lowres = torch.randint(0, 256, (2, 8, 8, 3), dtype=torch.uint8, generator=gen)

    def setup() -> tuple[SRNet, SRLoss, torch.optim.Adam]:
        torch.manual_seed(0)
        net = SRNet(4).train()
        return net, SRLoss("pixel", None, 1.0, 1e-3), torch.optim.Adam(net.parameters(), lr=1e-3)

    net_a, loss_a, opt_a = setup()
    net_b, loss_b, opt_b = setup()
    as_float = lambda t: t.permute(0, 3, 1, 2).float().contiguous()  # noqa: E731
    for _ in range(2):
        opt_a.zero_grad(set_to_none=True)
        by_hand = loss_a(net_a(as_float(lowres)), as_float(target))
        by_hand.total.backward()
        opt_a.step()
        got = train_step(net_b, loss_b, opt_b, target, lowres=lowres)
        assert torch.equal(got.total, by_hand.total.detach())
    for a, b in zip(net_a.parameters(), net_b.parameters(), strict=True):
        assert torch.equal(a, b)


def test_training_data_random_windows_and_their_low_resolution_inputs() -> None:
    import io

    from stylekit.infer.degrade import degrade
    from stylekit.train.data import SR_CROPS_PER_IMAGE, decode_batch, degrade_batch

    photo = np.random.default_rng(3).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, format="PNG")
    batch = {"bytes": np.array([buf.getvalue(), b"broken"], dtype=object), "path": np.array(["a", "b"])}
    crops = decode_batch(batch, 32, None, random_crop=True)["image"]
    assert crops.shape == (SR_CROPS_PER_IMAGE, 32, 32, 3)  # the broken image is dropped
    for crop in crops:  # each a window of the photo at full resolution, not a resized copy
        hits = [
            (t, left)
            for t in range(50 - 31)
            for left in range(70 - 31)
            if (photo[t : t + 32, left : left + 32] == crop).all()
        ]
        assert hits
    out = degrade_batch({"image": crops}, 4)
    assert out["lowres"].shape == (SR_CROPS_PER_IMAGE, 8, 8, 3) and out["lowres"].dtype == np.uint8
    np.testing.assert_array_equal(out["lowres"][0], degrade(crops[0], 4))
