"""Model files are data: safetensors round trip, reference .pth via weights_only, refusals."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from stylekit.errors import StylekitError
from stylekit.nn.model import TransformerNet
from stylekit.nn.modelio import load_model, model_bytes, save_model


def seeded_model() -> TransformerNet:
    torch.manual_seed(1)
    return TransformerNet().eval()


def test_safetensors_round_trip_keeps_weights_and_metadata(tmp_path: Path) -> None:
    model = seeded_model()
    path = tmp_path / "m.safetensors"
    save_model(str(path), model, {"style": "wave.jpg", "steps": 7})
    loaded = load_model(str(path))
    assert loaded.metadata["style"] == "wave.jpg" and loaded.metadata["steps"] == "7"
    assert len(loaded.digest) == 16
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_reference_pth_with_running_stats_gives_the_same_pixels(tmp_path: Path) -> None:
    """An old reference checkpoint: a pickled state dict with InstanceNorm running stats."""
    model = seeded_model()
    state = dict(model.state_dict())
    for name in ("in1", "in2", "res1.in1", "res3.in2", "in5"):
        state[f"{name}.running_mean"] = torch.zeros(3)
        state[f"{name}.running_var"] = torch.ones(3)
    path = tmp_path / "candy.pth"
    torch.save(state, path)
    loaded = load_model(str(path))
    x = torch.rand(1, 3, 32, 32) * 255
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model(x))
    assert loaded.metadata["format"] == "reference-pth"


class _Evil:
    def __reduce__(self) -> tuple:  # the payload a malicious checkpoint would carry
        return (Path.touch, (Path(_Evil.target),))

    target = ""


def test_malicious_pickle_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    _Evil.target = str(marker)
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"conv1.conv2d.weight": _Evil()}, f)
    with pytest.raises(StylekitError, match="refused to unpickle") as info:
        load_model(str(path))
    assert not marker.exists()
    # torch's reason, whole; not its advice to load with weights_only=False.
    message = str(info.value)
    assert (
        "\n" not in message and "weights_only" not in message and message.endswith("reference-example .pth")
    )


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"", "neither a safetensors"),
        (b"not a model at all", "neither a safetensors"),
        (b"\x10\x00\x00\x00\x00\x00\x00\x00{broken json}xxxxxx", "not a valid safetensors"),
    ],
)
def test_broken_files_get_one_line_errors(tmp_path: Path, payload: bytes, message: str) -> None:
    path = tmp_path / "broken.safetensors"
    path.write_bytes(payload)
    with pytest.raises(StylekitError, match=message) as info:
        load_model(str(path))
    assert "\n" not in str(info.value)


def test_wrong_network_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(StylekitError, match="not a TransformerNet state dict"):
        load_model(str(path))


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(StylekitError, match="not found"):
        load_model(str(tmp_path / "nope.safetensors"))


def test_model_bytes_are_deterministic() -> None:
    model = seeded_model()
    assert model_bytes(model, {"a": "1"}) == model_bytes(model, {"a": "1"})
