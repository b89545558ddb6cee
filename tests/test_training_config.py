"""Training options that need no Ray: step budget, content warm-up, warm starts, metadata."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stylekit.errors import ConfigError, StylekitError
from stylekit.nn.model import TransformerNet
from stylekit.nn.modelio import load_model, save_model
from stylekit.train import loop, precision
from stylekit.train.config import TrainConfig
from stylekit.train.metadata import model_metadata
from stylekit.train.ray_job import preflight
from stylekit.train.state import new_state


def test_max_steps_alone_is_not_capped_by_the_default_epochs() -> None:
    assert TrainConfig().epochs == 2
    assert TrainConfig(max_steps=500).epochs >= 500  # as many epochs as the steps need
    assert TrainConfig(max_steps=500, epochs=3).epochs == 3  # both given: whichever first


def test_content_warmup_zeroes_the_style_weight_then_restores_it() -> None:
    config = TrainConfig(content_warmup=3)
    assert [loop.style_weight_at(config, s) for s in range(5)] == [0.0, 0.0, 0.0, 5.0, 5.0]
    assert loop.style_weight_at(TrainConfig(), 0) == 5.0  # the paper: style from step 0
    with pytest.raises(ConfigError, match="--content-warmup must be >= 0"):
        TrainConfig(content_warmup=-1)


def test_zoomed_crops_are_random_windows_of_the_photo_at_a_random_scale() -> None:
    import io

    import numpy as np
    from PIL import Image

    from stylekit.files import images
    from stylekit.train.data import decode_batch

    # A photo whose every pixel is distinct, so a crop can be found in a resized copy.
    rng = np.random.default_rng(5)
    photo = rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, format="PNG")
    batch = {"bytes": np.array([buf.getvalue()] * 40, dtype=object), "path": np.array(["p"] * 40)}
    centre = decode_batch(batch, 32, None)["image"]
    assert all((c == images.resize_crop(photo, 32)).all() for c in centre)  # the paper's crop
    zoomed = decode_batch(batch, 32, None, crop_scale=2.0)["image"]
    assert zoomed.shape == (40, 32, 32, 3)
    # Each a window of the photo resized to some shorter side from 32 to 64 px; not all the same.
    found = set()
    for crop in zoomed:
        for side in range(32, 65):
            big = images.resize_shorter(photo, side)
            h, w = big.shape[:2]
            if any((big[t : t + 32, x : x + 32] == crop).all() for t in range(h - 31) for x in range(w - 31)):
                found.add(side)
                break
        else:
            raise AssertionError("a zoomed crop is no window of the resized photo")
    assert len(found) > 3 and max(found) > 48
    assert len({c.tobytes() for c in zoomed}) > 30


def test_crop_scale_is_checked_and_recorded() -> None:
    with pytest.raises(ConfigError, match="--crop-scale must be from 1 to 4"):
        TrainConfig(crop_scale=0.5)
    with pytest.raises(ConfigError, match="--crop-scale applies to style training only"):
        TrainConfig(task="sr", crop_scale=2.0)
    meta = model_metadata(TrainConfig(crop_scale=2.0), 10, "caffe", {})
    assert meta["crop_scale"] == "2.0"
    assert model_metadata(TrainConfig(), 10, "caffe", {})["crop_scale"] == "1.0"


def test_content_only_loss_runs_vgg_to_relu2_2_only() -> None:
    from stylekit.nn.loss import PerceptualLoss
    from stylekit.nn.vgg import load_vgg

    loss = PerceptualLoss(load_vgg("random"), torch.rand(1, 3, 32, 32) * 255, 1.0, 0.0, 1.0)
    seen: list[int] = []
    loss.vgg.features[15].register_forward_hook(lambda *a: seen.append(15))  # relu3_3
    x = torch.rand(1, 3, 32, 32) * 255
    y = torch.rand(1, 3, 32, 32) * 255
    terms = loss(y.requires_grad_(), x)
    assert float(terms.style) == 0.0 and float(terms.content) > 0 and not seen
    loss.style_weight = 5.0
    assert float(loss(y, x).style) > 0 and seen


def test_init_from_starts_from_the_given_weights(tmp_path: Path) -> None:
    torch.manual_seed(7)
    start = TransformerNet()
    path = tmp_path / "start.safetensors"
    save_model(str(path), start, {"format": "stylekit"})
    config = TrainConfig(init_from=str(path))
    state = new_state(config, torch.device("cpu"))
    for k, v in start.state_dict().items():
        assert torch.equal(state.model.state_dict()[k], v)
    meta = model_metadata(config, 10, "caffe", {"loss": 1.5, "content": 1.0, "style": 0.4, "tv": 0.1})
    assert meta["initialised_from"] == "start" and meta["final_loss"] == "1.5"
    assert meta["loss_network"].startswith("VGG-16") and "Caffe" in meta["loss_network"]
    assert meta["style_name"] == "starry_night" and meta["task"] == "style"


def test_a_bad_init_from_fails_before_training(tmp_path: Path) -> None:
    with pytest.raises(StylekitError, match="no_such_model"):
        preflight(TrainConfig(init_from="no_such_model"))


def test_saved_models_record_and_check_a_weights_digest(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_model(str(path), TransformerNet(), {"format": "stylekit"}, dtype=torch.float16)
    loaded = load_model(str(path))
    assert len(loaded.metadata["weights_sha256"]) == 64
    assert all(v.dtype == torch.float32 for v in loaded.model.state_dict().values())


def test_bf16_in_hardware_is_read_from_the_cpu_flags_and_auto_stays_fp32_on_the_cpu(tmp_path: Path) -> None:
    amx, plain = tmp_path / "amx", tmp_path / "plain"
    amx.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n")
    plain.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n")
    assert precision.cpu_has_native_bf16(str(amx))
    assert not precision.cpu_has_native_bf16(str(plain))
    assert not precision.cpu_has_native_bf16(str(tmp_path / "missing"))  # not Linux: fp32
    assert precision.resolve_dtype("auto", torch.device("cpu")) == torch.float32  # grain: see resolve_dtype
    assert precision.resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert precision.resolve_dtype("fp32", torch.device("cpu")) == torch.float32
    assert precision.resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
