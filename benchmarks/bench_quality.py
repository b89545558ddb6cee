"""Quality: how good stylekit's networks are, against two baselines, as paste-ready markdown.

Feed-forward vs Gatys (the paper's Fig. 5 claim: a trained network's output reaches
the objective that Gatys et al.'s optimisation reaches after about 50-100 L-BFGS iterations).
For a trained model and held-out photos (not in any training data) at --size px (longest
side), the same loss the model was trained with (its metadata: loss network, weights, style
image and size) is evaluated on the model's output, and on the image Gatys' L-BFGS
(stylekit.nn.gatys, started from the photo) reaches after each of --iterations (one run to
the largest; the others are read off its trace). Prints one table (photo, method, content,
style, tv, total, seconds), then, per photo and overall, where along Gatys' trace the
feed-forward total lies (the iteration count at which Gatys reaches it, interpolated from the
full trace). Side-by-side images (photo | feed-forward | Gatys ~100 | Gatys last) go to --out.

    python benchmarks/bench_quality.py --model starry_night
    python benchmarks/bench_quality.py --quick --model m.safetensors   # smoke test

Parity of stylekit's training with the reference loop is bench_parity.py's. Needs torch,
torchvision, numpy, pillow, safetensors and pyarrow (stylekit.nn.modelio).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import common
import numpy as np
import torch
from PIL import Image, ImageDraw

from stylekit.files import images
from stylekit.nn.gatys import GatysConfig, GatysResult, optimize_image
from stylekit.nn.loss import PerceptualLoss
from stylekit.nn.vgg import DEFAULT_LOSS_WEIGHTS, VGGFeatures, load_vgg

REPO = common.REPO
DEFAULT_PHOTOS = REPO.parent / "shared" / "data" / "content"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "quality"
STYLES = REPO / "stylekit" / "examples" / "styles"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")


def fmt(x: float) -> str:
    return f"{x:.4g}"


def terms_text(terms: dict[str, float]) -> list[str]:
    """The content, style, tv and total columns."""
    return [fmt(terms[k]) for k in ("content", "style", "tv", "loss")]


def load_photos(spec: str, size: int, limit: int | None) -> list[tuple[str, np.ndarray]]:
    """(name, (H, W, 3) uint8 with longest side `size`) for a folder's photos or a comma list."""
    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    else:
        files = [Path(p.strip()) for p in spec.split(",") if p.strip()]
    if not files:
        raise SystemExit(f"no photos found in {spec}")
    files = files[:limit] if limit else files
    return [(f.stem, images.resize_longest(images.load_image(str(f)), size)) for f in files]


def load_style(path: str, size: int | None) -> torch.Tensor:
    """(1, 3, H, W) float 0-255, longest side `size` (None: as it is)."""
    pixels = images.load_image(path)
    if size:
        pixels = images.resize_longest(pixels, size)
    return images.to_tensor(pixels)


def shown_path(path: Path) -> str:
    """Relative to the working directory when below it, else absolute."""
    path = path.resolve()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def iterations_text(n: float) -> str:
    return f"{n:.0f}" if n >= 10 else f"{n:.1f}"


# --- feed-forward vs Gatys -------------------------------------------------------------


def vgg_from_source(source: str) -> VGGFeatures:
    """The loss network a model's `vgg_weights` metadata describes (or a --vgg-weights value)."""
    if source in ("caffe", "imagenet"):
        return load_vgg(source)
    if source == "random" or source.startswith("random:"):
        seed = int(source.partition(":")[2] or 0)
        return load_vgg("random", seed)
    if source.startswith("file:"):
        raise SystemExit(
            f"the model's loss network was a local file ({source!r}): its path is not recorded; "
            "pass it with --vgg-weights caffe:PATH or torchvision:PATH"
        )
    return load_vgg(source)  # a path, caffe:PATH or torchvision:PATH


@dataclass
class ModelLoss:
    """The objective a model was trained with, rebuilt from its metadata."""

    loss_fn: PerceptualLoss
    description: str


def model_loss(meta: dict[str, str], args: argparse.Namespace, device: torch.device) -> ModelLoss:
    source = args.vgg_weights or meta.get("vgg_weights") or "caffe"
    vgg = vgg_from_source(source)
    defaults = DEFAULT_LOSS_WEIGHTS[vgg.convention.name]  # weights follow the input convention
    keys = {"content_weight": defaults.content, "style_weight": defaults.style, "tv_weight": defaults.tv}
    weights = [float(meta[key]) if meta.get(key) else default for key, default in keys.items()]
    style = args.style or meta.get("style", "")
    if not style or not Path(style).is_file():
        name = meta.get("style_name") or Path(style).stem
        fallback = STYLES / f"{name}.jpg"
        if not fallback.is_file():
            raise SystemExit(f"the model's style image {style!r} is not here, nor {fallback}; pass --style")
        style = str(fallback)
    size_text = meta.get("style_size", "")
    style_size = int(size_text) if size_text.isdigit() else None
    style_t = load_style(style, style_size)
    loss_fn = PerceptualLoss(vgg.to(device), style_t.to(device), *weights).to(device)
    desc = (
        f"loss network {vgg.source}; weights content {weights[0]:g}, style {weights[1]:g}, tv {weights[2]:g}; "
        f"style {os.path.relpath(style, REPO) if style.startswith(str(REPO)) else style} "
        f"at {style_t.shape[3]}x{style_t.shape[2]}"
    )
    return ModelLoss(loss_fn, desc)


def terms_of(loss_fn: PerceptualLoss, output: torch.Tensor, content: torch.Tensor) -> dict[str, float]:
    with torch.no_grad():
        return loss_fn(output, content).as_floats()


def gatys_curve(result: GatysResult) -> list[float]:
    """Total loss of the image after n iterations, n = 0 (the photo itself) .. N. The trace's
    record i holds the loss at the image iteration i started from, i.e. after i-1 iterations."""
    return [r.total for r in result.trace] + [result.final.total]


def after(result: GatysResult, n: int) -> tuple[dict[str, float], float]:
    """(loss terms of the image after n iterations, seconds those n iterations took)."""
    r = result.trace[n] if n < len(result.trace) else result.final
    done = result.trace[n - 1]
    seconds = getattr(done, "elapsed", None)
    if seconds is None:
        seconds = done.seconds
    return {"content": r.content, "style": r.style, "tv": r.tv, "loss": r.total}, float(seconds)


def crossing(curve: Sequence[float], target: float) -> float | None:
    """The (interpolated) iteration count at which the curve first reaches `target`; None if never."""
    for n, value in enumerate(curve):
        if value <= target:
            if n == 0:
                return 0.0
            prev = curve[n - 1]
            return n - 1 + (prev - target) / (prev - value) if prev > value else float(n)
    return None


def bracket(n: float, checkpoints: Sequence[int]) -> str:
    """'between Gatys 50 and 100 iterations' for n = 73."""
    lower = max([c for c in checkpoints if c <= n], default=0)
    upper = min([c for c in checkpoints if c >= n], default=None)
    if upper is None:
        return f"beyond Gatys {checkpoints[-1]} iterations"
    if lower == upper:
        return f"at Gatys {lower} iterations"
    low = "the photo itself (0)" if lower == 0 else f"Gatys {lower}"
    return f"between {low} and Gatys {upper} iterations"


def labelled(pixels: np.ndarray, label: str, strip: int = 14) -> Image.Image:
    img = Image.fromarray(pixels)
    text_width = math.ceil(ImageDraw.Draw(img.copy()).textlength(label)) + 6
    out = Image.new("RGB", (max(img.width, text_width), img.height + strip), "white")
    out.paste(img, (0, 0))
    ImageDraw.Draw(out).text((3, img.height + 1), label, fill="black")
    return out


def side_by_side(panels: Sequence[tuple[str, np.ndarray]], path: Path) -> None:
    tiles = [labelled(p, name) for name, p in panels]
    gap = 4
    sheet = Image.new("RGB", (sum(t.width for t in tiles) + gap * (len(tiles) - 1), tiles[0].height), "white")
    x = 0
    for t in tiles:
        sheet.paste(t, (x, 0))
        x += t.width + gap
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def feed_forward_vs_gatys(args: argparse.Namespace, device: torch.device) -> None:
    from stylekit.infer.inference import InferenceOptions, Stylizer
    from stylekit.nn.modelio import load_model

    loaded = load_model(args.model)
    meta = loaded.metadata
    ml = model_loss(meta, args, device)
    checkpoints = sorted(set(args.iterations))
    mid = 100 if 100 in checkpoints[:-1] else (checkpoints[-2] if len(checkpoints) > 1 else checkpoints[-1])
    photos = load_photos(args.photos, args.size, args.max_photos)
    stylizer = Stylizer(loaded.model, InferenceOptions(device=str(device)))

    print(common.header(f"Quality: feed-forward vs Gatys (L-BFGS), longest side {args.size} px", device))
    keys = ("steps", "image_size", "batch_size", "num_workers", "training_data")
    trained = ", ".join(f"{k} {meta[k]}" for k in keys if k in meta)
    print(f"- model: `{args.model}` (sha256 {loaded.digest}){'; trained: ' + trained if trained else ''}")
    print(f"- objective: {ml.description}")
    print(
        f"- photos: {len(photos)} from {args.photos} (held out: not training data), longest side {args.size}; "
        f"feed-forward: stylekit Stylizer ({stylizer.plan.describe()}), uint8 output, median of "
        f"{args.repeat} timed runs after one warm-up; Gatys: L-BFGS from the photo, pixels kept in [0, 255], "
        f"one run of {checkpoints[-1]} iterations, seconds from its start"
    )
    print()

    rows: list[list[object]] = []
    summaries: list[str] = []
    crossings: dict[str, float | None] = {}
    args.out.mkdir(parents=True, exist_ok=True)
    for name, pixels in photos:
        content = images.to_tensor(pixels).to(device)
        # Feed-forward: warm up, then time whole stylize() calls (upload, forward, download).
        out = stylizer.stylize([pixels])[0]
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            out = stylizer.stylize([pixels])[0]
            times.append(time.perf_counter() - t0)
        ff = terms_of(ml.loss_fn, images.to_tensor(out).to(device), content)
        ff_seconds = statistics.median(times)
        h, w = pixels.shape[:2]
        rows.append([f"{name} ({w}x{h})", "feed-forward", *terms_text(ff), f"{ff_seconds:.3g}"])

        # Gatys: one run to the last checkpoint; snapshot the image at each checkpoint as the
        # loss function sees it (its first call after iteration n is at the image after n).
        snaps: dict[int, torch.Tensor] = {}
        done = [0]

        def watched(y: torch.Tensor, c: torch.Tensor, done: list[int] = done, snaps: dict = snaps) -> object:
            if done[0] in checkpoints and done[0] not in snaps:
                snaps[done[0]] = y.detach().clone()
            return ml.loss_fn(y, c)

        def on_iteration(record: object, done: list[int] = done) -> None:
            done[0] = record.iteration  # type: ignore[attr-defined]

        config = GatysConfig(iterations=checkpoints[-1], optimizer="lbfgs", init="content")
        common.sync(device)
        result = optimize_image(content, watched, config, on_iteration=on_iteration)  # type: ignore[arg-type]
        for n in checkpoints:
            terms, seconds = after(result, n)
            rows.append(["", f"Gatys {n}", *terms_text(terms), f"{seconds:.3g}"])

        curve = gatys_curve(result)
        n = crossing(curve, ff["loss"])
        crossings[name] = n
        if n is None:
            summaries.append(
                f"- {name}: feed-forward total {fmt(ff['loss'])} is lower than any Gatys reaches in "
                f"{checkpoints[-1]} iterations (its lowest: {fmt(min(curve))})"
            )
        elif n == 0:
            summaries.append(
                f"- {name}: feed-forward total {fmt(ff['loss'])} is no lower than the photo's own "
                f"({fmt(curve[0])}): Gatys beats it at 0 iterations"
            )
        else:
            gatys_seconds = after(result, max(1, math.ceil(n)))[1]
            summaries.append(
                f"- {name}: feed-forward total {fmt(ff['loss'])} lies {bracket(n, checkpoints)} "
                f"(Gatys reaches it after ~{iterations_text(n)} iterations, {gatys_seconds:.3g} s; "
                f"feed-forward {ff_seconds:.3g} s)"
            )

        def to_px(t: torch.Tensor) -> np.ndarray:
            return images.to_pixels(t[0].round())

        panels = [
            ("photo", pixels),
            ("feed-forward", out),
            (f"Gatys {mid}", to_px(snaps.get(mid, result.image))),
        ]
        panels.append((f"Gatys {checkpoints[-1]}", to_px(result.image)))
        side_by_side(panels, args.out / f"{name}.png")

    print(common.table(["photo", "method", "content", "style", "tv", "total", "seconds"], rows))
    paper = "The paper (Johnson et al. 2016, Fig. 5): a feed-forward network's output reaches the objective "
    print(f"\n{paper}Gatys' optimisation reaches after about 50-100 L-BFGS iterations.\n")
    print("\n".join(summaries))
    # Never reached counts as beyond the last iteration: the median then stays honest.
    values = sorted(math.inf if v is None else v for v in crossings.values())
    med = statistics.median(values)
    finite = [v for v in values if math.isfinite(v)]
    missing = len(values) - len(finite)
    spread = (
        f"range {iterations_text(finite[0])}-{iterations_text(finite[-1])}" if finite else "never reached"
    )
    if missing and finite:
        spread += f"; not reached in {checkpoints[-1]} iterations on {missing} photo(s)"
    where = bracket(med, checkpoints) if math.isfinite(med) else f"beyond Gatys {checkpoints[-1]} iterations"
    med_text = f"~{iterations_text(med)} iterations" if math.isfinite(med) else "not reached"
    print(
        f"- overall ({len(values)} photo(s)): feed-forward total lies {where} (median crossing {med_text}; {spread})"
    )
    shown = ", ".join(shown_path(args.out / f"{name}.png") for name, _ in photos)
    print(f"\nSide by side (photo | feed-forward | Gatys {mid} | Gatys {checkpoints[-1]}): {shown}")
    print(flush=True)


# --- main ---------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="starry_night", help="shipped model name or .safetensors path")
    p.add_argument(
        "--photos", default=str(DEFAULT_PHOTOS), help="held-out photos: a folder or comma list of files"
    )
    p.add_argument("--max-photos", type=int, default=None, help="use only the first N photos")
    p.add_argument("--size", type=int, default=256, help="longest side of the photos")
    gatys = "Gatys checkpoints (comma list)"
    p.add_argument("--iterations", type=common.parse_ints, default=[50, 100, 300, 500], help=gatys)
    p.add_argument("--repeat", type=int, default=3, help="timed feed-forward runs per photo (median)")
    p.add_argument("--style", default=None, help="style image, instead of the model's metadata")
    vgg = "loss network instead of the model's metadata (caffe, imagenet, random:N, a file)"
    p.add_argument("--vgg-weights", default=None, help=vgg)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the side-by-side PNGs")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument(
        "--quick", action="store_true", help="smoke test: 48 px, one photo, Gatys 2 and 5 iterations"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.max_photos, args.iterations, args.repeat = 48, 1, [2, 5], 1
    if min(args.iterations) < 1:
        p.error("--iterations must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    device = common.pick_device(args.device)
    feed_forward_vs_gatys(args, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
