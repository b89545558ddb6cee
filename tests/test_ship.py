"""The shipped models' training that spans stints of work: the measures it judges by, the
verdict that decides an install, the schedule a model carries, and `jobs/ship_models.py
--continue` / `--measure` end to end on tiny photos and a temporary models folder."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import PYTHON, REPO
from stylekit.errors import ConfigError
from stylekit.nn.measures import PAINTING_SIDE, Figures, Yardstick, fit_longest, grain
from stylekit.nn.model import TransformerNet
from stylekit.nn.modelio import load_model, save_model
from stylekit.nn.vgg import load_vgg
from stylekit.train import ship


def test_grain_is_zero_on_flat_and_large_on_a_checkerboard() -> None:
    flat = np.full((16, 16, 3), 128, np.uint8)
    assert grain(flat) == pytest.approx(0, abs=1e-9)
    board = (np.indices((16, 16)).sum(0) % 2 * 255).astype(np.uint8)
    checker = np.repeat(board[..., None], 3, axis=2)
    # Every interior pixel differs from its four neighbours by 255: |Laplacian| = 4 * 255.
    assert grain(checker) == pytest.approx(4 * 255, rel=1e-6)


def test_fit_longest_keeps_the_aspect_ratio() -> None:
    img = np.zeros((30, 60, 3), np.uint8)
    assert fit_longest(img, 20).shape == (10, 20, 3)
    assert fit_longest(img, 60) is img


def test_yardstick_places_the_photo_at_one_and_the_painting_at_zero() -> None:
    rng = np.random.default_rng(0)
    size = (PAINTING_SIDE, PAINTING_SIDE * 3 // 4)  # (width, height): the painting's own yardstick size
    photo = np.asarray(Image.fromarray(rng.integers(0, 256, (8, 8, 3), np.uint8)).resize(size))
    painting = np.zeros((size[1], size[0], 3), np.uint8)
    painting[:, ::4] = (200, 60, 20)
    stick = Yardstick(photo, painting, load_vgg("random"))
    itself = stick.measure(photo)
    assert itself.content == 0 and itself.style == pytest.approx(1.0)
    assert stick.measure(painting).style == pytest.approx(0, abs=1e-6)
    assert 0 < stick.measure(photo // 2 + painting // 2).style < 1


def test_ratios() -> None:
    assert Figures(2, 3, 4).ratios(Figures(1, 2, 8)) == Figures(2, 1.5, 0.5)


def measured(
    ratios: tuple[float, float, float],
    held_out: tuple[float, float, float] = (20, 1, 0.2),
    sizes: tuple[float, ...] = (),
) -> ship.Measured:
    original = Figures(10.0, 1.0, 0.5)
    chicago = Figures(ratios[0] * 10.0, ratios[1] * 1.0, ratios[2] * 0.5)
    return ship.Measured(chicago, original, Figures(*held_out), sizes)


def test_shortfall_is_zero_at_the_bar_and_sums_the_excess() -> None:
    assert measured((1.25, 1.15, 1.0)).shortfall == pytest.approx(0)
    assert measured((1.5, 1.15, 0.2)).shortfall == pytest.approx(0.2)
    assert measured((2.5, 2.3, 2.0)).shortfall == pytest.approx(3.0)
    # One look at every size: each size's style above 0.12, and their spread above 1.5x.
    assert measured((1.25, 1.15, 1.0), sizes=(0.12, 0.09)).shortfall == pytest.approx(0)
    assert measured((1.25, 1.15, 1.0), sizes=(0.15, 0.12)).shortfall == pytest.approx(0.25)
    assert measured((1.5, 1.15, 1.0), sizes=(0.06, 0.12)).shortfall == pytest.approx(0.2 + 2 / 1.5 - 1)
    assert measured((1.5, 1.15, 1.0), sizes=(0.06, 0.12)).sizes_spread == pytest.approx(2)


def test_better_counts_one_look_at_every_size_once_the_photo_meets_the_bar() -> None:
    installed = measured((1.2, 1.1, 0.7), held_out=(20, 1.0, 0.3), sizes=(0.156, 0.121))
    # More of the painting at the small size, the photo still at the bar, the others kept.
    ok, why = ship.better(
        measured((1.24, 1.11, 0.7), held_out=(20.4, 1.02, 0.29), sizes=(0.13, 0.11)), installed
    )
    assert ok and "shortfall" in why, why
    # The same gain bought with the held-out photos' content: refused.
    ok, why = ship.better(
        measured((1.24, 1.11, 0.7), held_out=(20.4, 1.05, 0.29), sizes=(0.13, 0.11)), installed
    )
    assert not ok and "content" in why, why
    # Off the bar on the photo for it: further from the whole bar, refused.
    assert not ship.better(measured((1.4, 1.11, 0.7), sizes=(0.13, 0.11)), installed)[0]


def test_better_needs_a_closer_bar_without_a_held_out_cost() -> None:
    installed = measured((1.8, 1.3, 0.2))
    ok, why = ship.better(measured((1.8, 1.2, 0.3)), installed)
    assert ok, why
    assert not ship.better(measured((1.8, 1.3, 0.3)), installed)[0]  # the same bar distance
    # Closer on the comparison photo, but the photo is lost on the others: refused.
    ok, why = ship.better(measured((1.8, 1.2, 0.3), held_out=(20, 1.1, 0.2)), installed)
    assert not ok and "content" in why


def test_better_at_the_bar_looks_at_the_held_out_photos() -> None:
    installed = measured((1.2, 1.1, 0.8), held_out=(20, 1.0, 0.3))
    assert ship.better(measured((1.1, 1.0, 0.9), held_out=(19, 0.9, 0.3)), installed)[0]
    assert not ship.better(measured((1.1, 1.0, 0.9), held_out=(19, 0.9, 0.4)), installed)[0]
    # Off the bar again is never better, however the other photos look.
    assert not ship.better(measured((1.3, 1.0, 0.9), held_out=(15, 0.8, 0.2)), installed)[0]


def test_better_without_an_original_keeps_the_painting() -> None:
    def plain(held_out: tuple[float, float, float]) -> ship.Measured:
        return ship.Measured(Figures(20, 1, 0.2), None, Figures(*held_out))

    installed = plain((20, 1.0, 0.2))
    assert ship.better(plain((18, 0.95, 0.2)), installed)[0]
    assert ship.better(plain((18, 0.95, 0.205)), installed)[0]  # within the style slack
    assert not ship.better(plain((18, 0.95, 0.25)), installed)[0]  # less of the painting
    assert not ship.better(plain((20, 1.0, 0.1)), installed)[0]  # nothing gained


def test_without_an_original_one_look_at_every_size_is_the_bar() -> None:
    def plain(held_out: tuple[float, float, float], sizes: tuple[float, ...]) -> ship.Measured:
        return ship.Measured(Figures(20, 1, 0.2), None, Figures(*held_out), sizes)

    assert plain((20, 1.0, 0.3), ()).shortfall is None
    assert plain((20, 1.0, 0.3), (0.12, 0.1)).shortfall == pytest.approx(0)
    assert plain((20, 1.0, 0.3), (0.15, 0.24)).shortfall == pytest.approx(0.25 + 1.0 + (1.6 / 1.5 - 1))
    installed = plain((8, 0.77, 0.22), (0.29, 0.40))
    # More of the painting at both sizes, the held-out photos kept within the slack: installed,
    # though their content rose (the painting costs some of the photo).
    ok, why = ship.better(plain((8.1, 0.79, 0.18), (0.24, 0.33)), installed)
    assert ok and "sizes" in why, why
    # The same gain bought with more than the slack of the photo: refused.
    ok, why = ship.better(plain((8.1, 0.81, 0.18), (0.24, 0.33)), installed)
    assert not ok and "content" in why, why
    # Less of the painting for a cleaner photo, short of the bar: refused.
    assert not ship.better(plain((7, 0.7, 0.25), (0.31, 0.42)), installed)[0]
    # Closer to the bar at the view, but less of the painting at the photos' own size: refused.
    ok, why = ship.better(plain((6.1, 0.68, 0.39), (0.14, 0.13)), installed)
    assert not ok and "style" in why, why
    assert ship.better(plain((6.1, 0.68, 0.23), (0.14, 0.13)), installed)[0]  # within the slack
    # Both at the bar: judged on the held-out photos, as with an original.
    at_bar = plain((8, 0.77, 0.22), (0.11, 0.1))
    assert ship.better(plain((7.5, 0.74, 0.22), (0.115, 0.1)), at_bar)[0]
    assert not ship.better(plain((8.0, 0.77, 0.2), (0.09, 0.08)), at_bar)[0]  # nothing gained


def test_schedule_of_a_model_without_one_is_read_from_its_fields() -> None:
    legacy = {"steps": "250", "image_size": "128", "content_weight": "1.0", "tv_weight": "0.4",
              "initialised_from": "starry_night"}  # fmt: skip
    schedule = ship.schedule_of(legacy)
    assert schedule == [
        {
            "steps": 250,
            "image_size": "128",
            "content_weight": "1.0",
            "tv_weight": "0.4",
            "from": "starry_night",
        }
    ]
    more = [*schedule, ship.segment_of({"steps": "200", "image_size": "256"}, flags=["--image-size", "256"])]
    assert ship.schedule_of({"schedule": json.dumps(more)}) == more
    assert ship.total_steps(more) == 450
    assert ship.describe_schedule(more) == (
        "250 steps at 128 px (content 1, tv 0.4) from starry_night, then 200 at 256 px"
    )
    # The style image's size where it starts and where it changes.
    sized = [
        {"steps": 100, "image_size": "128", "style_size": "256"},
        {"steps": 50, "image_size": "128", "style_size": "256", "style_weight": "10"},
        {"steps": 20, "image_size": "128", "style_size": "512"},
    ]
    assert ship.describe_schedule(sized) == (
        "100 steps at 128 px, painting at 256 px, then 50 at 128 px (style 10), "
        "then 20 at 128 px, painting at 512 px"
    )
    # The crops' zoom where a segment trained with one (metadata records 1.0 for the paper's).
    zoomed = [
        {"steps": 100, "image_size": "128", "crop_scale": "1.0"},
        {"steps": 50, "image_size": "128", "crop_scale": "2.0"},
    ]
    assert ship.describe_schedule(zoomed) == "100 steps at 128 px, then 50 at 128 px, zoom up to 2x"


def test_a_run_starts_from_the_installed_weights_once(tmp_path: Path) -> None:
    torch.manual_seed(0)
    installed = tmp_path / "models" / "m.safetensors"
    installed.parent.mkdir()
    save_model(str(installed), TransformerNet(), {"steps": "10", "image_size": "64"})
    run = tmp_path / "runs" / "m"
    start = ship.start_run(run, installed)
    assert start.schedule == [{"steps": 10, "image_size": "64"}] and start.flags == []
    assert start.weights.read_bytes() == installed.read_bytes()
    # An install during the run does not move its start.
    save_model(str(installed), TransformerNet(), {"steps": "99"})
    again = ship.start_run(run, installed)
    assert again.schedule == start.schedule and again.weights.read_bytes() != installed.read_bytes()
    assert ship.steps_done(run) == 0
    ship.record_round(run, 5, measured((1.5, 1.2, 0.3), sizes=(0.2, 0.1)), False, "not closer")
    row = json.loads((run / "curve.jsonl").read_text())
    assert row["step"] == 5 and row["installed"] is False and row["x_original"]["grain"] == pytest.approx(1.5)
    assert row["sizes"] == {str(ship.SIZES[0]): 0.2, str(ship.SIZES[1]): 0.1}


def test_only_the_last_rounds_are_kept(tmp_path: Path) -> None:
    rounds = tmp_path / "rounds"
    rounds.mkdir()
    for step in (200, 400, 600, 1000, 800):
        (rounds / f"{step}.safetensors").write_bytes(b"x")
    (rounds / "notes.safetensors").write_bytes(b"x")  # not a round: left alone
    ship.prune_rounds(tmp_path, keep=3)
    assert ship.kept_rounds(tmp_path) == [600, 800, 1000]
    assert (rounds / "notes.safetensors").is_file()


def test_a_new_style_starts_from_another_ones_weights_with_an_empty_schedule(tmp_path: Path) -> None:
    origin = tmp_path / "starry_night.safetensors"
    save_model(str(origin), TransformerNet(), {"steps": "1000", "image_size": "128"})
    start = ship.start_run(tmp_path / "runs" / "udnie", origin, new=True)
    assert start.schedule == [] and start.origin == "starry_night" and start.flags == []
    assert start.weights.read_bytes() == origin.read_bytes()
    assert ship.start_run(tmp_path / "runs" / "udnie", origin).origin == "starry_night"  # read back


def test_flags_given_go_over_the_recorded_recipe_one_by_one() -> None:
    recorded = ["--image-size", "128", "--style-size", "256", "--tv-weight", "4", "--mixed"]
    merged = ship.merge_flags(recorded, ["--tv-weight", "6", "--style-weight=7", "--lr", "2e-4"])
    assert merged == [
        "--image-size", "128", "--style-size", "256", "--tv-weight", "6", "--mixed",
        "--style-weight", "7", "--lr", "2e-4",
    ]  # fmt: skip
    assert ship.merge_flags(recorded, []) == recorded
    assert ship.merge_flags([], ["--image-size", "64"]) == ["--image-size", "64"]
    with pytest.raises(ConfigError, match="no --flag before it"):
        ship.merge_flags([], ["7", "--style-weight"])


def fake_shared(root: Path) -> Path:
    """A stand-in for ../shared/data: a comparison photo, an "original" stylization of it, and
    two held-out photos, all tiny."""
    rng = np.random.default_rng(1)
    (root / "content").mkdir(parents=True)
    (root / "reference-outputs").mkdir()
    for name in ("chicago", "golden_gate", "tubingen"):
        Image.fromarray(rng.integers(0, 256, (40, 56, 3), np.uint8)).save(root / "content" / f"{name}.jpg")
    Image.fromarray(rng.integers(0, 256, (36, 52, 3), np.uint8)).save(
        root / "reference-outputs" / "chicago_starry_night.jpg"
    )
    return root


@pytest.mark.ray
def test_continue_trains_a_round_measures_it_and_installs_only_if_better(
    tmp_path: Path, tiny_train_dir: Path
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    shipped = load_model("starry_night")
    save_model(str(models / "starry_night.safetensors"), shipped.model, shipped.metadata, dtype=torch.float16)
    shared = fake_shared(tmp_path / "shared")
    cmd = [
        PYTHON, str(REPO / "jobs" / "ship_models.py"), "--continue", "--styles", "starry_night",
        "--rounds", "1", "--round-steps", "2", "--models-dir", str(models), "--shared", str(shared),
        "--output", str(tmp_path / "runs"), "--data", str(tiny_train_dir), "--image-size", "32",
        "--vgg-weights", "random", "--batch-size", "2", "--num-workers", "1",
    ]  # fmt: skip
    env = {**os.environ, "RAY_ADDRESS": "local"}  # a fresh local Ray (never someone's ray start cluster)
    env.pop("RAY_AUTH_MODE", None)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    curve = [
        json.loads(line)
        for line in (tmp_path / "runs" / "starry_night" / "curve.jsonl").read_text().splitlines()
    ]
    assert [row["step"] for row in curve] == [2]
    assert sorted(curve[0]["sizes"]) == sorted(str(side) for side in ship.SIZES)
    verdict = "installed" if curve[0]["installed"] else "kept the installed"
    assert "starry_night at 2 steps:" in done.stdout and verdict in done.stdout
    # The round's line shows the style at each size beside the held-out figures.
    assert re.search(r"starry_night at 2 steps: x.* \| \d\.\d{3} / \d\.\d{3} \| ", done.stdout)
    # The flags given go over the installed model's recorded recipe one by one.
    round_cmd = next(line for line in done.stdout.splitlines() if line.startswith("round 1, starry_night: +"))
    assert "--image-size 32" in round_cmd and "--image-size 128" not in round_cmd
    recorded = json.loads(shipped.metadata["schedule"])[-1]["flags"]
    for flag, value in zip(recorded[::2], recorded[1::2], strict=True):
        assert flag == "--image-size" or f"{flag} {value}" in round_cmd
    meta = load_model(str(models / "starry_night.safetensors")).metadata
    steps = str(int(shipped.metadata["steps"]) + 2)
    if curve[0]["installed"]:
        schedule = json.loads(meta["schedule"])
        assert schedule[:-1] == json.loads(shipped.metadata["schedule"]) and schedule[-1]["steps"] == 2
        assert meta["steps"] == steps and "chicago_grain_x_original" in meta
        assert f"sizes_style_{ship.SIZES[0]}" in meta
        assert json.loads((models / "index.json").read_text())["starry_night"]["sha256"]
    else:
        assert meta == shipped.metadata
    measure = subprocess.run(
        [PYTHON, str(REPO / "jobs" / "ship_models.py"), "--measure", "--styles", "starry_night",
         "--models-dir", str(models), "--shared", str(shared), "--output", str(tmp_path / "runs"),
         "--save", str(tmp_path / "pictures")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert measure.returncode == 0, measure.stderr[-2000:]
    assert re.search(
        r"\| starry_night \(installed\) \| x.* \| \d\.\d{3} / \d\.\d{3} \| \d\.\d{3} \|", measure.stdout
    )
    assert "runs/starry_night/model.safetensors) | x" in measure.stdout
    # One look at every size: the comparison photo small and large, each viewed at one size,
    # beside the 2016 original viewed at that size.
    assert re.search(
        r"\| starry_night \| \d\.\d{3} / \d\.\d{3} \| [\d.]+x \| (met|not met) \| \d\.\d{3} \|",
        measure.stdout,
    )
    # The comparison picture: the photo, ours, the original, side by side at the original's size.
    assert Image.open(tmp_path / "pictures" / "chicago_starry_night.png").size == (3 * 52, 36)
    # The round is kept as it would ship; --install puts it in place whatever the verdict was.
    kept = tmp_path / "runs" / "starry_night" / "rounds" / "2.safetensors"
    assert load_model(str(kept)).metadata["steps"] == steps
    install = [
        PYTHON, str(REPO / "jobs" / "ship_models.py"), "--styles", "starry_night", "--models-dir", str(models),
        "--output", str(tmp_path / "runs"),
    ]  # fmt: skip
    missing = subprocess.run([*install, "--install", "3"], capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert (
        "no round of starry_night reached 3 steps" in missing.stderr
        and "its kept rounds: 2" in missing.stderr
    )
    done = subprocess.run([*install, "--install", "2"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"starry_night: installed the round at 2 steps by hand ({steps} steps in all" in done.stdout
    assert (models / "starry_night.safetensors").read_bytes() == kept.read_bytes()
    meta = load_model(str(models / "starry_night.safetensors")).metadata
    assert "final_loss" in meta and f"sizes_style_{ship.SIZES[1]}" in meta
    index = json.loads((models / "index.json").read_text())
    assert index["starry_night"]["sha256"] == hashlib.sha256(kept.read_bytes()).hexdigest()
    last = json.loads((tmp_path / "runs" / "starry_night" / "curve.jsonl").read_text().splitlines()[-1])
    assert last == {"step": 2, "installed": True, "why": "installed by hand"}


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--install", "200"], "installs one style's round: give --styles NAME"),
        (["--install", "200", "--styles", "wave", "--continue"], "run it without --continue or --measure"),
        (["--install", "-1", "--styles", "wave"], "--install must be a round's step count"),
        (["--install", "0", "--styles", "wave"], "--install must be a round's step count"),
    ],
)
def test_install_needs_one_style_and_nothing_else(flags: list[str], message: str) -> None:
    done = subprocess.run(
        [PYTHON, str(REPO / "jobs" / "ship_models.py"), *flags], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and message in done.stderr
    assert "Traceback" not in done.stderr


def test_continue_without_the_held_out_photos_is_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [PYTHON, str(REPO / "jobs" / "ship_models.py"), "--continue", "--shared", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert "has no content/ folder of held-out photos" in done.stderr
    assert "Traceback" not in done.stderr
