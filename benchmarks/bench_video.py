"""Video, end to end: frames/s (decode, stylize, encode, audio copied) at 720p and 1080p, and the
flicker figure with and without the stabiliser, with a side-by-side picture.

    python benchmarks/bench_video.py                                   # defaults below
    python benchmarks/bench_video.py --sizes 1280x720 --seconds 1 --threads 2

The clip is made here (stylekit/video/synthetic.py): a camera panning over and zooming into a
real photo (shared/data/content), a red disc crossing the frame on its own path, and an AAC
tone, at 24 frames/s. A known motion: every frame change is motion, so the flicker figure
measures the stylization alone.

1. Throughput: `stylekit.video.transcode.stylize_video` (the CLI's path) on a clip of each size,
   model loaded beforehand; frames/s over the whole call (wall clock), the process CPU time it
   took (all threads: network, decoder, x264; on a machine shared with other jobs, frames per
   CPU second is the figure that does not depend on their load), and the wall share spent in
   the network.
2. Flicker: the clip at --flicker-size, stylized frame by frame once, then stabilised at each
   --strengths value (Stabilizer, as `--stabilize S` runs it); for each, the warping error
   (flicker.py: DIS "medium" flow on the input frames, reliable pixels only), how far the
   output moved from frame-by-frame (mean |difference|, all pixels), and the same over the
   disc's trail (pixels the disc covered in the previous frame and not in this one, where a
   ghost would show), and the fine detail kept (mean luma gradient against frame by frame:
   blending softens strokes). The input clip's own warping error is the floor flow leaves.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import common
import numpy as np
from PIL import Image, ImageDraw

from stylekit.infer.inference import InferenceOptions, Stylizer
from stylekit.nn.modelio import load_model
from stylekit.video import deps
from stylekit.video.flicker import FlickerMeter
from stylekit.video.flow import FlowEstimator, warp
from stylekit.video.stabilize import Stabilizer
from stylekit.video.synthetic import disc_mask, moving_scene, write_clip
from stylekit.video.transcode import VideoOptions, stylize_video

FPS = 24
PICTURE_STRENGTH = 0.8  # the stabiliser strength the picture shows (the closest one measured)


def source_photo(name: str) -> np.ndarray:
    for folder in common.PHOTO_DIRS:
        for path in sorted(folder.glob(name + ".*")):
            return np.asarray(Image.open(path).convert("RGB"))
    sys.exit(f"no photo named {name} in {', '.join(map(str, common.PHOTO_DIRS))}")


def throughput(stylizer: Stylizer, photo: np.ndarray, sizes: list[tuple[int, int]], seconds: float) -> str:
    rows = []
    network = [0.0]
    inner = stylizer.stylize

    def timed(images: list[np.ndarray]) -> list[np.ndarray]:
        t0 = time.perf_counter()
        out = inner(images)
        network[0] += time.perf_counter() - t0
        return out

    stylizer.stylize = timed  # type: ignore[method-assign]
    frames = max(2, round(seconds * FPS))
    with tempfile.TemporaryDirectory() as tmp:
        for w, h in sizes:
            src, dst = os.path.join(tmp, f"in{w}.mp4"), os.path.join(tmp, f"out{w}.mp4")
            write_clip(src, moving_scene(photo, w, h, frames), FPS)
            inner([photo[:h, :w]])  # warm-up at this size (NNPACK plans, allocator)
            network[0] = 0.0
            cpu = time.process_time()
            result = stylize_video(src, dst, stylizer, VideoOptions(progress_every=30))
            cpu = time.process_time() - cpu
            timing = [f"{result.duration:.2f}", f"{result.seconds:.1f}", f"{result.frames_per_s:.3f}"]
            cpus = [f"{cpu:.1f}", f"{result.frames / cpu:.3f}", f"{100 * network[0] / result.seconds:.0f}%"]
            rows.append([f"{w}x{h}", result.frames, *timing, *cpus, f"{os.path.getsize(dst) / 1e6:.2f}"])
            print(f"  {w}x{h}: {result.frames_per_s:.3f} frames/s", file=sys.stderr, flush=True)
    stylizer.stylize = inner  # type: ignore[method-assign]
    headers = ["size", "frames", "video s", "wall s", "frames/s (wall)", "CPU s (all threads)"]
    return common.table([*headers, "frames per CPU s", "wall in network", "output MB"], rows)


def flicker(
    stylizer: Stylizer,
    photo: np.ndarray,
    size: tuple[int, int],
    frames: int,
    strengths: list[float],
    picture: str,
) -> str:
    w, h = size
    photos = list(moving_scene(photo, w, h, frames))
    per_frame = stylizer.stylize(photos)
    trails = [np.zeros((h, w), bool)] + [
        disc_mask(i - 1, frames, w, h) & ~disc_mask(i, frames, w, h) for i in range(1, frames)
    ]
    rows, outputs = [], {}
    floor = FlickerMeter()
    for p in photos:
        floor.update(p, p)
    rows.append(["input clip (the floor)", f"{floor.value:.2f}", "", "", "", ""])
    for s in strengths:
        stab = Stabilizer(s)
        t0 = time.perf_counter()
        out = [stab(p, y) for p, y in zip(photos, per_frame, strict=True)]
        spent = f"{1000 * (time.perf_counter() - t0) / frames:.0f} ms"
        meter = FlickerMeter()
        for p, o in zip(photos, out, strict=True):
            meter.update(p, o)
        kept = f"{100 * sharpness(out) / sharpness(per_frame):.0f}%"
        pairs = list(zip(out, per_frame, trails, strict=True))
        moved = np.mean([np.abs(o.astype(np.float32) - y).mean() for o, y, _ in pairs])
        trail = np.mean([np.abs(o.astype(np.float32) - y)[m].mean() for o, y, m in pairs if m.any()])
        label = "frame by frame" if s == 0 else f"--stabilize {s:g}"
        rows.append([label, f"{meter.value:.2f}", f"{moved:.2f}", f"{trail:.2f}", kept, spent])
        outputs[s] = out
    shown = min(strengths, key=lambda s: abs(s - PICTURE_STRENGTH))
    save_picture(picture, photos, outputs, shown)
    headers = ["output", "flicker (warping error)", "moved from frame by frame", "on the disc's trail"]
    counted = f"{100 * floor.mean_coverage:.0f}%"
    table = common.table([*headers, "detail kept", "stabiliser per frame"], rows)
    return f"{table}\n\nPixels counted (reliable flow): {counted} of each frame on average."


def sharpness(frames: list[np.ndarray]) -> float:
    """Mean absolute horizontal gradient of the luma: how much fine detail (stroke texture) a
    sequence of (H, W, 3) uint8 frames holds."""
    cv2 = deps.cv2()
    luma = (cv2.cvtColor(f, cv2.COLOR_RGB2GRAY).astype(np.float32) for f in frames)
    return float(np.mean([np.abs(np.diff(y, axis=1)).mean() for y in luma]))


def save_picture(
    path: str, photos: list[np.ndarray], outputs: dict[float, list[np.ndarray]], strength: float
) -> None:
    """Top row: input, frame by frame, stabilised at `strength`, at the middle frame. Bottom row:
    the warping error |out_t - warp(out_t-1)| of each (x4, white = large; black where the flow
    is not reliable, as the figure counts), where flicker shows."""
    t = len(photos) // 2
    flow = FlowEstimator("medium").backward(photos[t - 1], photos[t])
    columns = [
        ("input", photos),
        ("frame by frame", outputs[0.0]),
        (f"--stabilize {strength:g}", outputs[strength]),
    ]
    h, w = photos[0].shape[:2]
    sheet = Image.new("RGB", (3 * w, 2 * h + 20), "white")
    draw = ImageDraw.Draw(sheet)
    for c, (label, seq) in enumerate(columns):
        sheet.paste(Image.fromarray(seq[t]), (c * w, 20))
        err = np.abs(seq[t].astype(np.float32) - warp(seq[t - 1], flow.field)).mean(-1) * 4
        err[flow.reliable < 0.5] = 0
        sheet.paste(Image.fromarray(np.clip(err, 0, 255).astype(np.uint8)).convert("RGB"), (c * w, 20 + h))
        draw.text((c * w + 4, 4), label, fill="black")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, quality=90)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="starry_night")
    stem = "a photo's stem in shared/data/content or the examples (public domain: the picture ships)"
    p.add_argument("--photo", default="rocket", help=stem)
    p.add_argument("--sizes", default="1280x720,1920x1080")
    p.add_argument("--seconds", type=float, default=1.0, help="clip length for the throughput runs")
    p.add_argument("--flicker-size", default="640x360")
    p.add_argument("--flicker-frames", type=int, default=48)
    p.add_argument("--strengths", default="0,0.5,0.8,1")
    p.add_argument("--picture", default=str(common.REPO / "docs" / "video_stabilizer.jpg"))
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (the machine is shared)")
    p.add_argument("--skip-throughput", action="store_true")
    args = p.parse_args()
    deps.av(), deps.cv2()
    device = common.pick_device(args.device)
    options = InferenceOptions(device=device.type, threads=args.threads if device.type == "cpu" else None)
    stylizer = Stylizer(load_model(args.model).model, options)
    if device.type == "cpu":
        deps.cv2().setNumThreads(args.threads)
    photo = source_photo(args.photo)
    av, cv2 = deps.av(), deps.cv2()
    print(common.header("Video: end to end and flicker", device))
    libs = f"PyAV {av.__version__} (FFmpeg {av.ffmpeg_version_info}), OpenCV {cv2.__version__}"
    print(f"- {libs}, libx264 CRF 18 preset medium")
    print(f"- model `{args.model}`; stylizer: {stylizer.plan.describe()}")
    print(f"- clip: `{args.photo}` panned 25% and zoomed 15%, a red disc crossing, AAC tone, {FPS} fps\n")
    if not args.skip_throughput:
        print(f"Frames/s end to end, {args.seconds:g} s clips (decode, stylize, encode, audio copy):\n")
        print(throughput(stylizer, photo, common.parse_sizes(args.sizes), args.seconds), flush=True)
        print()
    size = common.parse_sizes(args.flicker_size)[0]
    strengths = sorted({0.0, *(float(s) for s in args.strengths.split(","))})
    print(f"Flicker at {size[0]}x{size[1]}, {args.flicker_frames} frames (0-255 units; lower is steadier):\n")
    print(flicker(stylizer, photo, size, args.flicker_frames, strengths, args.picture))
    print(f"\npicture: {os.path.relpath(args.picture, common.REPO)}")


if __name__ == "__main__":
    main()
