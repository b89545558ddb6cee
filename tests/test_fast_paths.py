"""Every fast path against the fp32 reference path, with stated tolerances.

The model is a seeded TransformerNet "calibrated" like a trained one (random instance-norm
affines; the last conv scaled so outputs span 0-255, mean 128, std ~60): an untrained network
outputs ~0, which clamps to black and would hide any error. Inputs are real photos where the
shared data has them (else smooth synthetic images). Tolerances, on 0-255 outputs:

- exact rewrites in float64 (sub-pixel upsample-conv): 1e-9;
- fp32 rewrites (FastTransformer without NNPACK, channels_last): max |diff| <= 0.01;
- NNPACK (Winograd/FFT, fp32): max |diff| <= 0.5 and PSNR of the uint8 pixels >= 55 dB
  (measured ~80 dB on photos); the issue's bar is 40 dB;
- bf16 autocast: PSNR >= 38 dB (measured ~43 dB); fp16: >= 50 dB (measured ~55 dB);
- training: the fast step's loss terms within 1e-4 relative of the reference formulation's,
  its gradients within 1e-3 relative (+ 1e-4 of the largest gradient) of theirs.
GPU cases (marked `gpu`: `pytest -m gpu`) skip when there is no CUDA.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from reference import calibrated_model

from stylekit.infer import fastpath
from stylekit.infer.fastpath import FastTransformer, nnpack_available, nnpack_conv2d, subpixel_weights
from stylekit.infer.inference import InferenceOptions, Stylizer
from stylekit.infer.srmetrics import psnr
from stylekit.nn.loss import PerceptualLoss, content_loss, gram_matrix, style_loss, tv_loss
from stylekit.nn.model import TransformerNet
from stylekit.nn.vgg import load_vgg
from stylekit.train.step import to_channels_last, train_step

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "content"


def cuda(test: Callable[..., None]) -> Callable[..., None]:
    """A GPU test: `pytest -m gpu` selects it (tools/gpu_run/gpu_run.py); skipped without CUDA."""
    return pytest.mark.gpu(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")(test))


needs_nnpack = pytest.mark.skipif(not nnpack_available(), reason="NNPACK not usable on this CPU")


def photo(h: int, w: int, index: int = 0) -> np.ndarray:
    files = sorted(SHARED.glob("*.png")) + sorted(SHARED.glob("*.jpg")) if SHARED.is_dir() else []
    if files:
        img = Image.open(files[index % len(files)]).convert("RGB").resize((w, h), Image.Resampling.BILINEAR)
        return np.asarray(img, dtype=np.uint8).copy()
    yy, xx = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(index)
    base = np.stack([np.sin(xx / 7 + c) * np.cos(yy / 5 - c) for c in range(3)], -1) * 100 + 128
    return np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)


def as_input(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pixels).permute(2, 0, 1)[None].float()


def to_uint8(y: torch.Tensor) -> np.ndarray:
    return y.float().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


@pytest.fixture(scope="module")
def model() -> TransformerNet:
    """The shared calibrated model, calibrated on two of this file's photo-like images."""
    return calibrated_model(0, torch.cat([as_input(photo(64, 64, i)) for i in range(2)]))


# --- exact rewrites --------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (5, 7), (16, 12)])
def test_subpixel_upsample_conv_is_exact(size: tuple[int, int]) -> None:
    """upsample x2 -> reflection pad 1 -> 3x3 conv == replicate pad 1 -> phase conv -> pixel shuffle."""
    torch.manual_seed(0)
    x = torch.randn(2, 5, *size, dtype=torch.float64)
    w, b = torch.randn(4, 5, 3, 3, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    expected = F.conv2d(
        F.pad(F.interpolate(x, scale_factor=2, mode="nearest"), (1, 1, 1, 1), mode="reflect"), w, b
    )
    w4, b4 = subpixel_weights(w, b)
    got = F.pixel_shuffle(F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), w4, b4), 2)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-9)


def test_fast_transformer_leaves_the_source_model_alone(model: TransformerNet) -> None:
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = FastTransformer(model).to(memory_format=torch.channels_last)
    with torch.no_grad():
        fast(torch.rand(1, 3, 16, 16) * 255)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.device.type == "cpu" and p.is_contiguous() for p in model.parameters())


# --- fp32 fast paths on the CPU --------------------------------------------------------------


@pytest.mark.parametrize("size", [(64, 48), (63, 65), (5, 7), (30, 41)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_transformer_fp32_matches_the_model(
    model: TransformerNet, size: tuple[int, int], channels_last: bool
) -> None:
    x = as_input(photo(*size))
    fast = FastTransformer(model, nnpack=False)
    xin = x
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
        xin = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected, got = model(x), fast(xin)
    assert got.shape == expected.shape
    assert float((got - expected).abs().max()) <= 0.01


@needs_nnpack
@pytest.mark.parametrize("size", [(64, 48), (63, 65), (120, 160)])
def test_nnpack_path_matches_the_model(model: TransformerNet, size: tuple[int, int]) -> None:
    x = torch.cat([as_input(photo(*size, i)) for i in range(2)])
    with torch.no_grad():
        expected, got = model(x), FastTransformer(model, nnpack=True)(x)
    assert float((got - expected).abs().max()) <= 0.5
    assert psnr(to_uint8(got), to_uint8(expected)) >= 55


@needs_nnpack
@pytest.mark.parametrize("stride", [1, 2])
def test_nnpack_conv_op_matches_conv2d(stride: int) -> None:
    torch.manual_seed(0)
    x, w, b = torch.randn(2, 16, 23, 19), torch.randn(8, 16, 3, 3) * 0.1, torch.randn(8)
    torch.testing.assert_close(
        nnpack_conv2d(x, w, b, stride), F.conv2d(x, w, b, stride), rtol=1e-4, atol=1e-4
    )
    torch.library.opcheck(nnpack_conv2d, (x, w, b, stride), test_utils=("test_schema", "test_faketensor"))


def test_stylizer_auto_on_cpu_is_within_the_psnr_bar_and_batch_independent(model: TransformerNet) -> None:
    """Large images go through NNPACK, small ones (under NNPACK_MIN_PIXELS) without it."""
    imgs = [photo(256, 320, 0), photo(256, 320, 1), photo(40, 36, 2), photo(256, 320, 0)]
    stylizer = Stylizer(model, InferenceOptions(device="cpu"))
    assert stylizer.plan.dtype == torch.float32 and stylizer.plan.fast and not stylizer.plan.channels_last
    outs = stylizer.stylize(imgs)
    for img, out in zip(imgs, outs, strict=True):
        with torch.no_grad():
            expected = to_uint8(model(as_input(img)))[0]
        assert out.shape == img.shape
        assert psnr(out, expected) >= 55
    # The same image in another batch, or alone, gives the same pixels (CLI and bulk agree).
    assert np.array_equal(outs[0], outs[3])
    assert np.array_equal(
        outs[0], Stylizer(model, InferenceOptions(device="cpu", max_batch=1)).stylize([imgs[0]])[0]
    )


@needs_nnpack
def test_nnpack_only_for_images_large_enough_to_gain(
    model: TransformerNet, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stylekit.infer import inference

    calls = []
    real = fastpath.nnpack_conv2d_eager
    monkeypatch.setattr(fastpath, "nnpack_conv2d_eager", lambda *a: calls.append(1) or real(*a))
    stylizer = Stylizer(model, InferenceOptions(device="cpu"))
    side = math.isqrt(inference.NNPACK_MIN_PIXELS)
    stylizer.stylize([photo(side - 4, side)])
    assert not calls
    stylizer.stylize([photo(side, side)])
    assert len(calls) == 14  # every stride-1 conv


@pytest.mark.parametrize("value", [(128, 128, 128), (200, 30, 90)])
def test_flat_images_stay_close_to_the_reference(model: TransformerNet, value: tuple[int, int, int]) -> None:
    """A flat image has ~zero instance-norm variance, which amplifies any rounding difference;
    the stylizer runs such images without Winograd convs."""
    img = np.empty((256, 272, 3), np.uint8)
    img[:] = value
    (out,) = Stylizer(model, InferenceOptions(device="cpu")).stylize([img])
    with torch.no_grad():
        expected = to_uint8(model(as_input(img)))[0]
    assert psnr(out, expected) >= 40


def test_reference_module_path_is_bit_exact(model: TransformerNet) -> None:
    img = photo(48, 64)
    (out,) = Stylizer(copy.deepcopy(model), InferenceOptions(device="cpu", fast=False)).stylize([img])
    with torch.no_grad():
        assert np.array_equal(out, to_uint8(model(as_input(img)))[0])


@pytest.mark.parametrize("precision, bar", [("bf16", 38.0), ("fp16", 50.0)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_reduced_precision_on_cpu(
    model: TransformerNet, precision: str, bar: float, channels_last: bool
) -> None:
    """Autocast as on a GPU (emulated here): both instance-norm paths, fp16's range included."""
    img = photo(32, 32)
    options = InferenceOptions(device="cpu", precision=precision, channels_last=channels_last)
    stylizer = Stylizer(model, options)
    assert not stylizer.plan.nnpack  # NNPACK is fp32 only
    (out,) = stylizer.stylize([img])
    with torch.no_grad():
        assert psnr(out, to_uint8(model(as_input(img)))[0]) >= bar


def test_compiled_path_matches_eager(model: TransformerNet) -> None:
    img = photo(256, 256)  # large enough for the NNPACK path (smaller ones run eagerly without it)
    eager = Stylizer(model, InferenceOptions(device="cpu")).stylize([img])[0]
    compiled = Stylizer(model, InferenceOptions(device="cpu", compile=True))
    got = compiled.stylize([img])[0]
    assert compiled._compiled is not None, "torch.compile fell back to eager"
    assert psnr(got, eager) >= 55


def test_compile_failure_falls_back_to_eager(
    model: TransformerNet, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object, **kwargs: object) -> object:
        def fail(x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("backend exploded")

        return fail

    monkeypatch.setattr(torch, "compile", broken)
    img = photo(256, 256)
    stylizer = Stylizer(model, InferenceOptions(device="cpu", compile=True))
    with caplog.at_level(logging.WARNING):
        got = stylizer.stylize([img])[0]
    assert "running eagerly" in caplog.text
    assert np.array_equal(got, Stylizer(model, InferenceOptions(device="cpu")).stylize([img])[0])


def test_the_compile_flag_reaches_the_library_options() -> None:
    """--compile off/on/cuda-graphs (RunOptions, every command's flag) as InferenceOptions."""
    from stylekit.errors import ConfigError
    from stylekit.infer.options import RunOptions

    modes = {m: InferenceOptions.of(RunOptions(compile=m)) for m in ("off", "on", "cuda-graphs")}
    assert [(o.compile, o.cuda_graphs) for o in modes.values()] == [
        (False, False),
        (True, False),
        (True, True),
    ]
    with pytest.raises(ConfigError, match="--compile must be one of off, on, cuda-graphs"):
        RunOptions(compile="fast")


def test_explicit_options_resolve_as_asked() -> None:
    plan = InferenceOptions(device="cpu", nnpack=False, channels_last=True, tune_allocator=False).resolve()
    assert plan.fast and not plan.nnpack and plan.channels_last and not plan.tune_allocator
    plan = InferenceOptions(device="cpu", fast=False).resolve()
    assert not plan.fast and not plan.nnpack and not plan.per_image
    with pytest.raises(Exception, match="threads"):
        InferenceOptions(threads=0)


def test_allocator_tuning_is_idempotent() -> None:
    first = fastpath.tune_cpu_allocator()
    assert fastpath.tune_cpu_allocator() == first


# --- training ----------------------------------------------------------------------------


def reference_formulation_step(
    model: TransformerNet, loss_fn: PerceptualLoss, optimizer: torch.optim.Optimizer, batch: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The step as it was before the fast path: content features from a full VGG pass."""
    x = batch.permute(0, 3, 1, 2).float()
    optimizer.zero_grad(set_to_none=True)
    y = model(x)
    with torch.no_grad():
        content_features = loss_fn.vgg(x)[1]
    feats = loss_fn.vgg(y)
    terms = (
        loss_fn.content_weight * content_loss(feats[1], content_features),
        loss_fn.style_weight * style_loss([gram_matrix(f) for f in feats], loss_fn.style_grams),
        loss_fn.tv_weight * tv_loss(y),
    )
    sum(terms).backward()
    optimizer.step()
    return terms


def _training_setup(
    model: TransformerNet, channels_last: bool = False
) -> tuple[TransformerNet, PerceptualLoss, torch.optim.Adam]:
    torch.manual_seed(0)
    net = copy.deepcopy(model).train()
    style = as_input(photo(48, 48, 3))
    loss_fn = PerceptualLoss(load_vgg("random", seed=0), style, 1e5, 1e10, 10.0)
    if channels_last:
        to_channels_last(net, loss_fn)
    return net, loss_fn, torch.optim.Adam(net.parameters(), lr=1e-3)


def test_vgg_stops_after_the_taps_asked_for() -> None:
    vgg = load_vgg("random", seed=0)
    x = torch.rand(1, 3, 32, 32) * 255
    with torch.no_grad():
        full, two = vgg(x), vgg(x, n_taps=2)
    assert len(two) == 2
    for a, b in zip(two, full[:2], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_train_step_matches_the_reference_formulation(
    model: TransformerNet, channels_last: bool
) -> None:
    batch = torch.from_numpy(np.stack([photo(32, 32, i) for i in range(2)]))
    net_a, loss_a, opt_a = _training_setup(model)
    net_b, loss_b, opt_b = _training_setup(model, channels_last)
    ref = reference_formulation_step(net_a, loss_a, opt_a, batch)
    got = train_step(net_b, loss_b, opt_b, batch)
    for r, g in zip(ref, (got.content, got.style, got.tv), strict=True):
        assert float(g) == pytest.approx(float(r.detach()), rel=1e-4)
    # Gradients, not Adam's updates: the biases of the convs before an instance norm have a zero
    # gradient in exact arithmetic (the norm subtracts them), so theirs is rounding noise, which
    # Adam's g / sqrt(v) turns into a +-lr step of either sign, in the reference as much as here.
    scale = max(float(p.grad.abs().max()) for p in net_a.parameters())
    for (name, a), b in zip(net_a.named_parameters(), net_b.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-3, atol=1e-4 * scale, msg=name, check_stride=False)


def test_a_style_step_is_an_sr_step_whose_input_is_its_target(model: TransformerNet) -> None:
    """One step function for both tasks: handed the batch as its own low-resolution input, the
    step does what the style step does, to the last bit (the loss's target is a copy of the
    input either way)."""
    batch = torch.from_numpy(np.stack([photo(32, 32, i) for i in range(2)]))
    net_a, loss_a, opt_a = _training_setup(model)
    net_b, loss_b, opt_b = _training_setup(model)
    for _ in range(2):
        style = train_step(net_a, loss_a, opt_a, batch)
        as_sr = train_step(net_b, loss_b, opt_b, batch, lowres=batch)
        for term in ("content", "style", "tv"):
            assert torch.equal(getattr(style, term), getattr(as_sr, term))
    for a, b in zip(net_a.parameters(), net_b.parameters(), strict=True):
        assert torch.equal(a, b)


def test_bf16_train_step_on_cpu_runs_close(model: TransformerNet) -> None:
    batch = torch.from_numpy(np.stack([photo(32, 32, i) for i in range(2)]))
    net_a, loss_a, opt_a = _training_setup(model)
    net_b, loss_b, opt_b = _training_setup(model)
    ref = train_step(net_a, loss_a, opt_a, batch)
    got = train_step(net_b, loss_b, opt_b, batch, torch.bfloat16)
    assert float(got.total) == pytest.approx(float(ref.total), rel=0.05)


# --- GPU -----------------------------------------------------------------------------------------


@cuda
@pytest.mark.parametrize("precision, bar", [("auto", 40.0), ("fp16", 45.0), ("fp32", 55.0)])
def test_cuda_stylizer_within_the_psnr_bar(model: TransformerNet, precision: str, bar: float) -> None:
    imgs = [photo(256, 320, 0), photo(256, 320, 1)]
    stylizer = Stylizer(model, InferenceOptions(device="cuda", precision=precision))
    if precision == "auto":
        assert stylizer.plan.dtype == torch.bfloat16 and stylizer.plan.channels_last
    outs = stylizer.stylize(imgs)
    torch.backends.cudnn.allow_tf32 = False
    try:
        for img, out in zip(imgs, outs, strict=True):
            with torch.no_grad():
                expected = to_uint8(model(as_input(img)))[0]
            assert psnr(out, expected) >= bar
    finally:
        torch.backends.cudnn.allow_tf32 = True


@cuda
@pytest.mark.parametrize("options", [{"fast": False}, {"channels_last": False}], ids=["plain-module", "nchw"])
def test_cuda_other_layouts_within_the_auto_bar(model: TransformerNet, options: dict[str, bool]) -> None:
    """bf16 without the sub-pixel fast path, and without channels_last (the benchmark's
    `nofast` and `nchw` paths), within the same 40 dB of strict fp32 as `auto`."""
    img = photo(256, 320, 0)
    (out,) = Stylizer(copy.deepcopy(model), InferenceOptions(device="cuda", **options)).stylize([img])
    with torch.no_grad():
        expected = to_uint8(model(as_input(img)))[0]
    assert psnr(out, expected) >= 40.0


@cuda
def test_cuda_bf16_channels_last_train_step_close_to_fp32(model: TransformerNet) -> None:
    batch = torch.from_numpy(np.stack([photo(64, 64, i) for i in range(2)])).cuda()
    net_a, loss_a, opt_a = _training_setup(model)
    net_b, loss_b, opt_b = _training_setup(model)
    for m in (net_a, loss_a, net_b, loss_b):
        m.cuda()
    to_channels_last(net_b, loss_b)
    opt_a, opt_b = torch.optim.Adam(net_a.parameters(), 1e-3), torch.optim.Adam(net_b.parameters(), 1e-3)
    ref = train_step(net_a, loss_a, opt_a, batch)
    got = train_step(net_b, loss_b, opt_b, batch, torch.bfloat16)
    assert float(got.total) == pytest.approx(float(ref.total), rel=0.05)


# torch.compile'd paths last: compiling takes the longest on a fresh machine.


@cuda
def test_cuda_compiled_stylizer_matches_eager(model: TransformerNet) -> None:
    img = photo(128, 160)
    eager = Stylizer(model, InferenceOptions(device="cuda")).stylize([img])[0]
    compiled = Stylizer(model, InferenceOptions(device="cuda", compile=True))
    assert psnr(compiled.stylize([img])[0], eager) >= 40
    assert compiled._compiled is not None


@cuda
def test_cuda_graphs_match_eager_and_keep_earlier_outputs(model: TransformerNet) -> None:
    """compile + CUDA graphs (the benchmark's `graphs`): close to eager, and a result handed
    back stays intact when the next call replays the graph."""
    a, b = photo(128, 160, 0), photo(128, 160, 1)
    eager = Stylizer(model, InferenceOptions(device="cuda"))
    graphs = Stylizer(model, InferenceOptions(device="cuda", compile=True, cuda_graphs=True))
    assert graphs.plan.cuda_graphs
    first = graphs.forward(torch.from_numpy(a)[None], keep_on_device=True)
    kept = first.clone()
    second = graphs.forward(torch.from_numpy(b)[None], keep_on_device=True)
    assert torch.equal(first, kept)
    assert psnr(first[0].cpu().numpy(), eager.stylize([a])[0]) >= 40
    assert psnr(second[0].cpu().numpy(), eager.stylize([b])[0]) >= 40


@pytest.mark.parametrize("mode", ["reflect", "replicate"])
@pytest.mark.parametrize(("p", "size"), [(1, (2, 3)), (1, (5, 9)), (4, (5, 7)), (4, (12, 9))])
def test_fill_border_is_f_pad(mode: str, p: int, size: tuple[int, int]) -> None:
    """The padded-buffer path writes a layer into a buffer's interior and fills the border
    itself: it must be exactly what F.pad makes, corners included."""
    from stylekit.infer.fastpath import fill_border, interior, padded_empty

    x = torch.rand(2, 3, *size)
    buf = padded_empty(x, *size, p)
    interior(buf, p).copy_(x)
    assert torch.equal(fill_border(buf, p, mode), F.pad(x, (p, p, p, p), mode=mode))
