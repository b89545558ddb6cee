"""Training previews (stylekit.train.previews): strips per checkpoint and the growing grid."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stylekit.infer import sheet
from stylekit.nn.model import TransformerNet
from stylekit.train import previews


@pytest.fixture()
def tiny_photos(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three small photos instead of the bundled ones at 192 px: the same code, much faster."""
    rng = np.random.default_rng(0)
    photos = tuple(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for _ in range(3))
    monkeypatch.setattr(previews, "preview_photos", lambda: photos)


def strip(colour: int, height: int = 40) -> np.ndarray:
    return np.full((height, 100, 3), colour, np.uint8)


def test_grid_rows_grow_with_strips_in_step_order() -> None:
    one = previews.render_grid([(2, strip(50))])
    three = previews.render_grid([(6, strip(200)), (2, strip(50)), (4, strip(120))])
    row = 40 + sheet.GAP
    assert one.shape[0] == row + sheet.GAP and three.shape[0] == 3 * row + sheet.GAP
    assert one.shape[1] == three.shape[1]
    x = three.shape[1] - sheet.GAP - 1  # the right edge of each strip
    colours = [int(three[sheet.GAP + i * row + 20, x, 0]) for i in range(3)]
    assert colours == [50, 120, 200]
    label = three[sheet.GAP : sheet.GAP + 40, sheet.GAP : sheet.GAP + 60]
    assert (label != sheet.BACKGROUND).any()  # "step N" drawn


def test_choose_steps_caps_the_rows_keeping_first_and_last() -> None:
    assert previews.choose_steps([4, 2, 2, 6]) == [2, 4, 6]
    picked = previews.choose_steps(list(range(1, 1001)), limit=10)
    assert len(picked) == 10 and picked[0] == 1 and picked[-1] == 1000


def test_preview_photos_are_the_bundled_three_at_192() -> None:
    photos = previews.preview_photos()
    assert len(photos) == 3 and all(max(p.shape[:2]) == 192 for p in photos)


def test_record_saves_a_strip_per_step_and_rebuilds_the_grid(tmp_path: Path, tiny_photos: None) -> None:
    torch.manual_seed(0)
    model = TransformerNet().train()
    run_dir = tmp_path / "wave"
    heights = []
    for step in (4, 2):  # a resumed run may add an earlier step: rows stay in step order
        assert previews.record(str(run_dir), step, model)
        heights.append(Image.open(run_dir / "previews.jpg").height)
    assert sorted(p.name for p in (run_dir / "previews").iterdir()) == ["step_000002.jpg", "step_000004.jpg"]
    strip_h = Image.open(run_dir / "previews" / "step_000002.jpg").height
    assert strip_h == previews.SIDE
    # The photos themselves head the grid, then one row per step.
    assert heights == [2 * strip_h + 3 * sheet.GAP, 3 * strip_h + 4 * sheet.GAP]
    assert model.training  # put back as it was


def test_a_failed_preview_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, tiny_photos: None
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the run folder should be")
    torch.manual_seed(0)
    with caplog.at_level(logging.WARNING):
        assert not previews.record(str(blocker), 2, TransformerNet())
    assert "previews for step 2 not written" in caplog.text


@pytest.mark.s3
def test_record_on_an_s3_run_folder(s3_server: str, tiny_photos: None) -> None:
    import boto3

    from conftest import make_bucket
    from stylekit.files.storage import StorageOptions

    make_bucket("previews-bucket")
    torch.manual_seed(0)
    model = TransformerNet()
    for step in (2, 4):
        assert previews.record("s3://previews-bucket/runs/wave", step, model, StorageOptions(s3_server))
    listing = boto3.client("s3").list_objects_v2(Bucket="previews-bucket", Prefix="runs/wave/")
    assert sorted(o["Key"] for o in listing["Contents"]) == [
        "runs/wave/previews.jpg",
        "runs/wave/previews/step_000002.jpg",
        "runs/wave/previews/step_000004.jpg",
    ]
    grid = (
        boto3.client("s3").get_object(Bucket="previews-bucket", Key="runs/wave/previews.jpg")["Body"].read()
    )
    assert Image.open(io.BytesIO(grid)).height == 3 * previews.SIDE + 4 * sheet.GAP
