"""Videos in the bulk job (a real local Ray, local folders): one manifest row per video with its
frames and seconds, outputs beside the photos, a broken video a failed row, incremental reruns."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import REPO

av = pytest.importorskip("av")
pytest.importorskip("cv2")

from stylekit.bulk.config import BulkConfig  # noqa: E402
from stylekit.bulk.plan.keys import output_key  # noqa: E402
from stylekit.video.synthetic import moving_scene, write_clip  # noqa: E402

pytestmark = [pytest.mark.ray]

PHOTO = REPO / "stylekit" / "examples" / "content" / "chelsea.jpg"


@pytest.fixture(scope="module")
def ray_2cpu() -> Iterator[None]:
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture()
def inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    (folder / "clips").mkdir(parents=True)
    photo = np.asarray(Image.open(PHOTO).convert("RGB"))
    Image.fromarray(photo[:40, :56]).save(folder / "a.png")
    write_clip(str(folder / "clips" / "walk.mp4"), moving_scene(photo, 64, 48, 8), 8)
    write_clip(str(folder / "clips" / "old.mkv"), moving_scene(photo, 48, 32, 5), 10, audio=False)
    (folder / "clips" / "broken.mov").write_bytes(b"\x00\x00\x00\x18ftypqt  " + bytes(range(256)) * 8)
    (folder / "notes.txt").write_text("not an input")
    return folder


def runs(out: Path) -> list[dict[str, dict[str, object]]]:
    result = []
    for run in sorted((out / "_manifest").glob("run=*")):
        rows = pq.read_table(run).to_pylist()
        result.append({Path(str(r["input"])).name: r for r in rows})
    return result


def test_videos_under_the_prefix_each_one_row(
    inputs: Path, tmp_path: Path, model_file: Path, ray_2cpu: None
) -> None:
    from stylekit.bulk.driver import run_bulk

    out = tmp_path / "out"
    config = BulkConfig(model=str(model_file), input=str(inputs), output=str(out), stabilize=0.5)
    summary = run_bulk(config)
    assert (summary.ok, summary.failed, summary.skipped) == (3, 1, 0)
    rows = runs(out)[0]
    assert set(rows) == {"a.png", "walk.mp4", "old.mkv", "broken.mov"}
    walk = rows["walk.mp4"]
    assert walk["status"] == "ok" and walk["frames"] == 8 and walk["duration"] == pytest.approx(1.0)
    assert (walk["width"], walk["height"], walk["format"]) == (64, 48, "mp4")
    assert walk["output_bytes"] == (out / "clips" / "walk.mp4").stat().st_size
    assert rows["old.mkv"]["frames"] == 5 and rows["old.mkv"]["duration"] == pytest.approx(0.5)
    assert rows["a.png"]["status"] == "ok" and rows["a.png"]["frames"] is None
    broken = rows["broken.mov"]
    assert broken["status"] == "failed" and "not a readable video" in str(broken["error"])
    assert "\n" not in str(broken["error"])
    with av.open(str(out / "clips" / "walk.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 8
        assert len(c.streams.audio) == 1
    assert not (out / "clips" / "broken.mov").exists()

    # A rerun skips what is done and retries the broken video only.
    again = run_bulk(BulkConfig(model=str(model_file), input=str(inputs), output=str(out), stabilize=0.5))
    assert (again.ok, again.failed, again.skipped) == (0, 1, 3)
    second = runs(out)[1]
    assert {k: r["status"] for k, r in second.items()} == {
        "a.png": "skipped",
        "walk.mp4": "skipped",
        "old.mkv": "skipped",
        "broken.mov": "failed",
    }


def test_video_output_keys() -> None:
    assert output_key("clips/a.MOV", "same") == "clips/a.MOV"
    assert output_key("clips/a.webm", "jpg") == "clips/a.mp4"
    assert output_key("clips/a.avi", "same") == "clips/a.mp4"
    assert output_key("b.jpg", "png") == "b.png"


def test_then_upscales_videos_as_it_does_photos(tmp_path: Path, model_file: Path, ray_2cpu: None) -> None:
    """--then SR_MODEL: every video frame goes through the super-resolution model too (it was
    ignored for videos while the run's digest covered both models)."""
    from stylekit.bulk.driver import run_bulk

    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    photo = np.asarray(Image.open(PHOTO).convert("RGB"))
    Image.fromarray(photo[:24, :32]).save(folder / "a.png")
    write_clip(str(folder / "walk.mp4"), moving_scene(photo, 32, 24, 3), 8, audio=False)
    config = BulkConfig(
        model=str(model_file), input=str(folder), output=str(out), then="sr_x4", stabilize=0.5
    )
    summary = run_bulk(config)
    assert (summary.ok, summary.failed) == (2, 0)
    assert Image.open(out / "a.png").size == (128, 96)
    with av.open(str(out / "walk.mp4")) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 3 and {f.shape for f in frames} == {(96, 128, 3)}
