"""How far a training run's final loss moves when nothing but float rounding changes, and
whether stylekit's training step computes the reference loop's step exactly.

Three trainings in one process, from the same seeded TransformerNet, on the same batch (the
first 4 photos of --data, torchvision's Resize + CenterCrop, every step), fp32, Adam lr 1e-3,
Caffe VGG-16 with the paper's weights:

  reference           the pytorch/examples loop (bench_quality.reference_training's step)
  reference, shuffled the same loop with the 4 images in a new (seeded) order at every step:
                      the same loss in exact arithmetic, summed in another order
  stylekit step       stylekit.train.step.train_step with stylekit's PerceptualLoss

Prints the loss curves (mean of each window of --log-every steps) and each final network's
loss on held-out photos (bench_quality's evaluation set), so the Ray Train runs of
`bench_quality.py --parity-only --parity-photos 4` can be read against the reference's own
spread.

    python benchmarks/bench_parity_order.py                 # 200 steps at 128 px
    python benchmarks/bench_parity_order.py --steps 5 --image-size 32 --log-every 1   # smoke
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import bench_quality as bq
import common
import reference
import torch

from stylekit.nn.loss import PerceptualLoss
from stylekit.nn.model import TransformerNet
from stylekit.nn.vgg import default_loss_weights, load_vgg
from stylekit.train.step import train_step


def reference_net(seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    net = reference.reference_net(TransformerNet(), torch.device("cpu")).train()
    return net, torch.optim.Adam(net.parameters(), 1e-3)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(bq.DEFAULT_DATA))
    p.add_argument("--style", default=str(bq.STYLES / "starry_night.jpg"))
    p.add_argument("--style-size", type=int, default=256)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--photos", default=str(bq.DEFAULT_PHOTOS), help="held-out evaluation photos")
    p.add_argument("--max-photos", type=int, default=4)
    p.add_argument("--size", type=int, default=256, help="evaluation photos' longest side")
    args = p.parse_args(argv)

    print(common.header("Float rounding against parity: one batch, 3 trainings", torch.device("cpu")))
    with tempfile.TemporaryDirectory(prefix="bench-parity-order-") as tmp:
        data = bq.FolderImages(bq.subset_folder(args.data, 4, Path(tmp) / "data"), args.image_size)
        x = torch.stack([data[i] for i in range(4)]).round()  # (4, 3, S, S), whole 0-255 values
    style = bq.load_style(args.style, args.style_size)
    w = default_loss_weights("caffe")
    vgg = load_vgg("caffe")
    style_grams = [reference.gram_matrix(f) for f in vgg(style.repeat(4, 1, 1, 1))]

    ref, ref_opt = reference_net(args.seed)
    shuffled, shuffled_opt = reference_net(args.seed)
    torch.manual_seed(args.seed)
    model = TransformerNet().train()
    model_opt = torch.optim.Adam(model.parameters(), 1e-3)
    loss_fn = PerceptualLoss(load_vgg("caffe"), style, w.content, w.style, w.tv)
    batch = x.permute(0, 2, 3, 1).to(torch.uint8)  # what Ray Data hands a worker
    order = torch.Generator().manual_seed(args.seed)
    runs: dict[str, tuple[torch.nn.Module, list[float]]] = {
        "reference": (ref, []),
        "reference, shuffled each step": (shuffled, []),
        "stylekit train_step": (model, []),
    }
    steps: dict[str, Callable[[], float]] = {
        "reference": lambda: bq.reference_step(ref, ref_opt, vgg, style_grams, x, w),
        "reference, shuffled each step": lambda: bq.reference_step(
            shuffled, shuffled_opt, vgg, style_grams, x[torch.randperm(4, generator=order)], w
        ),
        "stylekit train_step": lambda: float(train_step(model, loss_fn, model_opt, batch).total),
    }
    for _ in range(args.steps):
        for name, step in steps.items():
            runs[name][1].append(step())

    k = args.log_every
    rows = []
    for start in range(0, args.steps, k):
        ref_mean = sum(runs["reference"][1][start : start + k]) / len(runs["reference"][1][start : start + k])
        row: list[object] = [f"{start + 1}-{min(start + k, args.steps)}", bq.fmt(ref_mean)]
        for name in list(runs)[1:]:
            vals = runs[name][1][start : start + k]
            mean = sum(vals) / len(vals)
            row += [bq.fmt(mean), bq.pct(mean, ref_mean)]
        rows.append(row)
    headers = ["steps", "reference"]
    for name in list(runs)[1:]:
        headers += [name, "vs ref"]
    print(f"Training loss (total, mean over each window of {k} steps, the same 4 images every step)")
    print()
    print(common.table(headers, rows))
    print()
    photos = [px for _, px in bq.load_photos(args.photos, args.size, args.max_photos)]
    evaluation = PerceptualLoss(load_vgg("caffe"), style, w.content, w.style, w.tv)
    finals = {}
    for name, (net, _) in runs.items():
        plain = TransformerNet()
        plain.load_state_dict(net.state_dict())
        finals[name] = bq.evaluate(plain.eval(), evaluation, photos, torch.device("cpu"))["loss"]
    print(f"Final networks on {len(photos)} held-out photo(s) from {args.photos} at longest side {args.size}")
    print()
    print(
        common.table(
            ["run", "total", "vs reference"],
            [[name, bq.fmt(v), bq.pct(v, finals["reference"])] for name, v in finals.items()],
        )
    )
    identical = runs["stylekit train_step"][1] == runs["reference"][1]
    print()
    print(
        f"stylekit's step equals the reference's at every step, bit for bit: {'yes' if identical else 'no'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
