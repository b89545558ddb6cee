"""Quality: how good stylekit's networks are, against two baselines, as paste-ready markdown.

Part 1, feed-forward vs Gatys (the paper's Fig. 5 claim: a trained network's output reaches
the objective that Gatys et al.'s optimisation reaches after about 50-100 L-BFGS iterations).
For a trained model and held-out photos (not in any training data) at --size px (longest
side), the same loss the model was trained with (its metadata: loss network, weights, style
image and size) is evaluated on the model's output, and on the image Gatys' L-BFGS
(stylekit.nn.gatys, started from the photo) reaches after each of --iterations (one run to
the largest; the others are read off its trace). Prints one table (photo, method, content,
style, tv, total, seconds), then, per photo and overall, where along Gatys' trace the
feed-forward total lies (the iteration count at which Gatys reaches it, interpolated from the
full trace). Side-by-side images (photo | feed-forward | Gatys ~100 | Gatys last) go to --out.

Part 2, --parity: the same network, loss network (Caffe VGG-16), loss weights, data, seed,
image size and number of steps, trained three ways:
  reference  the pytorch/examples plain loop, written here: seeded TransformerNet init (as
             stylekit's), Adam lr 1e-3, DataLoader over --data (Resize + CenterCrop, x255,
             shuffled with a seeded generator), batch 4, fp32, the example's loss code
             (separate VGG passes for y and x, its gram_matrix, F.mse_loss) plus the TV term
  ray 1x4    stylekit's Ray Train job (stylekit.train.ray_job.run_training), 1 worker x batch 4
  ray 2x2    the same, 2 workers x batch 2 (the same global batch)
Prints the loss curves (total loss, mean over each window of --log-every steps, per run; the
Ray runs' per-step losses are read from their TensorBoard event files; 2x2's are rank 0's
two images) and the fairest comparison: each final model's objective on the same fixed
evaluation set (the --photos at --size, fp32, raw network output) and its difference from the
reference in percent (target: within 5%).

    python benchmarks/bench_quality.py --model starry_night                  # Part 1
    python benchmarks/bench_quality.py --model starry_night --parity         # Parts 1 and 2
    python benchmarks/bench_quality.py --parity-only --steps 300 --image-size 128
    python benchmarks/bench_quality.py --parity-only --parity-photos 4   # identical batches
    python benchmarks/bench_quality.py --quick --model m.safetensors --parity   # smoke test

Part 2 needs Ray (it starts a local Ray unless RAY_ADDRESS names a cluster); Part 1 only
torch, torchvision, numpy, pillow, safetensors and pyarrow (stylekit.nn.modelio).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import common
import numpy as np
import reference
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from stylekit.files import images
from stylekit.nn.gatys import GatysConfig, GatysResult, optimize_image
from stylekit.nn.loss import PerceptualLoss
from stylekit.nn.model import TransformerNet
from stylekit.nn.vgg import DEFAULT_LOSS_WEIGHTS, LossWeights, VGGFeatures, default_loss_weights, load_vgg

REPO = common.REPO
DEFAULT_PHOTOS = REPO.parent / "shared" / "data" / "content"
DEFAULT_DATA = REPO.parent / "shared" / "data" / "train-mini"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "quality"
STYLES = REPO / "stylekit" / "examples" / "styles"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
PARITY_TARGET = 5.0  # percent


def fmt(x: float) -> str:
    return f"{x:.4g}"


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


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- Part 1: feed-forward vs Gatys -------------------------------------------------------------


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
    weights = []
    for key, default in (
        ("content_weight", defaults.content),
        ("style_weight", defaults.style),
        ("tv_weight", defaults.tv),
    ):
        weights.append(float(meta[key]) if meta.get(key) else default)
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


def part1(args: argparse.Namespace, device: torch.device) -> None:
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
    trained = ", ".join(
        f"{k} {meta[k]}"
        for k in ("steps", "image_size", "batch_size", "num_workers", "training_data")
        if k in meta
    )
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
        rows.append(
            [
                f"{name} ({w}x{h})",
                "feed-forward",
                *(fmt(ff[k]) for k in ("content", "style", "tv", "loss")),
                f"{ff_seconds:.3g}",
            ]
        )

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
        sync(device)
        result = optimize_image(content, watched, config, on_iteration=on_iteration)  # type: ignore[arg-type]
        for n in checkpoints:
            terms, seconds = after(result, n)
            rows.append(
                [
                    "",
                    f"Gatys {n}",
                    *(fmt(terms[k]) for k in ("content", "style", "tv", "loss")),
                    f"{seconds:.3g}",
                ]
            )

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
    print()
    print(
        "The paper (Johnson et al. 2016, Fig. 5): a feed-forward network's output reaches the objective "
        "Gatys' optimisation reaches after about 50-100 L-BFGS iterations."
    )
    print()
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
        f"- overall ({len(values)} photo(s)): feed-forward total lies {where} "
        f"(median crossing {med_text}; {spread})"
    )
    print()
    shown = ", ".join(shown_path(args.out / f"{name}.png") for name, _ in photos)
    print(f"Side by side (photo | feed-forward | Gatys {mid} | Gatys {checkpoints[-1]}): {shown}")
    print(flush=True)


# --- Part 2: parity with the reference training loop -----------------------------------------


class FolderImages(torch.utils.data.Dataset):
    """Every image under a folder, as the example's transforms give it: (3, S, S) float 0-255."""

    def __init__(self, root: str, size: int):
        from torchvision import transforms

        self.files = sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not self.files:
            raise SystemExit(f"no training images under {root}")
        self.transform = transforms.Compose(
            [
                transforms.Resize(size),
                transforms.CenterCrop(size),
                transforms.ToTensor(),
                transforms.Lambda(lambda x: x.mul(255)),
            ]
        )

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(Image.open(self.files[i]).convert("RGB"))


@dataclass
class Run:
    name: str
    model: TransformerNet
    losses: list[float]  # total loss per step, 1-based step i at index i-1 (nan where missing)
    seconds: float
    note: str = ""


def reference_step(
    transformer: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    vgg: VGGFeatures,
    gram_style: Sequence[torch.Tensor],
    x: torch.Tensor,
    w: LossWeights,
) -> float:
    """One step of the example's train() loop on a (B, 3, S, S) 0-255 batch (its loss code,
    plus the TV term); returns the total loss."""
    n_batch = len(x)
    optimizer.zero_grad()
    y = transformer(x)
    features_y = vgg(y)
    features_x = vgg(x)
    content_loss = w.content * F.mse_loss(features_y[1], features_x[1])
    style_loss = 0.0
    for ft_y, gm_s in zip(features_y, gram_style, strict=True):
        gm_y = reference.gram_matrix(ft_y)
        style_loss += F.mse_loss(gm_y, gm_s[:n_batch, :, :])
    style_loss *= w.style
    tv_loss = w.tv * (
        (y[:, :, 1:, :] - y[:, :, :-1, :]).pow(2).mean() + (y[:, :, :, 1:] - y[:, :, :, :-1]).pow(2).mean()
    )
    total_loss = content_loss + style_loss + tv_loss
    total_loss.backward()
    optimizer.step()
    return total_loss.item()


def reference_training(args: argparse.Namespace, device: torch.device, style: torch.Tensor) -> Run:
    """The example's train() loop, on stylekit's Caffe VGG-16 (which takes RGB 0-255 itself,
    so the example's normalize_batch is not applied)."""
    w = default_loss_weights("caffe")
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    init = TransformerNet()  # the same draws as stylekit.train.state.new_state
    transformer = reference.reference_net(init, device).train()
    optimizer = torch.optim.Adam(transformer.parameters(), args.lr)
    vgg = load_vgg("caffe").to(device)
    batch = 4
    style = style.to(device).repeat(batch, 1, 1, 1)
    features_style = vgg(style)
    gram_style = [reference.gram_matrix(y) for y in features_style]
    data = FolderImages(args.data, args.image_size)
    loader = torch.utils.data.DataLoader(
        data, batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(args.seed)
    )
    losses: list[float] = []
    sync(device)
    start = time.perf_counter()
    while len(losses) < args.steps:
        for x in loader:
            losses.append(reference_step(transformer, optimizer, vgg, gram_style, x.to(device), w))
            if len(losses) >= args.steps:
                break
    seconds = time.perf_counter() - start
    model = TransformerNet()
    model.load_state_dict(transformer.state_dict())
    return Run("reference (1 process x 4)", model.eval(), losses, seconds, "fp32, plain loop")


def read_event_scalars(folder: Path, tag: str) -> dict[int, float]:
    """step -> value of a scalar tag from every TensorBoard event file in `folder` (TFRecord
    framing: u64 length, u32 crc, payload, u32 crc; payloads are Event protos)."""
    from tensorboardX.proto import event_pb2

    values: dict[int, float] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos + 12 <= len(data):
            (length,) = struct.unpack_from("<Q", data, pos)
            payload = data[pos + 12 : pos + 12 + length]
            pos += 12 + length + 4
            if len(payload) < length:
                break  # a file still being written
            event = event_pb2.Event()
            event.ParseFromString(payload)
            for v in event.summary.value:
                if v.tag == tag:
                    values[event.step] = (
                        v.simple_value if v.HasField("simple_value") else v.tensor.float_val[0]
                    )
    return values


def stylekit_training(
    args: argparse.Namespace, workers: int, batch: int, use_gpu: bool | None, output: str, note: str
) -> Run:
    from stylekit.nn.modelio import load_model
    from stylekit.train.config import TrainConfig
    from stylekit.train.ray_job import run_training

    name = f"w{workers}b{batch}"
    config = TrainConfig(
        style=args.parity_style,
        data=args.data,
        output=output,
        name=name,
        vgg_weights="caffe",
        image_size=args.image_size,
        batch_size=batch,
        num_workers=workers,
        max_steps=args.steps,
        log_every=1,  # every step's loss, for the curve
        checkpoint_every=args.steps,
        seed=args.seed,
        lr=args.lr,
        style_size=args.style_size,
        precision=args.precision,
        use_gpu=use_gpu,
    )
    start = time.perf_counter()
    path = run_training(config)
    seconds = time.perf_counter() - start
    scalars = read_event_scalars(Path(output) / name / "tensorboard", "loss/total")
    losses = [scalars.get(s, float("nan")) for s in range(1, args.steps + 1)]
    return Run(f"Ray Train {workers} x {batch}", load_model(path).model.eval(), losses, seconds, note)


def window_mean(losses: Sequence[float], end: int, width: int) -> float:
    vals = [v for v in losses[max(0, end - width) : end] if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else float("nan")


def pct(value: float, ref: float) -> str:
    if math.isnan(value) or math.isnan(ref) or ref == 0:
        return "-"
    return f"{100 * (value - ref) / ref:+.1f}%"


def evaluate(
    model: TransformerNet, loss_fn: PerceptualLoss, photos: Sequence[np.ndarray], device: torch.device
) -> dict[str, float]:
    """Mean loss terms of the raw fp32 network output over the photos (each at its own size)."""
    model = model.to(device).eval()
    sums = {"content": 0.0, "style": 0.0, "tv": 0.0, "loss": 0.0}
    with torch.no_grad():
        for pixels in photos:
            x = images.to_tensor(pixels).to(device)
            for k, v in loss_fn(model(x), x).as_floats().items():
                sums[k] += v
    return {k: v / len(photos) for k, v in sums.items()}


def subset_folder(data: str, count: int, folder: Path) -> str:
    """A folder of copies of the first `count` training images of `data` (sorted by path)."""
    files = sorted(p for p in Path(data).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)[:count]
    if len(files) < count:
        raise SystemExit(f"--parity-photos {count}: only {len(files)} images under {data}")
    folder.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(files):
        shutil.copyfile(path, folder / f"{i:04d}_{path.name}")
    return str(folder)


def part2(args: argparse.Namespace, device: torch.device) -> None:
    """Part 2 on --data, or on a folder of its first --parity-photos images (the caller's
    arguments are left as they are)."""
    with tempfile.TemporaryDirectory(prefix="bench-quality-data-") as tmp:
        if args.parity_photos:
            shown = f"images (the first {args.parity_photos} under {args.data})"
            data = subset_folder(args.data, args.parity_photos, Path(tmp) / "data")
        else:
            shown, data = f"images under {args.data}", args.data
        part2_runs(argparse.Namespace(**{**vars(args), "data": data, "data_shown": shown}), device)


def part2_runs(args: argparse.Namespace, device: torch.device) -> None:
    import ray

    from stylekit.logs import setup_logging
    from stylekit.ray_env import init_ray, shutdown_ray

    if args.verbose:
        setup_logging()
    style = load_style(args.parity_style, args.style_size)
    w = default_loss_weights("caffe")
    n_images = len(FolderImages(args.data, args.image_size))
    print(
        common.header(
            f"Parity with the reference training loop, {args.image_size} px, {args.steps} steps", device
        )
    )
    print(
        f"- data: {n_images} {args.data_shown}; style {args.parity_style} at "
        f"{style.shape[3]}x{style.shape[2]}; loss network Caffe VGG-16; weights content {w.content:g}, "
        f"style {w.style:g}, tv {w.tv:g}; Adam lr {args.lr:g}; seed {args.seed}; global batch 4"
    )
    same_batches = n_images == 4
    print(
        f"- stylekit runs: precision {args.precision} (auto: bf16 autocast on CUDA, fp32 on CPU); "
        "reference: fp32. Crops are the same pixels (stylekit's resize_crop is torchvision's "
        "Resize + CenterCrop, tests/test_images.py). "
        + (
            "The data is exactly one global batch, so every step of every run trains on the same "
            "4 images (their order within the batch does not change a mean loss): the runs differ "
            "only in their computation."
            if same_batches
            else "Data order differs (Ray Data's file shuffle vs a seeded DataLoader), so per-step "
            "losses are on different batches: compare the curves' trend and the final evaluation."
        )
    )
    print(flush=True)

    gpu = device.type == "cuda"
    runs = [reference_training(args, device, style)]
    if not ray.is_initialized():
        ray.init(logging_level=logging.WARNING, log_to_driver=args.verbose)
    init_ray()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-quality-") as output:
            for workers, batch in ((1, 4), (2, 2)):
                if not gpu:
                    use_gpu, note = False, "CPU workers"
                elif torch.cuda.device_count() >= workers:
                    use_gpu, note = True, f"{workers} GPU worker(s)"
                else:
                    use_gpu, note = (
                        False,
                        f"CPU workers: {torch.cuda.device_count()} GPU(s) < {workers} workers",
                    )
                runs.append(stylekit_training(args, workers, batch, use_gpu, output, note))
    finally:
        shutdown_ray()

    # Loss curves: the mean of each window of log_every steps.
    k = args.log_every
    ends = sorted({*range(k, args.steps + 1, k), args.steps})
    ref = runs[0].losses
    rows = []
    for end in ends:
        r = window_mean(ref, end, k)
        row: list[object] = [f"{max(1, end - k + 1)}-{end}", fmt(r)]
        for run in runs[1:]:
            v = window_mean(run.losses, end, k)
            row += [fmt(v), pct(v, r)]
        rows.append(row)
    headers = ["steps", runs[0].name]
    for run in runs[1:]:
        headers += [run.name, "vs ref"]
    print(f"Training loss (total, mean over each window of {k} steps; {runs[2].name}: rank 0's images only)")
    print()
    print(common.table(headers, rows))
    print()

    # The final models on one fixed evaluation set, under one loss.
    photos = [p for _, p in load_photos(args.photos, args.size, args.max_photos)]
    loss_fn = PerceptualLoss(load_vgg("caffe").to(device), style.to(device), w.content, w.style, w.tv).to(
        device
    )
    evals = [evaluate(run.model, loss_fn, photos, device) for run in runs]
    ref_total = evals[0]["loss"]
    rows = []
    for run, e in zip(runs, evals, strict=True):
        diff = 100 * (e["loss"] - ref_total) / ref_total
        verdict = "-" if run is runs[0] else ("yes" if abs(diff) <= PARITY_TARGET else "NO")
        rows.append(
            [
                run.name,
                run.note,
                f"{run.seconds:.0f}",
                *(fmt(e[key]) for key in ("content", "style", "tv", "loss")),
                "-" if run is runs[0] else f"{diff:+.2f}%",
                verdict,
            ]
        )
    print(
        f"Final models on the evaluation set: {len(photos)} photo(s) from {args.photos} at longest side "
        f"{args.size}, mean loss terms of the fp32 network output"
    )
    print()
    print(
        common.table(
            [
                "run",
                "where",
                "train s (wall; Ray: incl. start-up)",
                "content",
                "style",
                "tv",
                "total",
                "total vs ref",
                f"within {PARITY_TARGET:g}%",
            ],
            rows,
        )
    )
    print(flush=True)


# --- main ---------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="starry_night", help="shipped model name or .safetensors path (Part 1)")
    p.add_argument(
        "--photos", default=str(DEFAULT_PHOTOS), help="held-out photos: a folder or comma list of files"
    )
    p.add_argument("--max-photos", type=int, default=None, help="use only the first N photos")
    p.add_argument(
        "--size", type=int, default=256, help="longest side of the photos (both parts' evaluation)"
    )
    p.add_argument(
        "--iterations",
        type=common.parse_ints,
        default=[50, 100, 300, 500],
        help="Gatys checkpoints (comma list)",
    )
    p.add_argument("--repeat", type=int, default=3, help="timed feed-forward runs per photo (median)")
    p.add_argument("--style", default=None, help="Part 1: style image, instead of the model's metadata")
    p.add_argument(
        "--vgg-weights",
        default=None,
        help="Part 1: loss network instead of the model's metadata (caffe, imagenet, random:N, a file)",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the side-by-side PNGs")
    p.add_argument("--parity", action="store_true", help="also run Part 2 (three trainings; needs Ray)")
    p.add_argument("--parity-only", action="store_true", help="run Part 2 only")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="Part 2: training images folder")
    p.add_argument(
        "--parity-photos",
        type=int,
        default=None,
        help="Part 2: train on the first N images of --data only (4, one global batch: every run "
        "sees the same batch at every step)",
    )
    p.add_argument("--parity-style", default=str(STYLES / "starry_night.jpg"), help="Part 2: style image")
    p.add_argument("--style-size", type=int, default=256, help="Part 2: longest side of the style image")
    p.add_argument("--image-size", type=int, default=128, help="Part 2: training crop side")
    p.add_argument("--steps", type=int, default=300, help="Part 2: training steps per run")
    p.add_argument("--log-every", type=int, default=25, help="Part 2: loss curve window, in steps")
    p.add_argument("--seed", type=int, default=42, help="Part 2: seed (stylekit's default)")
    p.add_argument("--lr", type=float, default=1e-3, help="Part 2: Adam learning rate")
    p.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16"],
        help="Part 2: stylekit runs' precision",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--verbose", action="store_true", help="Part 2: show stylekit's and Ray workers' logs")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 48 px, one photo, Gatys 2 and 5 iterations, 3 training steps",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.max_photos, args.iterations, args.repeat = 48, 1, [2, 5], 1
        args.image_size, args.steps, args.log_every, args.style_size = 48, 3, 1, 64
    if min(args.iterations) < 1:
        p.error("--iterations must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    device = common.pick_device(args.device)
    if not args.parity_only:
        part1(args, device)
    if args.parity or args.parity_only:
        part2(args, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
