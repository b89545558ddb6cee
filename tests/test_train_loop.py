"""The Ray-free training loop (stylekit/train/loop.py) and the held photos it trains on without
Ray (stylekit/train/held.py): a few CPU steps on tiny images, no Ray. The job's workers run
the same loop (tests/test_train_job.py runs it under Ray Train)."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import PYTHON, REPO
from stylekit.errors import StylekitError
from stylekit.nn.loss import LossTerms
from stylekit.train.config import TrainConfig
from stylekit.train.held import HeldBatches, load_crops
from stylekit.train.loop import LoopHooks, RecentLosses, Schedule, style_weight_at, train_loop
from stylekit.train.losses import build_loss
from stylekit.train.state import TrainState, new_state
from stylekit.train.step import train_step

EXAMPLES = Path(__file__).resolve().parents[1] / "stylekit" / "examples"
SIDE = 16  # the smallest --image-size


def tiny_config(**overrides: object) -> TrainConfig:
    values: dict = {
        "style": str(EXAMPLES / "styles" / "starry_night.jpg"),
        "data": str(EXAMPLES / "content"),
        "style_size": 32,
        "image_size": SIDE,
        "batch_size": 2,
        "vgg_weights": "random",
        "max_steps": 5,
    }
    values.update(overrides)
    return TrainConfig(**values)


class Recorder(LoopHooks):
    def __init__(self, stop_after: int | None = None):
        self.steps: list[tuple[int, int, int, float]] = []  # step, epoch, step in epoch, style weight
        self.checkpoints: list[int] = []
        self.terms: list[LossTerms] = []
        self.stop_after, self.loss_fn = stop_after, None

    def after_step(self, state: TrainState, terms: LossTerms) -> None:
        weight = float(self.loss_fn.style_weight) if self.loss_fn is not None else -1.0
        self.steps.append((state.step, state.epoch, state.step_in_epoch, weight))
        self.terms.append(terms)

    def checkpoint(self, state: TrainState) -> None:
        self.checkpoints.append(state.step)

    def stop(self) -> bool:
        return self.stop_after is not None and len(self.steps) >= self.stop_after


def setup(config: TrainConfig) -> tuple[TrainState, torch.nn.Module]:
    device = torch.device("cpu")
    return new_state(config, device), build_loss(config, device)


def photos(n: int) -> torch.Tensor:
    rng = np.random.default_rng(0)
    return torch.from_numpy(rng.integers(0, 256, (n, SIDE, SIDE, 3), dtype=np.uint8))


def test_the_loop_is_its_steps_with_the_schedule_and_checkpoints_between() -> None:
    """Epochs of `steps_per_epoch` steps, the style weight's warm-up, a checkpoint every
    `checkpoint_every` steps but not at the end; each step the library's step, bit for bit."""
    config = tiny_config(checkpoint_every=2, content_warmup=2)
    state, loss_fn = setup(config)
    start = copy.deepcopy(state.model)
    held = HeldBatches(photos(4), batch_size=2, seed=3)
    hooks = Recorder()
    hooks.loss_fn = loss_fn
    assert train_loop(config, state, state.model, loss_fn, torch.float32, held, Schedule(3, 2), hooks)
    style = float(config.style_weight)  # type: ignore[arg-type]
    assert hooks.steps == [(1, 0, 1, 0.0), (2, 0, 2, 0.0), (3, 1, 1, style)]
    assert hooks.checkpoints == [2]  # and none at the last step: the caller saves the end
    assert (state.step, state.epoch, state.step_in_epoch) == (3, 1, 1)  # stopped inside epoch 1

    # The same steps written out: the held epochs in order, the weight of the warm-up.
    again, loss_again = setup(config)
    again.model.load_state_dict(start.state_dict())
    optimizer = torch.optim.Adam(again.model.parameters(), lr=config.lr)
    batches = [b["image"] for epoch in range(2) for b in held(epoch)][:3]
    for i, batch in enumerate(batches):
        loss_again.style_weight = style_weight_at(config, i)
        terms = train_step(again.model, loss_again, optimizer, batch)
        assert torch.equal(terms.total, hooks.terms[i].total)
    for a, b in zip(state.model.parameters(), again.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_resumed_run_finishes_its_epoch_and_a_stop_ends_it_early() -> None:
    config = tiny_config(max_steps=10)
    state, loss_fn = setup(config)
    state.step, state.epoch, state.step_in_epoch = 3, 1, 1  # as a checkpoint left it
    hooks = Recorder(stop_after=3)
    held = HeldBatches(photos(4), batch_size=2)
    assert not train_loop(config, state, state.model, loss_fn, torch.float32, held, Schedule(10, 2), hooks)
    assert [s[:3] for s in hooks.steps] == [(4, 1, 2), (5, 2, 1), (6, 2, 2)]
    assert state.step == 6


def test_the_loop_ends_at_the_configured_epochs() -> None:
    config = tiny_config(max_steps=None, epochs=1)
    state, loss_fn = setup(config)
    hooks = Recorder()
    held = HeldBatches(photos(2), batch_size=2)
    assert train_loop(config, state, state.model, loss_fn, torch.float32, held, Schedule(100, 1), hooks)
    assert (state.step, state.epoch, state.step_in_epoch) == (1, 1, 0)


def test_recent_losses_are_the_mean_of_the_last_steps_as_floats() -> None:
    recent = RecentLosses(steps=3)
    assert recent.mean() is None
    rows = [
        LossTerms(torch.tensor(c), torch.tensor(s), torch.tensor(0.25))
        for c, s in ((1.0, 2.0), (3.0, 5.0), (0.1, 0.7), (4.0, 1.5))
    ]
    for terms in rows:
        recent.add(terms)
    assert len(recent) == 3
    last = [t.as_floats() for t in rows[1:]]
    assert recent.mean() == {k: sum(r[k] for r in last) / 3 for k in ("loss", "content", "style", "tv")}
    bf16 = RecentLosses()
    bf16.add(LossTerms(*(torch.tensor(v, dtype=torch.bfloat16) for v in (1.1, 2.2, 3.3))))
    assert bf16.mean()["style"] == float(torch.tensor(2.2, dtype=torch.bfloat16))  # type: ignore[index]


def test_held_epochs_are_seeded_permutations_of_whole_batches() -> None:
    data = torch.arange(5, dtype=torch.uint8).view(5, 1, 1, 1).expand(5, 2, 2, 3).contiguous()
    held = HeldBatches(data, batch_size=2, seed=7)
    assert held.steps_per_epoch == 2
    seen = [[b["image"][:, 0, 0, 0].tolist() for b in held(epoch)] for epoch in range(3)]
    for epoch in seen:
        assert len(epoch) == 2 and all(len(b) == 2 for b in epoch)
        flat = [i for b in epoch for i in b]
        assert len(set(flat)) == 4  # a permutation: no photo twice in an epoch
    assert seen[0] != seen[1]  # a fresh shuffle each epoch
    assert seen == [
        [b["image"][:, 0, 0, 0].tolist() for b in HeldBatches(data, 2, seed=7)(e)] for e in range(3)
    ]
    (small,) = list(HeldBatches(data[:1], batch_size=3)(0))
    assert small["image"].shape == (3, 2, 2, 3)
    with pytest.raises(ValueError, match="uint8"):
        HeldBatches(data.float(), batch_size=2)


def test_load_crops_resizes_like_the_job_and_skips_unreadable_files(tmp_path: Path) -> None:
    for name in ("chelsea.jpg", "coffee.jpg"):
        (tmp_path / name).write_bytes((EXAMPLES / "content" / name).read_bytes())
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "broken.png").write_bytes(b"not an image")
    (tmp_path / "notes.txt").write_text("not a photo")
    crops = load_crops(str(tmp_path), 24)
    assert crops.shape == (2, 24, 24, 3) and crops.dtype == np.uint8
    with pytest.raises(StylekitError, match="no readable training images"):
        load_crops(str(tmp_path / "sub"), 24)


def test_the_ray_free_training_modules_import_no_ray() -> None:
    """The GPU run trains through them on a machine without Ray (tools/gpu_run/gpu_run.py)."""
    code = (
        "import sys\n"
        "class NoRay:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'ray':\n"
        "            raise ImportError('no Ray here')\n"
        "sys.meta_path.insert(0, NoRay())\n"
        "import stylekit.train.loop, stylekit.train.losses, stylekit.train.precision, stylekit.train.held\n"
        "import stylekit.train.metadata, stylekit.train.checkpoint, stylekit.nn.modelio\n"
    )
    proc = subprocess.run([PYTHON, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
