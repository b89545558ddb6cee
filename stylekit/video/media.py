"""Reading and writing video files through FFmpeg's libraries (PyAV), one frame at a time.

`VideoSource` demuxes a file and yields, in file order, decoded video frames of its first video
stream and the raw packets of its audio streams. `VideoSink` encodes new pictures for those
frames (H.264 by default) and muxes the audio packets unchanged, so the sound is bit-exact and in
sync: each new frame takes its input frame's timestamp (pts), time base and duration, and the
audio packets keep theirs, so frame rate (constant or variable), start offset and duration
survive. The display matrix (a phone's "rotate 90") is copied, so players turn the output as
they turned the input; the pixels themselves stay as coded.

Memory is a few frames and the muxer's interleaving queue, whatever the video's length.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from stylekit.errors import StylekitError
from stylekit.video import deps

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi")
# Encoders that take a constant rate factor (quality, lower is better).
CRF_CODECS = ("libx264", "libx265")
MAX_BAD_PACKETS = 100  # corrupt video packets skipped (as ffmpeg does) before giving up


class VideoError(StylekitError):
    """This one video cannot be used (not a video, broken, or not writable as asked)."""


# Containers an H.264 stream with any common audio codec fits in; other videos become .mp4.
KEPT_CONTAINERS = (".mp4", ".mov", ".m4v", ".mkv")


def is_video_key(key: str) -> bool:
    return key.lower().endswith(VIDEO_EXTENSIONS)


def video_output_key(key: str) -> str:
    """A stylized video's key: the input's own in a container that holds H.264, else .mp4."""
    stem, ext = os.path.splitext(key)
    return key if ext.lower() in KEPT_CONTAINERS else stem + ".mp4"


# FFmpeg's "unspecified" colour tags (AVCOL_SPC_UNSPECIFIED, AVCOL_RANGE_UNSPECIFIED).
UNSPECIFIED_COLORSPACE, UNSPECIFIED_RANGE = 2, 0


def to_rgb(frame: Any) -> np.ndarray:
    """A decoded frame -> (H, W, 3) uint8 RGB, through the YUV matrix and range it is tagged
    with (untagged: BT.601, limited range, FFmpeg's defaults)."""
    src_range = frame.color_range if frame.color_range != UNSPECIFIED_RANGE else None
    return frame.to_ndarray(format="rgb24", src_color_range=src_range)


def _ffmpeg_error(e: BaseException) -> str:
    """FFmpeg's own words (av.FFmpegError's str() adds an errno and the file name)."""
    strerror = getattr(e, "strerror", None)
    if strerror:
        return str(strerror)
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


@dataclass(frozen=True)
class VideoInfo:
    """What the container says before decoding (frames and duration may be estimates, 0 unknown)."""

    width: int
    height: int
    frames: int
    rate: Fraction | None
    duration: float
    audio_streams: int
    codec: str


class VideoSource:
    """An open input video; iterate `items()` once for frames and audio packets in file order."""

    def __init__(self, path: str):
        av = deps.av()
        self._av = av
        try:
            self.container = av.open(path, "r")
        except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
            raise VideoError(f"not a readable video ({_ffmpeg_error(e)})") from None
        if not self.container.streams.video:
            self.container.close()
            raise VideoError("no video stream in the file")
        self.video = self.container.streams.video[0]
        self.video.thread_type = "AUTO"  # frame + slice threads in the decoder
        self.audio = list(self.container.streams.audio)
        self.bad_packets = 0

    @property
    def info(self) -> VideoInfo:
        v = self.video
        rate = v.average_rate or v.guessed_rate
        duration = 0.0
        if v.duration and v.time_base:
            duration = float(v.duration * v.time_base)
        elif self.container.duration:
            duration = self.container.duration / 1_000_000
        frames = v.frames or (round(duration * rate) if rate and duration else 0)
        return VideoInfo(
            width=v.codec_context.width,
            height=v.codec_context.height,
            frames=int(frames),
            rate=Fraction(rate) if rate else None,
            duration=duration,
            audio_streams=len(self.audio),
            codec=v.codec_context.name,
        )

    def items(self) -> Iterator[Any]:
        """av.VideoFrame (decoded, presentation order) and av.Packet (audio, as stored), in order."""
        av = self._av
        try:
            for packet in self.container.demux(self.video, *self.audio):
                if packet.stream.type == "audio":
                    if packet.size:  # the demuxer's empty end-of-stream packets are not data
                        yield packet
                    continue
                # The demuxer ends with an empty packet per stream: decoding it flushes the
                # decoder's delayed frames.
                yield from self._decode(packet)
        except (av.FFmpegError, OSError) as e:
            raise VideoError(f"cannot read video: {_ffmpeg_error(e)}") from None

    def _decode(self, packet: Any) -> Iterator[Any]:
        av = self._av
        try:
            frames = self.video.decode(packet)
        except av.InvalidDataError as e:
            self.bad_packets += 1
            if self.bad_packets > MAX_BAD_PACKETS:
                raise VideoError(f"too many corrupt video packets ({_ffmpeg_error(e)})") from None
            log.warning("skipped a corrupt video packet: %s", _ffmpeg_error(e))
            return
        yield from frames

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class VideoSink:
    """An output video with the source's audio streams; opened at the first frame (its size and
    rotation are known then), audio packets that come before it wait in a short queue."""

    def __init__(self, path: str, source: VideoSource, codec: str = "libx264", crf: int = 18):
        self._av = deps.av()
        self.path, self.source, self.codec, self.crf = path, source, codec, crf
        self.container: Any = None
        self.stream: Any = None
        self._audio: dict[int, Any] = {}  # input stream index -> output stream
        self._waiting: list[Any] = []
        self.frames = 0

    def _open(self, like: Any, width: int, height: int) -> None:
        av = self._av
        src = self.source.video
        options = {"movflags": "+faststart"} if self.path.lower().endswith((".mp4", ".mov", ".m4v")) else {}
        try:
            self.container = av.open(self.path, "w", options=options)
            rate = src.average_rate or src.guessed_rate or Fraction(25)
            stream = self.container.add_stream(self.codec, rate=rate)
            stream.width, stream.height = width, height
            # yuv420p (what players expect) needs even sizes; an odd-sized video keeps all
            # its pixels in 4:4:4 instead.
            stream.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
            stream.time_base = src.time_base
            stream.codec_context.time_base = src.time_base
            if self.codec in CRF_CODECS:
                stream.codec_context.options = {"crf": str(self.crf), "preset": "medium"}
            # The input's colour tags, and the same YUV matrix and range as to_rgb used, so
            # colours come back as they went in.
            ctx = stream.codec_context
            ctx.colorspace, ctx.color_range = like.colorspace, like.color_range
            ctx.color_primaries, ctx.color_trc = like.color_primaries, like.color_trc
            if like.rotation:
                stream.set_display_rotation(like.rotation)
            self.stream = stream
            for a in self.source.audio:
                self._audio[a.index] = self.container.add_stream_from_template(a)
        except (av.FFmpegError, ValueError, OSError) as e:
            raise VideoError(f"cannot write {self.codec} video to {self.path}: {_ffmpeg_error(e)}") from None

    def write(self, pixels: np.ndarray, like: Any) -> None:
        """Encode (H, W, 3) uint8 `pixels` as the picture of input frame `like` (its pts, time
        base and duration)."""
        av = self._av
        if self.container is None:
            self._open(like, pixels.shape[1], pixels.shape[0])
            for packet in self._waiting:
                self._mux_audio(packet)
            self._waiting = []
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24").reformat(
            format=self.stream.pix_fmt,
            dst_colorspace=like.colorspace if like.colorspace != UNSPECIFIED_COLORSPACE else None,
            dst_color_range=like.color_range if like.color_range != UNSPECIFIED_RANGE else None,
        )
        frame.colorspace, frame.color_range = like.colorspace, like.color_range
        frame.time_base, frame.duration = like.time_base, like.duration
        frame.pts = like.pts if like.pts is not None else self._guess_pts(like)
        try:
            self.container.mux(self.stream.encode(frame))
        except (av.FFmpegError, ValueError) as e:
            raise VideoError(f"cannot encode frame {self.frames}: {_ffmpeg_error(e)}") from None
        self.frames += 1

    def _guess_pts(self, like: Any) -> int:
        """A timestamp for a frame the container gave none (some AVI): its index at the frame rate."""
        rate = self.source.video.average_rate or self.source.video.guessed_rate or Fraction(25)
        return round(self.frames / (rate * like.time_base))

    def audio(self, packet: Any) -> None:
        """Copy one audio packet of the source (queued until the first frame opens the file)."""
        if self.container is None:
            self._waiting.append(packet)
        else:
            self._mux_audio(packet)

    def _mux_audio(self, packet: Any) -> None:
        av = self._av
        packet.stream = self._audio[packet.stream.index]
        try:
            self.container.mux(packet)  # rebased from the input's time base to the output's
        except (av.FFmpegError, ValueError) as e:
            raise VideoError(
                f"cannot copy the audio into {self.path}: {_ffmpeg_error(e)} (try an .mkv output)"
            ) from None

    def close(self) -> None:
        """Flush the encoder and finish the file."""
        av = self._av
        if self.container is None:
            raise VideoError("the video has no frames to write")
        try:
            self.container.mux(self.stream.encode(None))
            self.container.close()
        except (av.FFmpegError, ValueError) as e:
            raise VideoError(f"cannot finish {self.path}: {_ffmpeg_error(e)}") from None

    def abort(self) -> None:
        if self.container is not None:
            with contextlib.suppress(Exception):  # already failing: the first error is the one to report
                self.container.close()
