"""`python -m stylekit video`: stylize a video with its sound (stylekit/video/)."""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field

from stylekit.cli import add_config_arguments, config_from_args
from stylekit.errors import ConfigError
from stylekit.files import locations, storage
from stylekit.infer.inference import InferenceOptions, Stylizer
from stylekit.infer.options import RunOptions, StyleChoice, StyleControls
from stylekit.infer.selection import choose, per_style
from stylekit.nn import zoo
from stylekit.nn.modelio import load_model
from stylekit.redact import shown
from stylekit.video import deps
from stylekit.video.transcode import VideoOptions, stylize_video

log = logging.getLogger("stylekit.video")


@dataclass(frozen=True)
class VideoConfig:
    model: str = field(
        default="",
        metadata={"help": zoo.MODEL_HELP, "required": True},
    )
    output: str = field(
        default="",
        metadata={
            "help": "output video (path or s3:// URI); its extension picks the container (.mp4, .mkv, .mov)",
            "required": True,
        },
    )
    input: str = field(default="", metadata={"cli": False})
    codec: str = field(
        default="libx264", metadata={"help": "video encoder (FFmpeg's name): libx264, libx265, ..."}
    )
    crf: int = field(default=18, metadata={"help": "libx264/libx265 quality, 0-51, lower is better"})
    stabilize: float = field(
        default=0.0,
        metadata={
            "help": "temporal stabiliser, 0-1: blend each frame with the previous output carried along "
            "the optical flow where it is reliable; 0 stylizes frame by frame; 0.5-0.8 is the useful "
            "range (1 accumulates resampling artefacts)",
            "metavar": "S",
        },
    )
    flicker: bool = field(
        default=False,
        metadata={"help": "measure and print the output's flicker figure (warping error, 0-255 units)"},
    )
    style_choice: StyleChoice = field(default_factory=StyleChoice)  # --style
    # --strength, --preserve-color, --style-scale
    style_controls: StyleControls = field(default_factory=StyleControls)
    # --device, --precision, --batch-size, --compile
    run_options: RunOptions = field(default_factory=RunOptions)
    progress_every: float = field(default=10.0, metadata={"help": "seconds between progress lines"})
    storage_options: storage.StorageOptions = field(default_factory=storage.StorageOptions)

    def __post_init__(self) -> None:
        if not self.model:
            raise ConfigError("--model is required: a shipped model's name or a model file")
        if not self.output:
            raise ConfigError("--output is required: the video file to write, e.g. out.mp4")
        if not self.input:
            raise ConfigError("give the input video")
        reads = [
            locations.Place("INPUT", self.input),
            locations.Place("--model", zoo.resolve_shipped(self.model)),
        ]
        locations.refuse_overlaps(reads, [locations.Place("--output", self.output)])  # before any read
        self.video()  # validates, before any model is read

    def inference(self) -> InferenceOptions:
        return InferenceOptions.of(self.run_options, self.style_controls)

    def video(self) -> VideoOptions:
        return VideoOptions(
            codec=self.codec,
            crf=self.crf,
            stabilize=self.stabilize,
            batch_frames=self.run_options.batch_size,
            measure_flicker=self.flicker,
            progress_every=self.progress_every,
        )


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "video",
        help="stylize a video, keeping its sound",
        description=(
            "Stylize a video frame by frame (optionally stabilised), write it as H.264 (or --codec) "
            "with the input's audio copied untouched and its frame rate, timestamps, rotation and "
            "duration kept. Needs the video extra: pip install 'stylekit[video]'."
        ),
    )
    add_config_arguments(p, VideoConfig)
    p.add_argument("input", metavar="INPUT", help="video file (path or s3:// URI)")
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    deps.av(), deps.cv2()  # one line naming the extra, before the model is read
    config = config_from_args(VideoConfig, args, input=args.input)
    options = config.video()
    options.check_codec()
    storage_options = config.storage_options
    loaded = load_model(config.model, storage_options)
    chosen = choose(loaded, config.style_choice, config.model)
    for c in chosen:  # several selections: one video each, in a folder named after it
        output = per_style(config.output, c.label) if len(chosen) > 1 else config.output
        stylizer = Stylizer(c.model, config.inference())
        result = stylize_video(config.input, output, stylizer, options, storage_options)
        log.info(
            "%d frames (%dx%d, %.2f s of video) in %.1f s: %.2f frames/s",
            result.frames,
            result.width,
            result.height,
            result.duration,
            result.seconds,
            result.frames_per_s,
        )
        if result.flicker is not None:
            print(f"flicker (warping error, 0-255): {result.flicker:.3f}")
        print(shown(output))
    return 0
