"""Training many paintings in one network through jobs/train.py (real local Ray, tiny images,
random VGG): a folder of paintings becomes one network with a style per painting, previews
with a row per painting and TensorBoard per painting, a resumed run goes on; --add-style adds
a painting whose old styles keep their pixels bit for bit. The Ray-free parts (the painting of
each step, the loss of several paintings) without Ray."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_board import read_events
from test_train_job import run, train_args

from conftest import REPO
from stylekit.errors import ConfigError
from stylekit.nn.loss import PerceptualLoss
from stylekit.nn.modelio import load_model, style_entries
from stylekit.nn.vgg import load_vgg
from stylekit.train import previews
from stylekit.train.config import TrainConfig
from stylekit.train.paintings import painting_for_step, steps_each

STYLES = REPO / "stylekit" / "examples" / "styles"


def test_each_step_trains_one_painting_in_seeded_rounds() -> None:
    steps = [painting_for_step(t, 3, seed=42) for t in range(30)]
    for r in range(10):  # every round of 3 steps trains each painting once
        assert sorted(steps[3 * r : 3 * r + 3]) == [0, 1, 2]
    assert steps == [painting_for_step(t, 3, seed=42) for t in range(30)]  # a resumed run draws the same
    assert steps != [painting_for_step(t, 3, seed=7) for t in range(30)]
    assert steps_each(31, 3, 42) == [
        sum(1 for s in [*steps, painting_for_step(30, 3, 42)] if s == k) for k in range(3)
    ]
    assert painting_for_step(5, 1, seed=0) == 0


def test_the_loss_holds_each_paintings_grams_and_one_painting_is_the_old_loss() -> None:
    vgg = load_vgg("random", seed=0)
    a, b = (torch.rand(1, 3, 40, 32, generator=torch.Generator().manual_seed(s)) * 255 for s in (1, 2))
    both = PerceptualLoss(vgg, [a, b], 1.0, 5.0, 0.4)
    y, x = torch.rand(2, 3, 32, 32) * 255, torch.rand(2, 3, 32, 32) * 255
    for k, painting in enumerate((a, b)):
        alone = PerceptualLoss(vgg, painting, 1.0, 5.0, 0.4)
        assert torch.equal(both(y, x, k).total, alone(y, x).total)
    assert both.paintings == 2 and both(y, x, 1).painting == 1


def test_config_takes_several_paintings_and_checks_them(tmp_path: Path) -> None:
    config = TrainConfig(style=(str(STYLES / "wave.jpg"), str(STYLES / "the_scream.jpg")))
    assert config.name == "wave+the_scream" and len(config.style) == 2
    assert TrainConfig(style=str(STYLES / "wave.jpg")).style == (str(STYLES / "wave.jpg"),)
    with pytest.raises(ConfigError, match="two paintings are named 'wave'"):
        TrainConfig(style=(str(STYLES / "wave.jpg"), str(tmp_path / "wave.png")))
    with pytest.raises(ConfigError, match="--add-style needs --init-from"):
        TrainConfig(add_style=True)
    added = TrainConfig(
        style=str(STYLES / "wave.jpg"), init_from=str(tmp_path / "runs/duo/model.safetensors"), add_style=True
    )
    assert added.name == "duo+wave"


def test_a_folder_of_paintings_trains_one_network_then_a_painting_is_added(
    tiny_train_dir: Path, tmp_path: Path
) -> None:
    paintings = tmp_path / "paintings"
    paintings.mkdir()
    for name in ("wave", "the_scream"):
        shutil.copy(STYLES / f"{name}.jpg", paintings / f"{name}.jpg")
    runs = tmp_path / "runs"
    common = ["--style-size", "64", "--checkpoint-every", "2", "--name", "duo"]
    args = train_args(tiny_train_dir, runs, *common, "--max-steps", "4")
    args[args.index("--style") + 1] = str(paintings) + "/"
    result = run(args)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = runs / "duo"
    assert "one network for 2 painting(s): the_scream, wave" in result.stderr
    # Previews: each step's strip has a row per painting; TensorBoard a group per painting.
    strip = Image.open(run_dir / "previews" / "step_000002.jpg")
    assert strip.height > 2 * previews.SIDE
    tags = {v.tag for e in read_events(run_dir / "tensorboard") for v in e.summary.value}
    assert {"painting_wave/total", "painting_the_scream/style", "loss/total"} <= tags

    # The same command with more steps resumes from the last checkpoint.
    args[args.index("--max-steps") + 1] = "6"
    result = run(args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from step 4" in result.stderr
    duo = load_model(str(run_dir / "model.safetensors"))
    assert duo.styles == ("the_scream", "wave") and duo.model.styles == 2
    entries = style_entries(duo.metadata)
    assert [e["schedule"]["steps"] for e in entries] == [3, 3] and entries[0]["schedule"]["mode"] == "joint"
    assert entries[1]["painting"] == str(paintings / "wave.jpg") and len(entries[1]["digest"]) == 16
    assert all("final_style" in e for e in entries)

    # Add a painting: only its gamma and beta train; the two styles keep their pixels.
    add = train_args(
        tiny_train_dir,
        runs,
        "--style-size",
        "64",
        "--max-steps",
        "2",
        "--init-from",
        str(run_dir / "model.safetensors"),
        "--add-style",
        "--num-workers",
        "1",
    )  # fmt: skip (the last --num-workers wins)
    add[add.index("--style") + 1] = str(STYLES / "starry_night.jpg")
    result = run(add)
    assert result.returncode == 0, result.stderr[-3000:]
    trio = load_model(str(runs / "duo+starry_night" / "model.safetensors"))
    assert trio.styles == ("the_scream", "wave", "starry_night")
    entries = style_entries(trio.metadata)
    assert entries[2]["schedule"]["mode"] == "added" and entries[2]["schedule"]["steps"] == 2
    assert entries[0] == style_entries(duo.metadata)[0]
    before, after = duo.model.state_dict(), trio.model.state_dict()
    for key, value in before.items():
        assert torch.equal(after[key][:2] if after[key].shape != value.shape else after[key], value), key
    x = torch.from_numpy(np.random.default_rng(0).uniform(0, 255, (1, 3, 40, 48)).astype(np.float32))
    with torch.no_grad():
        for k in range(2):
            assert torch.equal(trio.model(x, k), duo.model(x, k))
        assert not torch.equal(trio.model(x, 2), trio.model(x, 0))
    assert json.loads(trio.metadata["styles"])[2]["name"] == "starry_night"


def test_a_style_moves_only_on_the_steps_that_train_it() -> None:
    """StyleAdam: the rows of the styles a step did not train keep their values and moments;
    everything else, and a one-style network, is Adam's step exactly."""
    from stylekit.nn.model import TransformerNet
    from stylekit.nn.styles import is_norm_key
    from stylekit.train.optim import StyleAdam

    torch.manual_seed(0)
    net = TransformerNet(3)
    styles = [p for n, p in net.named_parameters() if is_norm_key(net, n)]
    opt = StyleAdam(net.parameters(), lr=1e-2, style_params=styles)
    x = torch.rand(1, 3, 16, 16) * 255
    for style in (0, 1, 0):
        before = [p.detach().clone() for p in styles]
        moments = [opt.state[p]["exp_avg"].clone() if p in opt.state else torch.zeros_like(p) for p in styles]
        opt.zero_grad()
        net(x, style).square().mean().backward()
        opt.step()
        idle = [k for k in range(3) if k != style]
        for p, b, m in zip(styles, before, moments, strict=True):
            assert torch.equal(p[idle], b[idle]) and torch.equal(opt.state[p]["exp_avg"][idle], m[idle])
        assert any(not torch.equal(p[style], b[style]) for p, b in zip(styles, before, strict=True))
    one, again = TransformerNet(1), TransformerNet(1)
    again.load_state_dict(one.state_dict())
    lazy = StyleAdam(
        one.parameters(), lr=1e-2, style_params=[p for n, p in one.named_parameters() if is_norm_key(one, n)]
    )
    plain = torch.optim.Adam(again.parameters(), lr=1e-2)
    for net_, opt_ in ((one, lazy), (again, plain)):
        for _ in range(2):
            opt_.zero_grad()
            net_(x).square().mean().backward()
            opt_.step()
    assert all(torch.equal(a, b) for a, b in zip(one.parameters(), again.parameters(), strict=True))
