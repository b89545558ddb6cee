"""TransformerNet: the seed's layers, names, parameter count, outputs, and any input size."""

from __future__ import annotations

import pytest
import torch
from reference import RefTransformerNet  # the seed's network, verbatim in structure

from stylekit.nn.model import TransformerNet, count_parameters, padded_size


def seeded_pair() -> tuple[RefTransformerNet, TransformerNet]:
    torch.manual_seed(0)
    seed = RefTransformerNet().eval()
    ours = TransformerNet().eval()
    ours.load_state_dict(seed.state_dict(), strict=True)
    return seed, ours


def test_parameter_count_is_the_papers_network() -> None:
    assert count_parameters(TransformerNet()) == 1_679_235


def test_state_dict_names_and_shapes_match_the_seed() -> None:
    seed, ours = RefTransformerNet().state_dict(), TransformerNet().state_dict()
    assert list(ours) == list(seed)
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in seed.items()}
    for name in ("conv1.conv2d.weight", "in1.weight", "res1.conv1.conv2d.weight", "deconv3.conv2d.weight"):
        assert name in ours


def test_same_output_as_the_seed_for_multiples_of_four() -> None:
    seed, ours = seeded_pair()
    x = torch.rand(2, 3, 64, 48) * 255
    with torch.no_grad():
        torch.testing.assert_close(ours(x), seed(x), rtol=0, atol=1e-3)


@pytest.mark.parametrize("size", [(1, 1), (3, 97), (5, 7), (63, 65), (66, 30), (17, 200)])
def test_any_input_size_comes_out_at_its_own_size(size: tuple[int, int]) -> None:
    _, ours = seeded_pair()
    x = torch.rand(1, 3, *size) * 255
    with torch.no_grad():
        y = ours(x)
    assert y.shape == (1, 3, *size)
    assert torch.isfinite(y).all()


def test_seed_returns_a_larger_image_where_we_pad_and_crop() -> None:
    """The reference grows 63x65 to 64x68; we pad to 64x68, run, and crop the same pixels."""
    seed, ours = seeded_pair()
    x = torch.rand(1, 3, 63, 65) * 255
    with torch.no_grad():
        assert seed(x).shape[-2:] == (64, 68)
        assert ours(x).shape[-2:] == (63, 65)
    assert padded_size(63) == 64 and padded_size(65) == 68 and padded_size(1) == 8


def test_forward_does_not_modify_the_callers_tensor() -> None:
    _, ours = seeded_pair()
    x = torch.rand(1, 3, 30, 31) * 255
    before = x.clone()
    with torch.no_grad():
        ours(x)
    assert torch.equal(x, before)
