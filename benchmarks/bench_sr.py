"""Super-resolution quality on Set5 and Set14, the literature's protocol, as paste-ready markdown.

For each factor and test set: the ground truth cropped to a multiple of the factor, its
low-resolution input made by MATLAB-style bicubic downsampling (stylekit/infer/degrade.py),
then upscaled by bicubic and by each SR model of that factor; PSNR and SSIM on the Y channel
(BT.601, 16-235) with `factor` pixels shaved from every border (stylekit/infer/srmetrics.py),
averaged over the images. The bicubic row checks the protocol itself against the literature's
figures (Set5 x4 28.42 dB, Set14 x4 26.00 dB, x8 24.40 / 23.10 dB).

With --picture, a side-by-side crop (bicubic | each model | ground truth) per image listed in
--crops goes to that PNG, as the paper's Fig. 8 shows.

    python benchmarks/bench_sr.py --models sr_x4_pixel,sr_x4
    python benchmarks/bench_sr.py --models sr_x4_pixel,sr_x4 --picture docs/sr_x4.png

Needs only torch, numpy, pillow and safetensors (plus this checkout's stylekit).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from common import REPO, header, table
from PIL import Image, ImageDraw

from stylekit.infer import srmetrics
from stylekit.infer.degrade import imresize, modcrop
from stylekit.infer.inference import InferenceOptions, Stylizer
from stylekit.nn.modelio import load_model

DATA = REPO.parent / "shared" / "data" / "sr"
# The literature's bicubic figures (PSNR, SSIM), MATLAB protocol (e.g. LapSRN, EDSR tables).
LITERATURE_BICUBIC = {("Set5", 4): (28.42, 0.8104), ("Set14", 4): (26.00, 0.7027)}
LITERATURE_BICUBIC |= {("Set5", 8): (24.40, 0.6580), ("Set14", 8): (23.10, 0.5660)}
# Johnson et al. 2016, Table 2 (x4; their own bicubic and SSIM computation): Set5.
PAPER_X4_SET5 = {"bicubic": (28.43, 0.8114), "pixel": (28.40, 0.8002), "feature": (27.09, 0.7680)}
# The picture's photos: the bundled ones (Set5/Set14 may not be redistributed, SOURCES.md), as
# (file, top, left, side) of the ground-truth crop.
PICTURE_DIR = REPO / "stylekit" / "examples" / "content"
CROPS = (("coffee.jpg", 120, 250, 96), ("chelsea.jpg", 90, 170, 96), ("rocket.jpg", 120, 280, 96))


def upscaler(stylizer: Stylizer | None, factor: int) -> Callable[[np.ndarray], np.ndarray]:
    """(h, w[, 3]) uint8 -> upscaled: MATLAB bicubic (None) or the model's output."""
    if stylizer is None:
        return lambda low: imresize(low, factor)
    return lambda low: srmetrics.upscale_grey(lambda rgb: stylizer.stylize([rgb])[0], low)


def evaluate(methods: dict[str, Stylizer | None], dataset: str, factor: int) -> dict[str, list]:
    """method -> [(image, Score)] over the dataset's images (bicubic: the literature's)."""
    folder = str(DATA / dataset)
    return {
        name: srmetrics.evaluate_folder(None if s is None else upscaler(s, factor), folder, factor)
        for name, s in methods.items()
    }


def picture(methods: dict[str, Stylizer | None], factor: int, out_path: Path, zoom: int = 2) -> None:
    """Crops of bicubic | each model | ground truth side by side, one row per CROPS entry."""
    labels = [*methods, "ground truth"]
    tiles: list[list[np.ndarray]] = []
    for stem, top, left, side in CROPS:
        truth = modcrop(srmetrics.load_truth(str(PICTURE_DIR / stem)), factor)
        low = imresize(truth, 1 / factor)
        row = [upscaler(stylizer, factor)(low) for stylizer in methods.values()]
        tiles.append([image[top : top + side, left : left + side] for image in [*row, truth]])
    side = CROPS[0][3] * zoom
    pad, label_h = 6, 20
    width = len(labels) * (side + pad) + pad
    height = label_h + len(tiles) * (side + pad) + pad
    canvas = Image.new("RGB", (width, height), (24, 24, 24))
    draw = ImageDraw.Draw(canvas)
    for j, label in enumerate(labels):
        draw.text((pad + j * (side + pad), 4), label, fill=(230, 230, 230))
    for i, row in enumerate(tiles):
        for j, tile in enumerate(row):
            img = Image.fromarray(tile).resize((side, side), Image.Resampling.NEAREST)
            canvas.paste(img, (pad + j * (side + pad), label_h + i * (side + pad)))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out_path)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="", help="comma-separated SR models (shipped names or files)")
    factors = "factors to evaluate (models of other factors are skipped)"
    parser.add_argument("--factors", default="4,8", help=factors)
    parser.add_argument("--datasets", default="Set5,Set14")
    parser.add_argument("--per-image", action="store_true", help="also print every image's figures")
    parser.add_argument("--picture", default="", help="write the x4 side-by-side crops to this PNG")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options = InferenceOptions(device="cpu", precision="fp32")
    models = {}
    for name in [m for m in args.models.split(",") if m]:
        loaded = load_model(name)
        if loaded.metadata.get("task") != "sr":
            parser.error(f"{name} is not a super-resolution model")
        models[name] = (int(loaded.metadata["factor"]), Stylizer(loaded.model, options), loaded.metadata)
    title = "Super-resolution: Set5 / Set14, PSNR / SSIM on Y, border shave = factor"
    print(header(title, torch.device("cpu")))
    rows = []
    for factor in (int(f) for f in args.factors.split(",")):
        methods: dict[str, Stylizer | None] = {"bicubic": None}
        methods.update({n: s for n, (f, s, _) in models.items() if f == factor})
        for dataset in args.datasets.split(","):
            results = evaluate(methods, dataset, factor)
            for name, per_image in results.items():
                mean = srmetrics.mean_score(per_image)
                psnr, ssim = mean.psnr, mean.ssim
                ref = ""
                if name == "bicubic":
                    lit = LITERATURE_BICUBIC.get((dataset, factor))
                    ref = f"literature {lit[0]:.2f} / {lit[1]:.4f}" if lit else ""
                elif factor == 4 and dataset == "Set5":
                    kind = models[name][2].get("loss", "")
                    paper = PAPER_X4_SET5.get(kind)
                    ref = f"paper ({kind}) {paper[0]:.2f} / {paper[1]:.4f}" if paper else ""
                steps = models[name][2].get("steps", "") if name in models else ""
                rows.append((f"x{factor}", dataset, name, steps, f"{psnr:.2f}", f"{ssim:.4f}", ref))
                if args.per_image:
                    for stem, sc in per_image:
                        print(f"  x{factor} {dataset} {name} {stem}: {sc.psnr:.2f} dB, SSIM {sc.ssim:.4f}")
    print(table(("factor", "set", "method", "steps", "PSNR (dB)", "SSIM", "reference"), rows))
    if args.picture:
        x4 = {"bicubic": None, **{n: s for n, (f, s, _) in models.items() if f == 4}}
        picture(x4, 4, Path(args.picture))
        print(f"\npicture: {args.picture}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
