"""Parity: stylekit's training against the reference example's plain loop, from the same seeded
network, with the same loss network (Caffe VGG-16), loss weights, data, seed, image size and
number of steps. The runs:

  reference            the example's loop (tests/reference.py's ReferenceTrainer, on Caffe
                       VGG-16, plus the TV term), Adam lr 1e-3, a DataLoader over --data
                       (Resize + CenterCrop, x255, rounded to whole levels as stylekit's uint8
                       crops are; shuffled with a seeded generator), batch 4, fp32
  reference, shuffled  the same loop with each batch's images in a new (seeded) order: the same
                       loss in exact arithmetic, summed in another order, so how far float
                       rounding alone moves a run
  stylekit step        stylekit.train.step.train_step with PerceptualLoss on the reference's own
                       batches, fp32: equal to the reference's step at every step, bit for bit?
  Ray Train 1 x 4      stylekit's Ray Train job (stylekit.train.ray_job.run_training), 1 worker x 4
  Ray Train 2 x 2      the same, 2 workers x batch 2 (the same global batch); not with --no-ray

Prints the loss curves (the mean total loss over each window of --log-every steps; the Ray
runs' per-step losses are read from their TensorBoard event files, 2x2's are rank 0's two
images), each final network's objective on held-out photos (--photos at --size, fp32, raw
network output) and its difference from the reference (target: within 5%), and whether
stylekit's step equals the reference's bit for bit.

    python benchmarks/bench_parity.py                              # the first 4 photos, 200 steps at 128 px
    python benchmarks/bench_parity.py --data-photos 0 --steps 300  # all of --data
    python benchmarks/bench_parity.py --no-ray --steps 5 --image-size 32 --log-every 1   # smoke

With --data-photos 4 the data is exactly one global batch: every run trains on the same 4
images at every step (their order within the batch does not change a mean loss), so the runs
differ only in their computation. The Ray runs need Ray (a local one, unless RAY_ADDRESS names
a cluster).
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
import shutil
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import bench_quality as bq
import common
import numpy as np
import reference
import torch
from PIL import Image

from stylekit.nn.loss import PerceptualLoss
from stylekit.nn.model import TransformerNet
from stylekit.nn.vgg import default_loss_weights, load_vgg
from stylekit.train.step import train_step

DEFAULT_DATA = common.REPO.parent / "shared" / "data" / "train-mini"
PARITY_TARGET = 5.0  # percent
BATCH = 4  # the global batch of every run


def image_files(root: str) -> list[Path]:
    return sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in bq.IMAGE_EXTENSIONS)


class FolderImages(torch.utils.data.Dataset):
    """Every image under a folder, as the example's transforms give it: (3, S, S) float 0-255."""

    def __init__(self, root: str, size: int):
        from torchvision import transforms as T

        self.files = image_files(root)
        if not self.files:
            raise SystemExit(f"no training images under {root}")
        self.transform = T.Compose(
            [T.Resize(size), T.CenterCrop(size), T.ToTensor(), T.Lambda(lambda x: x.mul(255))]
        )

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(Image.open(self.files[i]).convert("RGB"))


def subset_folder(data: str, count: int, folder: Path) -> str:
    """A folder of copies of the first `count` training images of `data` (sorted by path)."""
    files = image_files(data)[:count]
    if len(files) < count:
        raise SystemExit(f"--data-photos {count}: only {len(files)} images under {data}")
    folder.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(files):
        shutil.copyfile(path, folder / f"{i:04d}_{path.name}")
    return str(folder)


@dataclass
class Run:
    name: str
    model: TransformerNet
    losses: list[float]  # total loss per step, 1-based step i at index i-1 (nan where missing)
    seconds: float
    note: str = ""


def in_process_runs(
    args: argparse.Namespace, data: str, device: torch.device, style: torch.Tensor
) -> list[Run]:
    """The reference loop, the same with each batch shuffled, and stylekit's step, in lockstep
    on the same batches from one seeded DataLoader."""
    w = default_loss_weights("caffe")
    vgg = load_vgg("caffe").to(device)
    style = style.to(device)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    init = TransformerNet()  # the same draws as stylekit.train.state.new_state

    def trainer() -> reference.ReferenceTrainer:
        return reference.ReferenceTrainer(init, vgg, style, BATCH, w.content, w.style, args.lr,
                                          tv_weight=w.tv, normalize=False)  # fmt: skip

    ref, shuffled = trainer(), trainer()
    model = copy.deepcopy(init).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), args.lr)
    loss_fn = PerceptualLoss(load_vgg("caffe").to(device), style, w.content, w.style, w.tv).to(device)
    order = torch.Generator().manual_seed(args.seed)
    loader = torch.utils.data.DataLoader(
        FolderImages(data, args.image_size), batch_size=BATCH, shuffle=True,
        generator=torch.Generator().manual_seed(args.seed),
    )  # fmt: skip
    steps: dict[str, Callable[[torch.Tensor], float]] = {
        "reference": lambda x: ref.step(x).item(),
        "reference, shuffled each step": lambda x: shuffled.step(
            x[torch.randperm(len(x), generator=order)]
        ).item(),
        "stylekit train_step": lambda x: float(
            train_step(model, loss_fn, optimizer, x.permute(0, 2, 3, 1).to(torch.uint8)).total
        ),
    }
    losses: dict[str, list[float]] = {name: [] for name in steps}
    seconds = dict.fromkeys(steps, 0.0)
    while len(losses["reference"]) < args.steps:
        for x in loader:
            x = x.round().to(device)  # whole 0-255 levels: the pixels stylekit's uint8 crops hold
            for name, step in steps.items():
                t0 = time.perf_counter()
                losses[name].append(step(x))
                seconds[name] += time.perf_counter() - t0
            if len(losses["reference"]) >= args.steps:
                break
    nets = {"reference": ref.transformer, "reference, shuffled each step": shuffled.transformer,
            "stylekit train_step": model}  # fmt: skip
    runs = []
    for name, net in nets.items():
        plain = TransformerNet()
        plain.load_state_dict(net.state_dict())
        runs.append(Run(name, plain.eval(), losses[name], seconds[name], "fp32, in this process"))
    return runs


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


def ray_run(
    args: argparse.Namespace, data: str, workers: int, batch: int, device: torch.device, output: str
) -> Run:
    from stylekit.nn.modelio import load_model
    from stylekit.train.config import TrainConfig
    from stylekit.train.ray_job import run_training

    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    use_gpu = gpus >= workers
    note = "CPU workers" + (f": {gpus} GPU(s) < {workers}" if gpus else "")
    note = f"{workers} GPU worker(s)" if use_gpu else note
    name = f"w{workers}b{batch}"
    config = TrainConfig(
        style=args.style, data=data, output=output, name=name, vgg_weights="caffe", image_size=args.image_size,
        batch_size=batch, num_workers=workers, max_steps=args.steps, log_every=1,  # every step's loss
        checkpoint_every=args.steps, seed=args.seed, lr=args.lr, style_size=args.style_size,
        precision=args.precision, use_gpu=use_gpu,
    )  # fmt: skip
    start = time.perf_counter()
    path = run_training(config)
    seconds = time.perf_counter() - start
    scalars = read_event_scalars(Path(output) / name / "tensorboard", "loss/total")
    losses = [scalars.get(s, float("nan")) for s in range(1, args.steps + 1)]
    return Run(f"Ray Train {workers} x {batch}", load_model(path).model.eval(), losses, seconds, note)


def ray_runs(args: argparse.Namespace, data: str, device: torch.device) -> list[Run]:
    import ray

    from stylekit.logs import setup_logging
    from stylekit.ray_env import init_ray, shutdown_ray

    if args.verbose:
        setup_logging()
    if not ray.is_initialized():
        ray.init(logging_level=logging.WARNING, log_to_driver=args.verbose)
    init_ray()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-parity-") as output:
            return [
                ray_run(args, data, workers, batch, device, output) for workers, batch in ((1, 4), (2, 2))
            ]
    finally:
        shutdown_ray()


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
    from stylekit.files import images

    model = model.to(device).eval()
    sums = {"content": 0.0, "style": 0.0, "tv": 0.0, "loss": 0.0}
    with torch.no_grad():
        for pixels in photos:
            x = images.to_tensor(pixels).to(device)
            for k, v in loss_fn(model(x), x).as_floats().items():
                sums[k] += v
    return {k: v / len(photos) for k, v in sums.items()}


def report(args: argparse.Namespace, runs: list[Run], style: torch.Tensor, device: torch.device) -> None:
    k = args.log_every
    ends = sorted({*range(k, args.steps + 1, k), args.steps})
    ref = runs[0].losses
    rows = []
    for end in ends:
        r = window_mean(ref, end, k)
        row: list[object] = [f"{max(1, end - k + 1)}-{end}", bq.fmt(r)]
        for run in runs[1:]:
            v = window_mean(run.losses, end, k)
            row += [bq.fmt(v), pct(v, r)]
        rows.append(row)
    headers = ["steps", runs[0].name]
    for run in runs[1:]:
        headers += [run.name, "vs ref"]
    print(f"Training loss (total, mean over each window of {k} steps; Ray 2 x 2: rank 0's images only)\n")
    print(common.table(headers, rows))
    print()
    w = default_loss_weights("caffe")
    photos = [p for _, p in bq.load_photos(args.photos, args.size, args.max_photos)]
    vgg = load_vgg("caffe").to(device)
    loss_fn = PerceptualLoss(vgg, style.to(device), w.content, w.style, w.tv).to(device)
    evals = [evaluate(run.model, loss_fn, photos, device) for run in runs]
    ref_total = evals[0]["loss"]
    rows = []
    for run, e in zip(runs, evals, strict=True):
        diff = 100 * (e["loss"] - ref_total) / ref_total
        first = run is runs[0]
        rows.append([run.name, run.note, f"{run.seconds:.0f}", *(bq.fmt(e[key]) for key in ("content", "style", "tv", "loss")),
                     "-" if first else f"{diff:+.2f}%", "-" if first else ("yes" if abs(diff) <= PARITY_TARGET else "NO")])  # fmt: skip
    print(f"Final networks on {len(photos)} held-out photo(s) from {args.photos} at longest side {args.size}, "
          "mean loss terms of the fp32 network output\n")  # fmt: skip
    headers = ["run", "where", "train s (Ray: incl. start-up)", "content", "style", "tv", "total", "total vs ref",
               f"within {PARITY_TARGET:g}%"]  # fmt: skip
    print(common.table(headers, rows))
    step = next(r for r in runs if r.name == "stylekit train_step")
    same = step.losses == runs[0].losses
    print(f"\nstylekit's step equals the reference's at every step, bit for bit: {'yes' if same else 'no'}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA), help="training images folder")
    p.add_argument("--data-photos", type=int, default=4,
                   help="train on the first N images of --data only (4: one global batch; 0: all)")  # fmt: skip
    p.add_argument("--style", default=str(bq.STYLES / "starry_night.jpg"))
    p.add_argument("--style-size", type=int, default=256, help="longest side of the style image")
    p.add_argument("--image-size", type=int, default=128, help="training crop side")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--log-every", type=int, default=25, help="loss curve window, in steps")
    p.add_argument("--seed", type=int, default=42, help="stylekit's default")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--precision", default="auto", choices=["auto", "fp32", "bf16"], help="the Ray runs' precision"
    )
    p.add_argument("--photos", default=str(bq.DEFAULT_PHOTOS), help="held-out photos: a folder or comma list")
    p.add_argument("--max-photos", type=int, default=4)
    p.add_argument("--size", type=int, default=256, help="held-out photos' longest side")
    p.add_argument("--no-ray", action="store_true", help="only the in-process runs (no Ray Train)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--verbose", action="store_true", help="show stylekit's and Ray workers' logs")
    args = p.parse_args(argv)
    device = common.pick_device(args.device)
    style = bq.load_style(args.style, args.style_size)
    w = default_loss_weights("caffe")
    title = f"Parity with the reference training loop, {args.image_size} px, {args.steps} steps"
    print(common.header(title, device))
    with tempfile.TemporaryDirectory(prefix="bench-parity-data-") as tmp:
        data = (
            subset_folder(args.data, args.data_photos, Path(tmp) / "data") if args.data_photos else args.data
        )
        n = len(FolderImages(data, args.image_size))
        print(f"- data: {n} images ({f'the first {args.data_photos} ' if args.data_photos else ''}under {args.data}); "
              f"style {args.style} at {style.shape[3]}x{style.shape[2]}; loss network Caffe VGG-16; weights content "
              f"{w.content:g}, style {w.style:g}, tv {w.tv:g}; Adam lr {args.lr:g}; seed {args.seed}; global batch {BATCH}")  # fmt: skip
        print(f"- Ray runs: precision {args.precision} (auto: bf16 autocast on CUDA, fp32 on CPU); the others fp32. "
              + ("Every step of every run trains on the same 4 images." if n == BATCH else
                 "Data order differs (Ray Data's file shuffle vs a seeded DataLoader): compare the Ray runs' "
                 "curves by trend and the final evaluation.") + "\n", flush=True)  # fmt: skip
        runs = in_process_runs(args, data, device, style)
        if not args.no_ray:
            runs += ray_runs(args, data, device)
    report(args, runs, style, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
