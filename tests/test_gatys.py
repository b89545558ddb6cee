"""The Gatys et al. baseline: optimising the image itself lowers the perceptual loss (L-BFGS and
Adam), leaves the caller's tensor alone, and `python -m stylekit optimize` works end to end."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import PYTHON, REPO
from stylekit.errors import ConfigError, StylekitError
from stylekit.files import images
from stylekit.nn.gatys import GatysConfig, GatysResult, IterationRecord, optimize_image
from stylekit.nn.loss import LossTerms, PerceptualLoss
from stylekit.nn.vgg import default_loss_weights, load_vgg

STYLE = REPO / "stylekit" / "examples" / "styles" / "starry_night.jpg"
CONTENT = REPO / "stylekit" / "examples" / "content" / "chelsea.jpg"


@pytest.fixture(scope="module")
def loss_fn() -> PerceptualLoss:
    """The real Caffe loss network and default weights, against a small Starry Night."""
    w = default_loss_weights("caffe")
    style = images.to_tensor(images.resize_longest(images.load_image(str(STYLE)), 64))
    return PerceptualLoss(load_vgg("caffe"), style, w.content, w.style, w.tv)


@pytest.fixture(scope="module")
def content() -> torch.Tensor:
    """(1,3,32,48) float 0-255; non-contiguous, as `images.to_tensor` gives it."""
    return images.to_tensor(images.resize_longest(images.load_image(str(CONTENT)), 48))


def check_trace(result: GatysResult, iterations: int) -> None:
    assert [r.iteration for r in result.trace] == list(range(1, iterations + 1))
    elapsed = [r.elapsed for r in result.trace]
    assert elapsed == sorted(elapsed) and elapsed[0] > 0
    for r in (*result.trace, result.final):
        assert math.isclose(r.total, r.content + r.style + r.tv, rel_tol=1e-4)


@pytest.mark.parametrize(("optimizer", "iterations"), [("lbfgs", 10), ("adam", 6)])
def test_optimize_lowers_the_objective(
    loss_fn: PerceptualLoss, content: torch.Tensor, optimizer: str, iterations: int
) -> None:
    seen: list[IterationRecord] = []
    config = GatysConfig(iterations=iterations, optimizer=optimizer)
    result = optimize_image(content, loss_fn, config, on_iteration=seen.append)
    check_trace(result, iterations)
    assert seen == list(result.trace)
    first = result.trace[0]
    assert first.content == 0.0  # iteration 1 is evaluated at the initial image: the content
    assert result.final.total < 0.9 * first.total
    assert result.final.style < first.style
    assert result.image.shape == content.shape
    assert not result.image.requires_grad
    assert float(result.image.min()) >= 0.0 and float(result.image.max()) <= 255.0
    assert not torch.equal(result.image, content)


def test_noise_init_differs_from_content_init(loss_fn: PerceptualLoss, content: torch.Tensor) -> None:
    from_content = optimize_image(content, loss_fn, GatysConfig(iterations=1, init="content"))
    from_noise = optimize_image(content, loss_fn, GatysConfig(iterations=1, init="noise", seed=3))
    assert from_content.trace[0].content == 0.0
    assert from_noise.trace[0].content > 0.0
    assert (from_noise.image - from_content.image).abs().mean() > 20.0
    again = optimize_image(content, loss_fn, GatysConfig(iterations=1, init="noise", seed=3))
    assert torch.equal(again.image, from_noise.image)  # the seed fixes the noise


def test_the_callers_content_tensor_is_unchanged(loss_fn: PerceptualLoss) -> None:
    content = torch.rand(1, 3, 24, 32) * 255
    before = content.clone()
    for optimizer in ("lbfgs", "adam"):
        optimize_image(content, loss_fn, GatysConfig(iterations=2, optimizer=optimizer))
    assert torch.equal(content, before)
    assert not content.requires_grad and content.grad is None


def test_a_non_finite_loss_is_a_clear_error() -> None:
    def nan_loss(y: torch.Tensor, content: torch.Tensor) -> LossTerms:
        nan = y.sum() * float("nan")
        return LossTerms(content=nan, style=y.mean(), tv=y.mean())

    with pytest.raises(StylekitError, match="non-finite at iteration 1"):
        optimize_image(torch.zeros(1, 3, 8, 8), nan_loss, GatysConfig(iterations=3))


@pytest.mark.parametrize(
    "bad",
    [
        {"iterations": 0},
        {"iterations": 2.5},
        {"optimizer": "sgd"},
        {"lr": 0.0},
        {"lr": -1.0},
        {"lr": float("nan")},
        {"lr": float("inf")},
        {"init": "zeros"},
        {"seed": "1"},
    ],
)
def test_gatys_config_rejects_bad_values(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        GatysConfig(**bad)  # type: ignore[arg-type]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "stylekit", "optimize", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def test_cli_writes_the_output_and_prints_its_path_last(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "out.png"
    result = run_cli(
        *("--style", str(STYLE), "--style-size", "64", "--size", "32", "--iterations", "3"),
        *("--log-every", "1", "--output", str(out), str(CONTENT)),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(out)
    assert "iteration 3/3" in result.stderr and "ETA" in result.stderr
    got = np.asarray(Image.open(out))
    assert got.shape == (21, 32, 3)  # chelsea is 451x300, longest side scaled to 32


@pytest.mark.parametrize(
    ("case", "in_message"),
    [
        ("missing style", "not found"),
        ("content not an image", "cannot decode image"),
        ("zero iterations", "iterations"),
        ("negative style weight", "--style-weight"),
        ("output under a file", "cannot write"),
    ],
)
def test_cli_bad_input_is_one_error_line(tmp_path: Path, case: str, in_message: str) -> None:
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("not an image")
    args = {"--style": str(STYLE), "--output": str(tmp_path / "out.png"), "--size": "32", "--iterations": "1"}
    content = str(CONTENT)
    if case == "missing style":
        args["--style"] = str(tmp_path / "missing.jpg")
    elif case == "content not an image":
        content = str(not_image)
    elif case == "zero iterations":
        args["--iterations"] = "0"
    elif case == "negative style weight":
        args["--style-weight"] = "-1"
    elif case == "output under a file":
        args["--output"] = str(not_image / "out.png")
    result = run_cli(*(x for kv in args.items() for x in kv), content)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert in_message in lines[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
