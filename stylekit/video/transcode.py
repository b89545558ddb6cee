"""Stylize a video: decode -> batches through `Stylizer.stylize` -> stabilise -> encode.

The one path of `python -m stylekit video` and of the bulk job's video tasks. Frames stream:
at most `batch_frames` decoded frames wait for the network at a time, so memory does not grow
with the video's length. The controls (strength, preserve_color, style_scale) and the device
come from the Stylizer's InferenceOptions, exactly as for photos. Audio packets are copied
untouched as they come (media.py).

A remote input (s3://) is downloaded to a temporary file and a remote output written to one and
uploaded after (FFmpeg's MP4 muxer seeks back to write its index); a local output is written
beside its target and renamed into place, so an output that exists is a complete one.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from stylekit.errors import ConfigError
from stylekit.files import storage
from stylekit.logs import Progress, format_duration
from stylekit.redact import redact
from stylekit.video import deps
from stylekit.video.flicker import FlickerMeter
from stylekit.video.media import CRF_CODECS, VideoError, VideoSink, VideoSource, to_rgb
from stylekit.video.stabilize import Stabilizer

if TYPE_CHECKING:
    from stylekit.infer.inference import Stylizer

log = logging.getLogger(__name__)

COPY_CHUNK = 8 << 20  # bytes per read when moving a video to or from object storage


@dataclass(frozen=True)
class VideoOptions:
    """How to write a stylized video (the network's options are the Stylizer's)."""

    codec: str = "libx264"
    crf: int = 18  # libx264/libx265 quality: 0 lossless, 18 visually lossless, 23 FFmpeg's default
    stabilize: float = 0.0  # 0: frame by frame; up to 1: follow the flow (stabilize.py)
    batch_frames: int = 8  # frames per Stylizer.stylize call
    measure_flicker: bool = False  # compute the flicker figure of the output (flicker.py)
    progress_every: float = 10.0  # seconds between progress lines

    def __post_init__(self) -> None:
        if not 0 <= self.stabilize <= 1:  # also refuses NaN
            raise ConfigError(f"--stabilize must be between 0 and 1 (got {self.stabilize})")
        if not 0 <= self.crf <= 51:
            raise ConfigError(f"--crf must be 0-51 (got {self.crf})")
        if self.batch_frames < 1:
            raise ConfigError(f"--batch-size must be >= 1 (got {self.batch_frames})")
        if not self.progress_every > 0:
            raise ConfigError(f"--progress-every must be > 0 (got {self.progress_every})")

    def check_codec(self) -> None:
        """Refuse an encoder this FFmpeg build lacks, before any frame is decoded."""
        av = deps.av()
        try:
            codec = av.Codec(self.codec, "w")
        except (av.FFmpegError, ValueError):
            raise ConfigError(
                f"--codec {self.codec!r} is not a video encoder of this FFmpeg build (try libx264)"
            ) from None
        if codec.type != "video":
            raise ConfigError(f"--codec {self.codec!r} is a {codec.type} encoder, not a video one")
        if self.crf != VideoOptions.crf and self.codec not in CRF_CODECS:
            log.warning(
                "--crf applies to %s only; %s uses its own defaults", "/".join(CRF_CODECS), self.codec
            )


@dataclass(frozen=True)
class VideoResult:
    frames: int
    width: int
    height: int
    duration: float  # seconds of video (the input's)
    seconds: float  # wall time spent
    audio_streams: int
    flicker: float | None  # the output's warping error (measure_flicker), 0-255 units

    @property
    def frames_per_s(self) -> float:
        return self.frames / max(self.seconds, 1e-9)


def stylize_video(
    source: str,
    target: str,
    stylizer: Stylizer,
    options: VideoOptions = VideoOptions(),
    storage_options: storage.StorageOptions = storage.StorageOptions(),
    then: Stylizer | None = None,
) -> VideoResult:
    """Stylize the video at `source` (path or URI) into `target` (path or URI); `then`, a
    super-resolution Stylizer, upscales each stylized (and stabilised) frame."""
    with tempfile.TemporaryDirectory(prefix="stylekit-video-") as tmp:
        local_in = source
        if storage.scheme_of(source) != "file":
            local_in = os.path.join(tmp, "input" + _extension(source))
            download(source, local_in, storage_options)
        else:
            local_in = source.removeprefix("file://")
            if not os.path.isfile(local_in):
                raise VideoError(f"{source}: not found")
        remote_out = storage.scheme_of(target) != "file"
        if remote_out:
            local_out = os.path.join(tmp, "output" + _extension(target))
        else:
            final = os.path.abspath(target.removeprefix("file://"))
            if os.path.realpath(final) == os.path.realpath(local_in):
                raise ConfigError("--output must differ from the input video")
            os.makedirs(os.path.dirname(final), exist_ok=True)
            # Same folder, same extension (FFmpeg picks the container by it), hidden until renamed.
            local_out = os.path.join(os.path.dirname(final), f".tmp-{os.getpid()}-{os.path.basename(final)}")
        try:
            result = stylize_local(local_in, local_out, stylizer, options, then)
            if remote_out:
                upload(local_out, target, storage_options)
            else:
                os.chmod(local_out, 0o644)
                os.replace(local_out, final)
        finally:
            if not remote_out and os.path.exists(local_out):
                os.unlink(local_out)
    return result


def stylize_local(
    source: str, target: str, stylizer: Stylizer, options: VideoOptions, then: Stylizer | None = None
) -> VideoResult:
    """Stylize local file `source` into local file `target` (container from its extension).
    The stabiliser and the flicker meter work at the stylized frames' size (the input's, which
    their flow is computed on); `then` upscales the frames after them, before encoding."""
    started = time.perf_counter()
    stabilizer = Stabilizer(options.stabilize) if options.stabilize else None
    meter = FlickerMeter() if options.measure_flicker else None
    with VideoSource(source) as src:
        info = src.info
        log.info(
            "%s: %dx%d %s, %s fps, %.1f s, ~%d frames, %d audio stream(s)",
            os.path.basename(source),
            info.width,
            info.height,
            info.codec,
            f"{float(info.rate):.3g}" if info.rate else "?",
            info.duration,
            info.frames,
            info.audio_streams,
        )
        sink = VideoSink(target, src, options.codec, options.crf)
        progress = _Progress(info.frames, options.progress_every)
        pending: list[tuple[Any, np.ndarray]] = []  # (input frame, its RGB pixels)

        def flush() -> None:
            stylized = list(stylizer.stylize([pixels for _, pixels in pending]))
            for i, ((_, photo), out) in enumerate(zip(pending, stylized, strict=True)):
                if stabilizer is not None:
                    out = stabilizer(photo, out)
                if meter is not None:
                    meter.update(photo, out)
                stylized[i] = out
            if then is not None:
                stylized = list(then.stylize(stylized))
            for (frame, _), out in zip(pending, stylized, strict=True):
                sink.write(out, frame)
            progress.update(len(pending))
            pending.clear()

        try:
            for item in src.items():
                if item.__class__.__name__ == "VideoFrame":
                    pending.append((item, to_rgb(item)))
                    if len(pending) >= options.batch_frames:
                        flush()
                else:
                    sink.audio(item)
            if pending:
                flush()
            if sink.frames == 0:
                raise VideoError("no video frame could be decoded")
            sink.close()
        except BaseException:
            sink.abort()
            raise
    progress.done()
    return VideoResult(
        frames=sink.frames,
        width=info.width,
        height=info.height,
        duration=info.duration,
        seconds=time.perf_counter() - started,
        audio_streams=info.audio_streams,
        flicker=meter.value if meter is not None else None,
    )


class _Progress:
    """Logs `frame n/total, frames/s, time left` every `every` seconds (the counting and
    timing are logs.Progress; this words the line)."""

    def __init__(self, total: int, every: float, emit: Callable[..., None] | None = None) -> None:
        self.meter, self.logged = Progress(total or None, every), 0
        self.log = emit or log.info

    def update(self, frames: int) -> None:
        self.meter.add(frames)
        if self.meter.due():
            self.line()

    def line(self) -> None:
        self.logged = self.meter.done
        total = self.meter.total
        if total:
            self.log(
                "frame %d/%d (%d%%), %.2f frames/s, about %s left",
                self.meter.done,
                total,
                min(100, 100 * self.meter.done // total),
                self.meter.rate(),
                format_duration(self.meter.left()),
            )
        else:
            self.log("frame %d, %.2f frames/s", self.meter.done, self.meter.rate())

    def done(self) -> None:
        if self.logged != self.meter.done:
            self.meter.total = self.meter.done
            self.line()


def _extension(location: str) -> str:
    return os.path.splitext(location.rstrip("/").rsplit("/", 1)[-1])[1].lower() or ".mp4"


def download(location: str, path: str, options: storage.StorageOptions) -> None:
    """Copy an object to a local file in chunks (never whole in memory)."""
    fs, remote = storage.filesystem(location, options)
    try:
        with fs.open(remote, "rb") as f, open(path, "wb") as out:
            while chunk := f.read(COPY_CHUNK):
                out.write(chunk)
    except FileNotFoundError:
        raise VideoError(f"{location}: not found") from None
    except OSError as e:
        raise VideoError(f"cannot read {redact(location)}: {str(e).splitlines()[0]}") from None


def upload(path: str, location: str, options: storage.StorageOptions) -> None:
    """Copy a local file to an object in chunks (a multipart upload completed on close)."""
    fs, remote = storage.filesystem(location, options)
    try:
        with open(path, "rb") as f, fs.open(remote, "wb") as out:
            while chunk := f.read(COPY_CHUNK):
                out.write(chunk)
    except OSError as e:
        raise VideoError(f"cannot write {redact(location)}: {str(e).splitlines()[0]}") from None
