"""Strokes against the photo's resolution: the same photo at several sizes, stylized at default
settings (the model's own stroke scale) and with the network at full size (`--style-scale 1`,
what stylekit did before), each looked at the same size.

For each photo size it prints:
- style at the view size: the Gram distance to the painting, relative to the photo's own
  (bench_originals.py's measure; lower carries more of the painting). The same painting at every
  resolution means the same figure in every row.
- content at the view size: relu2_2 distance to the photo (bench_originals.py).
- sharpness at full size: mean |Laplacian| of the luminance of the full-size result, beside
  the same for the smallest size's result enlarged to this size (an upscaled small one).

The large sizes are the photo enlarged (the shared photos are at most 1,024 px): they stand in
for a phone photo's pixel count; the network sees them as it would a real one.

    python benchmarks/bench_stroke_scale.py [--model starry_night] [--sizes 512,1024,2048,4096] [--view 384] [--save DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_originals import STYLES, Yardstick, grain, load_rgb  # noqa: E402

from stylekit.infer import controls  # noqa: E402
from stylekit.infer.inference import InferenceOptions, Stylizer  # noqa: E402
from stylekit.nn.modelio import load_model  # noqa: E402

PHOTOS = [
    REPO.parent / "shared" / "data" / "content" / "tubingen.jpg",
    REPO / "stylekit" / "examples" / "content" / "rocket.jpg",
]


def longest(img: np.ndarray, side: int) -> np.ndarray:
    h, w = img.shape[:2]
    f = side / max(h, w)
    return controls.resize(img, max(1, round(h * f)), max(1, round(w * f)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="starry_night")
    parser.add_argument("--style", help="the painting (default: the bundled one named like the model)")
    parser.add_argument("--photo", help="default: tubingen from the shared data, else the bundled rocket")
    parser.add_argument("--sizes", default="512,1024,2048,4096", help="longer sides of the photo")
    parser.add_argument("--view", type=int, default=384, help="longer side everything is looked at")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--save", help="folder for a side-by-side picture of the views and full-size crops")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    photo_path = Path(args.photo) if args.photo else next(p for p in PHOTOS if p.is_file())
    photo = load_rgb(photo_path)
    style = Path(args.style) if args.style else STYLES / f"{args.model}.jpg"
    sizes = [int(s) for s in args.sizes.split(",")]
    model = load_model(args.model).model
    runs = {
        "default": Stylizer(model, InferenceOptions(device="cpu")),
        "--style-scale 1": Stylizer(model, InferenceOptions(device="cpu", style_scale=1)),
    }
    view_photo = longest(photo, args.view)
    stick = Yardstick(view_photo, load_rgb(style, longest=512))
    print(
        f"model {args.model} (paint_side {model.paint_side}), photo {photo_path.name}, view at {args.view} px"
    )
    print(
        "| photo (longer side) | run | style at view | content at view | sharpness at full size | enlarged smallest |"
    )
    print("|---|---|---|---|---|---|")
    views: dict[str, list[np.ndarray]] = {k: [] for k in runs}
    crops: list[np.ndarray] = []
    smallest: dict[str, np.ndarray] = {}
    for size in sizes:
        src = longest(photo, size)
        for name, stylizer in runs.items():
            out = stylizer.stylize([src])[0]
            seen = longest(out, args.view)
            m = stick.measure(controls.resize(seen, *view_photo.shape[:2]))
            smallest.setdefault(name, out)
            enlarged = controls.resize(smallest[name], *out.shape[:2])
            print(
                f"| {out.shape[1]}x{out.shape[0]} | {name} | {m['style']:.3f} | {m['content']:.3f} | "
                f"{grain(out):.1f} | {grain(enlarged):.1f} |",
                flush=True,
            )
            views[name].append(seen)
            if name == "default" and size == sizes[-1]:
                h, w = out.shape[:2]
                crops = [
                    out[h // 3 : h // 3 + 300, w // 3 : w // 3 + 400],
                    enlarged[h // 3 : h // 3 + 300, w // 3 : w // 3 + 400],
                ]
    if args.save:
        save = Path(args.save)
        save.mkdir(parents=True, exist_ok=True)
        rows = [np.concatenate(v, axis=1) for v in views.values()]
        Image.fromarray(np.concatenate(rows, axis=0)).save(save / f"stroke_scale_views_{args.model}.png")
        Image.fromarray(np.concatenate(crops, axis=1)).save(save / f"stroke_scale_crop_{args.model}.png")
        print(f"pictures in {save}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
