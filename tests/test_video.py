"""Video: frames, frame rate, timestamps, duration, rotation and the audio survive stylization;
the stabiliser lowers the flicker figure without ghosting; broken videos are one-line errors."""

from __future__ import annotations

import io
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import PYTHON, REPO, make_bucket
from stylekit.errors import StylekitError
from stylekit.infer.inference import InferenceOptions, Stylizer
from stylekit.nn.modelio import load_model

av = pytest.importorskip("av")
pytest.importorskip("cv2")

from stylekit.video import deps  # noqa: E402
from stylekit.video.flicker import warping_error  # noqa: E402
from stylekit.video.stabilize import Stabilizer  # noqa: E402
from stylekit.video.synthetic import disc_mask, moving_scene, write_clip  # noqa: E402
from stylekit.video.transcode import VideoOptions, stylize_video  # noqa: E402

PHOTO = REPO / "stylekit" / "examples" / "content" / "chelsea.jpg"
W, H, FRAMES, FPS = 64, 48, 12, 12


def photo() -> np.ndarray:
    return np.asarray(Image.open(PHOTO).convert("RGB"))


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1 s clip: 12 frames of 64x48 at 12 fps, an AAC tone, displayed rotated 90 degrees."""
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    write_clip(str(path), moving_scene(photo(), W, H, FRAMES), FPS, rotation=90)
    return path


@pytest.fixture(scope="module")
def stylizer(model_file: Path) -> Stylizer:
    return Stylizer(load_model(str(model_file)).model, InferenceOptions(device="cpu", threads=1))


def probe(path: Path) -> dict[str, object]:
    """What a player sees: video frames (pts, size, rotation), rate, duration, audio packets."""
    with av.open(str(path)) as c:
        video, audio = c.streams.video[0], c.streams.audio[0]
        frames = list(c.decode(video=0))
        info = {
            "pts": [f.pts for f in frames],
            "time_base": video.time_base,
            "rate": video.average_rate,
            "size": (frames[0].width, frames[0].height),
            "rotation": frames[0].rotation,
            "duration": c.duration,
            "audio_codec": audio.codec_context.name,
            "audio_rate": audio.codec_context.sample_rate,
        }
    with av.open(str(path)) as c:
        a = c.streams.audio[0]
        info["audio"] = [(p.pts, bytes(p)) for p in c.demux(a) if p.size]
        info["audio_time_base"] = a.time_base
    return info


def test_frames_rate_timestamps_duration_rotation_and_audio_survive(
    clip: Path, stylizer: Stylizer, tmp_path: Path
) -> None:
    out = tmp_path / "out.mp4"
    result = stylize_video(str(clip), str(out), stylizer, VideoOptions(batch_frames=5, stabilize=0.5))
    assert (result.frames, result.width, result.height, result.audio_streams) == (FRAMES, W, H, 1)
    src, got = probe(clip), probe(out)
    assert len(got["pts"]) == FRAMES  # type: ignore[arg-type]
    assert got["rate"] == Fraction(FPS)
    # Same presentation times, whatever time base the muxer chose.
    seconds = lambda info: [p * info["time_base"] for p in info["pts"]]  # noqa: E731
    assert seconds(got) == seconds(src)
    assert got["duration"] == src["duration"]
    assert got["rotation"] == src["rotation"] == 90
    assert got["size"] == (W, H)
    # The audio is the input's packets, byte for byte, at the same times.
    assert (got["audio_codec"], got["audio_rate"]) == (src["audio_codec"], src["audio_rate"])
    audio_seconds = lambda info: [(p * info["audio_time_base"], b) for p, b in info["audio"]]  # noqa: E731
    assert audio_seconds(got) == audio_seconds(src)
    assert len(got["audio"]) > 5  # type: ignore[arg-type]


def test_frames_are_the_stylizers_pixels_with_the_controls(
    clip: Path, model_file: Path, tmp_path: Path
) -> None:
    """The controls come from InferenceOptions, as for photos: a near-lossless encode of the
    stylized frames matches Stylizer.stylize on the decoded input frames."""
    s = Stylizer(load_model(str(model_file)).model, InferenceOptions(device="cpu", strength=0.5, threads=1))
    out = tmp_path / "out.mkv"
    stylize_video(str(clip), str(out), s, VideoOptions(crf=0, codec="libx264"))
    with av.open(str(clip)) as c:
        inputs = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    with av.open(str(out)) as c:
        outputs = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    expected = s.stylize(inputs)
    # crf 0 is lossless in YUV; RGB -> YUV 4:2:0 -> RGB still costs a little.
    errors = [np.abs(o.astype(int) - e).mean() for o, e in zip(outputs, expected, strict=True)]
    assert max(errors) < 6, errors
    plain = Stylizer(load_model(str(model_file)).model, InferenceOptions(device="cpu", threads=1))
    assert np.abs(plain.stylize(inputs[:1])[0].astype(int) - outputs[0]).mean() > 2 * max(errors)


def test_stabiliser_lowers_the_flicker_figure_without_a_ghost() -> None:
    w, h, n = 160, 96, 10
    frames = list(moving_scene(photo(), w, h, n))
    # The figure itself: the input clip, whose changes are all motion, scores far below the
    # same clip with independent noise in each frame (what shimmer looks like).
    rng = np.random.default_rng(0)
    noisy = [np.clip(f + rng.normal(0, 12, f.shape), 0, 255).astype(np.uint8) for f in frames]
    assert warping_error(frames, frames) < 0.5 * warping_error(frames, noisy)
    # A trained style (an untrained net's output is nearly flat): its strokes shimmer as the
    # camera moves.
    # At the network's own scale (style_scale 1): the strokes of a full-size run, which shimmer most.
    shipped = Stylizer(
        load_model("starry_night").model, InferenceOptions(device="cpu", threads=1, style_scale=1)
    )
    per_frame = shipped.stylize(frames)
    stab = Stabilizer(0.8)
    steady = [stab(p, y) for p, y in zip(frames, per_frame, strict=True)]
    before, after = warping_error(frames, per_frame), warping_error(frames, steady)
    assert before > 2 * warping_error(frames, frames)
    assert after < 0.6 * before, (before, after)
    assert after < 0.5 * before, (before, after)
    # No ghost: where the disc just left, the stabilised frame is the fresh stylized one. A
    # blend that ignores motion (each output 0.8 of the previous one) leaves a trail there.
    naive = [per_frame[0]]
    for y in per_frame[1:]:
        naive.append((0.8 * naive[-1] + 0.2 * y).astype(np.uint8))
    for i in range(1, n):
        trail = disc_mask(i - 1, n, w, h) & ~disc_mask(i, n, w, h)
        ghost = np.abs(steady[i].astype(np.float32) - per_frame[i])[trail].mean()
        naive_ghost = np.abs(naive[i].astype(np.float32) - per_frame[i])[trail].mean()
        assert ghost < 8 and naive_ghost > 3 * ghost, (i, ghost, naive_ghost)
    assert Stabilizer(0)(frames[0], per_frame[0]) is per_frame[0]


def test_stabiliser_strength_out_of_range_is_refused() -> None:
    with pytest.raises(StylekitError, match="--stabilize"):
        VideoOptions(stabilize=1.5)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "stylekit", "video", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def test_cli_writes_the_video_and_a_broken_one_is_a_one_line_error(
    clip: Path, model_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "styled.mp4"
    ok = run_cli("--model", str(model_file), "--output", str(out), "--flicker", str(clip))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip().splitlines()[-1] == str(out)
    assert "flicker (warping error, 0-255):" in ok.stdout
    assert "frames/s" in ok.stderr
    assert len(probe(out)["pts"]) == FRAMES  # type: ignore[arg-type]

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(clip.read_bytes()[: len(clip.read_bytes()) // 3][::-1])
    for bad in (broken, tmp_path / "missing.mp4"):
        result = run_cli("--model", str(model_file), "--output", str(tmp_path / "x.mp4"), str(bad))
        assert result.returncode != 0
        assert "Traceback" not in result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, result.stderr
    assert not (tmp_path / "x.mp4").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_a_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` now raises ImportError
    with pytest.raises(StylekitError, match=r"stylekit\[video\]") as e:
        deps.av()
    assert "\n" not in str(e.value)


@pytest.mark.s3
def test_remote_input_and_output(clip: Path, stylizer: Stylizer, s3_server: str) -> None:
    import boto3

    make_bucket("videos")
    boto3.client("s3").upload_file(str(clip), "videos", "in/clip.mp4")
    result = stylize_video("s3://videos/in/clip.mp4", "s3://videos/out/clip.mp4", stylizer)
    assert result.frames == FRAMES
    body = boto3.client("s3").get_object(Bucket="videos", Key="out/clip.mp4")["Body"].read()
    with av.open(io.BytesIO(body)) as c:
        assert sum(1 for _ in c.decode(video=0)) == FRAMES
        assert len(c.streams.audio) == 1
