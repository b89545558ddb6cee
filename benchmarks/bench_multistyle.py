"""Many paintings in one network (docs/multistyle.md): is one network no worse than many?

Trains with the library's Ray-free loop (stylekit.train.loop, the one Ray Train's workers run)
on the training crops held in memory, then measures each painting's content and style loss
(weighted, as trained: Caffe VGG-16) of the stylized held-out photos (../shared/data/content,
not training data), longest side --eval-side:

  joint  the N-style network trained N x S steps (one painting a step, S each) against each
         single-style network trained S steps on its painting: the compute of N runs buys one
         network; "within 10%" asks each painting's losses to be at most 1.10 x the single's.
  add    a painting added to that N-style network (--add-style: only the new slot's gamma and
         beta train, every convolution frozen) for S/4 steps, against a single-style network
         of S steps on it; and the cost of one such step against a full step (interleaved).

    python benchmarks/bench_multistyle.py --size 128 --steps 200 --out /tmp/multistyle
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import common
import numpy as np
import torch

from stylekit.files import images
from stylekit.nn.loss import PerceptualLoss
from stylekit.nn.modelio import load_model, save_model
from stylekit.nn.styles import one_style
from stylekit.nn.vgg import load_vgg
from stylekit.train.config import TrainConfig
from stylekit.train.held import HeldBatches, load_crops
from stylekit.train.loop import LoopHooks, Schedule, train_loop
from stylekit.train.losses import build_loss
from stylekit.train.paintings import Painting, read_painting
from stylekit.train.state import new_state
from stylekit.train.step import train_step

DATA = common.REPO.parent / "shared" / "data"
CPU = torch.device("cpu")


class Clock(LoopHooks):
    def __init__(self, label: str, total: int):
        self.label, self.total, self.t0 = label, total, time.perf_counter()

    def after_step(self, state, terms) -> None:  # type: ignore[no-untyped-def]
        if state.step % 50 == 0 or state.step == self.total:
            rate = state.step / (time.perf_counter() - self.t0)
            print(f"  {self.label}: step {state.step}/{self.total} ({rate:.2f} steps/s)", file=sys.stderr)


def config(args: argparse.Namespace, paintings: list[Path], **more: object) -> TrainConfig:
    return TrainConfig(
        style=tuple(str(p) for p in paintings), data=str(DATA / "train-mini"), image_size=args.size,
        style_size=args.style_size, batch_size=args.batch, max_steps=10**9, **more,
    )  # fmt: skip


def train(cfg: TrainConfig, steps: int, crops: torch.Tensor, label: str) -> torch.nn.Module:
    state, loss = new_state(cfg, CPU), build_loss(cfg, CPU)
    held = HeldBatches(crops, cfg.batch_size, seed=cfg.seed)
    schedule = Schedule(steps, held.steps_per_epoch)
    train_loop(cfg, state, state.model, loss, torch.float32, held, schedule, Clock(label, steps))
    return state.model.eval()


def evaluate(
    net: torch.nn.Module, slot: int, loss: PerceptualLoss, painting: int, photos: list
) -> np.ndarray:
    """Mean weighted (content, style, total) loss of the net's style `slot` on the photos
    against the loss's painting number `painting`, on the clamped pixels a user gets."""
    one = one_style(net, [float(i == slot) for i in range(net.styles)])  # type: ignore[arg-type]
    with torch.no_grad():
        terms = [loss(one(x).clamp(0, 255), x, painting) for x in photos]
    return np.mean([[float(t.content), float(t.style), float(t.total)] for t in terms], axis=0)


def compare(name: str, single: np.ndarray, other: np.ndarray) -> list[str]:
    """A table row: for each term, single, other, ratio."""
    cells = [name]
    for a, b in zip(single, other, strict=True):
        cells += [f"{a:.3g}", f"{b:.3g}", f"{b / a:.2f}"]
    return cells


def columns(other: str) -> list[str]:
    return ["painting"] + [
        f"{t} {w}" for t in ("content", "style", "total") for w in ("single", other, "ratio")
    ]


def verdict(ratios: np.ndarray) -> str:
    """Whether every term, and the total, is within 10% (ratio at most 1.10)."""
    each = "holds" if ratios.max() <= 1.10 else "does not hold"
    total = "holds" if ratios[..., 2].max() <= 1.10 else "does not hold"
    return f"worst ratio of a term {ratios.max():.2f}, of the total {ratios[..., 2].max():.2f}: within 10% {each} for every term, {total} for the total"


def step_costs(
    base_file: str, args: argparse.Namespace, crops: torch.Tensor, painting: Path
) -> dict[str, list[float]]:
    """Seconds per step: a full one-style step and an --add-style step, interleaved."""
    full_cfg = config(args, [painting])
    add_cfg = config(args, [painting], init_from=base_file, add_style=True, add_lr=args.add_lr)
    full, add = new_state(full_cfg, CPU), new_state(add_cfg, CPU)
    loss = build_loss(full_cfg, CPU)
    batch = crops[: args.batch]
    return common.interleaved(
        {"full step": lambda: train_step(full.model, loss, full.optimizer, batch),
         "add-style step": lambda: train_step(add.model, loss, add.optimizer, batch)},
        CPU, warmup=2, repeat=args.timing_steps,
    )  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--paintings", default="starry_night,wave,the_scream,candy", help="the N jointly trained")
    p.add_argument("--added", default="mosaic", help="add mode: the painting added to the N-style network")
    p.add_argument("--size", type=int, default=128, help="training crop side")
    p.add_argument("--style-size", type=int, default=256)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=200, help="S: each single-style run's steps")
    p.add_argument("--eval-side", type=int, default=256, help="held-out photos' longest side")
    p.add_argument("--timing-steps", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--add-lr", type=float, default=TrainConfig.add_lr, help="add mode: --add-lr")
    p.add_argument("--out", default="", help="folder to keep the trained models in")
    p.add_argument(
        "--reuse", choices=["singles", "all"], help="load the single (and joint) models from --out"
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    names = args.paintings.split(",")
    paintings = [DATA / "styles" / f"{n}.jpg" for n in [*names, args.added]]
    crops = torch.from_numpy(load_crops(str(DATA / "train-mini"), args.size))
    decoded = (images.decode(f.read_bytes()) for f in sorted((DATA / "content").iterdir()))
    photos = [images.to_tensor(images.resize_longest(pixels, args.eval_side)) for pixels in decoded]
    w = config(args, paintings[:1])
    vgg = load_vgg("caffe")
    targets = [read_painting(Painting(x.stem, str(x)), args.style_size)[0] for x in paintings]
    loss = PerceptualLoss(vgg, targets, w.content_weight, w.style_weight, w.tv_weight)  # type: ignore[arg-type]
    out = Path(args.out or tempfile.mkdtemp(prefix="bench-multistyle-"))
    out.mkdir(parents=True, exist_ok=True)
    S, N = args.steps, len(names)
    A = max(1, S // 4)  # the added painting's steps (at least 1, for a --steps 2 smoke run)
    t0 = time.time()
    base_file = str(out / f"joint{N}.safetensors")
    single_files = [str(out / f"single_{n}.safetensors") for n in [*names, args.added]]
    if args.reuse:
        singles = [load_model(f).model for f in single_files]
    else:
        singles = [train(config(args, [x]), S, crops, f"single {x.stem}") for x in paintings]
        for net, f in zip(singles, single_files, strict=True):
            save_model(f, net, {"task": "style"})
    if args.reuse == "all":
        joint = load_model(base_file).model
    else:
        joint = train(config(args, paintings[:N]), N * S, crops, f"{N}-style")
        save_model(base_file, joint, {"task": "style", "styles": json.dumps([{"name": n} for n in names])})
    add_cfg = config(args, [paintings[N]], init_from=base_file, add_style=True, add_lr=args.add_lr)
    added = train(add_cfg, A, crops, f"add {args.added}")
    train_minutes = (time.time() - t0) / 60
    rows, ratios = [], []
    for i, name in enumerate(names):
        single, multi = evaluate(singles[i], 0, loss, i, photos), evaluate(joint, i, loss, i, photos)
        rows.append(compare(name, single, multi))
        ratios.append(multi / single)
    single, with_added = evaluate(singles[N], 0, loss, N, photos), evaluate(added, 0, loss, N, photos)
    costs = step_costs(base_file, args, crops, paintings[N])
    full, add = common.median(costs["full step"]), common.median(costs["add-style step"])
    print(common.header(f"Many paintings in one network: {args.size} px, batch {args.batch}, S = {S}", CPU))
    print(f"Held-out photos: {len(photos)} from ../shared/data/content, longest side {args.eval_side}; "
          f"weighted losses (Caffe VGG-16, content {w.content_weight:g}, style {w.style_weight:g}, "
          f"tv {w.tv_weight:g}); training took {train_minutes:.0f} min.\n")  # fmt: skip
    print(
        f"**joint**: the {N}-style network ({N} x {S} steps) against each single-style network ({S} steps)\n"
    )
    print(common.table(columns(f"{N}-style"), rows))
    print(f"\n{verdict(np.array(ratios))}\n")
    print(f"**add**: {args.added} added to the {N}-style network (gamma/beta only, lr {args.add_lr:g}, "
          f"{A} steps) against a single-style network of {S} steps\n")  # fmt: skip
    print(common.table(columns("added"), [compare(args.added, single, with_added)]))
    print(f"\n{verdict(with_added / single)}; step cost: full {1000 * full:.0f} ms "
          f"({common.spread(costs['full step'])}), add-style {1000 * add:.0f} ms "
          f"({common.spread(costs['add-style step'])}), {add / full:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
