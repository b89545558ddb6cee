"""stylekit's shipped style models beside the paper's own ECCV 2016 models, by numbers.

`../shared/data/reference-outputs/` holds chicago.jpg stylized by the original starry_night,
wave and composition_vii (jcjohnson/fast-neural-style, 40,000 steps at 256 px). This runs the
shipped models the way a user does (`python -m stylekit stylize`, default settings) on the same
photo at the same size and prints, for each, three figures beside the original's:

- grain: mean |Laplacian| of the luminance (0-255), 4-neighbour kernel. Fine hatching and grid
  texture raise it; large smooth strokes do not. (The photo itself has ~13.6.)
- content: relu2_2 distance to the photo under the paper's loss network (Caffe VGG-16):
  RMS(phi(out) - phi(photo)) / RMS(phi(photo)). Lower keeps more of the photo's structure.
- style: Gram distance to the painting at relu1_2, relu2_2, relu3_3, relu4_3, relative to the
  photo's own: sum_j |G_j(out) - G_j(paint)|^2 / sum_j |G_j(photo) - G_j(paint)|^2. 0 is the
  painting's statistics, 1 the untouched photo's. Lower carries more of the painting.

The painting is taken at 512 px on its longer side for every model (one yardstick for all).
Targets (issue 17): grain <= 1.25x the original's, content <= 1.15x, style <= the original's.

    python benchmarks/bench_originals.py [--model starry_night=runs/zoo/starry_night/model.safetensors] [--save DIR]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from stylekit.nn.loss import gram_matrix  # noqa: E402
from stylekit.nn.vgg import load_vgg  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
PHOTO = SHARED / "content" / "chicago.jpg"
ORIGINALS = SHARED / "reference-outputs"
STYLES = REPO / "stylekit" / "examples" / "styles"
NAMES = ("starry_night", "wave", "composition_vii", "the_scream")
TARGETS = {"grain": 1.25, "content": 1.15, "style": 1.0}


def load_rgb(path: Path, size: tuple[int, int] | None = None, longest: int | None = None) -> np.ndarray:
    img = Image.open(path).convert("RGB")
    if longest:
        scale = longest / max(img.size)
        size = (round(img.width * scale), round(img.height * scale))
    if size and img.size != size:
        img = img.resize(size, Image.Resampling.LANCZOS)
    return np.asarray(img)


def grain(rgb: np.ndarray) -> float:
    """Mean |4-neighbour Laplacian| of BT.601 luminance, interior pixels."""
    y = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    lap = 4 * y[1:-1, 1:-1] - y[:-2, 1:-1] - y[2:, 1:-1] - y[1:-1, :-2] - y[1:-1, 2:]
    return float(np.abs(lap).mean())


class Yardstick:
    """The loss network's views of one photo and one painting."""

    def __init__(self, photo: np.ndarray, painting: np.ndarray):
        self.vgg = load_vgg("caffe")
        self.photo = self.features(photo)
        self.paint_grams = [gram_matrix(f) for f in self.features(painting)]
        self.photo_style = self.gram_distance(self.photo)

    @torch.no_grad()
    def features(self, rgb: np.ndarray) -> list[torch.Tensor]:
        x = torch.from_numpy(np.array(rgb)).permute(2, 0, 1)[None].float()  # (1,3,H,W) 0-255
        return self.vgg(x)

    def gram_distance(self, feats: list[torch.Tensor]) -> float:
        return sum(
            float(F.mse_loss(gram_matrix(f), g, reduction="sum"))
            for f, g in zip(feats, self.paint_grams, strict=True)
        )

    def measure(self, rgb: np.ndarray) -> dict[str, float]:
        feats = self.features(rgb)
        c_out, c_photo = feats[1], self.photo[1]
        content = float((c_out - c_photo).pow(2).mean().sqrt() / c_photo.pow(2).mean().sqrt())
        return {
            "grain": grain(rgb),
            "content": content,
            "style": self.gram_distance(feats) / self.photo_style,
        }


def stylize(model: str, photo: Path, out: Path, extra: list[str]) -> np.ndarray:
    cmd = [
        sys.executable,
        "-m",
        "stylekit",
        "stylize",
        "--model",
        model,
        "--output",
        str(out),
        *extra,
        str(photo),
    ]
    subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return np.asarray(Image.open(out).convert("RGB"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", action="append", default=[], help="NAME=MODEL to measure instead of the shipped NAME"
    )
    parser.add_argument("--names", default=",".join(NAMES))
    parser.add_argument("--save", help="folder for the outputs and a side-by-side PNG per style")
    parser.add_argument(
        "--stylize-flag", action="append", default=[], help="extra flag for stylize (repeatable)"
    )
    args = parser.parse_args(argv)
    if not PHOTO.is_file():
        print(f"needs {PHOTO} (the shared data); not found", file=sys.stderr)
        return 2
    overrides = dict(m.split("=", 1) for m in args.model)
    photo_ref = load_rgb(ORIGINALS / "chicago_starry_night.jpg")
    size = (photo_ref.shape[1], photo_ref.shape[0])
    photo = load_rgb(PHOTO, size=size)
    save = Path(args.save) if args.save else None
    if save:
        save.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        photo_path = Path(tmp) / "chicago.png"
        Image.fromarray(photo).save(photo_path)
        for name in [n for n in args.names.split(",") if n]:
            stick = Yardstick(photo, load_rgb(STYLES / f"{name}.jpg", longest=512))
            out = stylize(overrides.get(name, name), photo_path, Path(tmp) / f"{name}.png", args.stylize_flag)
            ours = stick.measure(out)
            orig_path = ORIGINALS / f"chicago_{name}.jpg"
            orig = stick.measure(load_rgb(orig_path)) if orig_path.is_file() else None
            rows.append((name, ours, orig))
            if save:
                Image.fromarray(out).save(save / f"chicago_{name}.png")
                panels = [photo, out] + ([load_rgb(orig_path)] if orig else [])
                Image.fromarray(np.concatenate(panels, axis=1)).save(save / f"side_by_side_{name}.png")
    print(f"photo: chicago at {size[0]}x{size[1]}, grain {grain(photo):.1f}")
    print("| model | grain ours / original | content ours / original | style ours / original | targets met |")
    print("|---|---|---|---|---|")
    for name, ours, orig in rows:
        if orig is None:
            cells = [f"{ours[k]:.3g} / -" for k in ("grain", "content", "style")]
            met = "(no original)"
        else:
            cells = [
                f"{ours[k]:.3g} / {orig[k]:.3g} ({ours[k] / orig[k]:.2f}x)"
                for k in ("grain", "content", "style")
            ]
            met = ", ".join(k for k in TARGETS if ours[k] <= TARGETS[k] * orig[k]) or "none"
        print(f"| {name} | " + " | ".join(cells) + f" | {met} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
