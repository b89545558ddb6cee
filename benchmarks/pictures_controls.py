"""Pictures of the stylization controls: what each --style-scale value does (and strength /
preserve-color beside them), on one bundled photo with a shipped model.

    python benchmarks/pictures_controls.py                 # -> docs/style_scale.jpg
    python benchmarks/pictures_controls.py --model wave --photo stylekit/examples/content/coffee.jpg

Top row: the whole photo at each setting (downsized for the page). Bottom row: the same
300x300 crop at full resolution, where the brush-stroke size is read directly.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stylekit.infer.inference import InferenceOptions, Stylizer  # noqa: E402
from stylekit.nn.modelio import load_model  # noqa: E402

SETTINGS = [
    ("photo", None),
    ("style_scale 0.5", {"style_scale": 0.5}),
    ("style_scale 1 (default)", {}),
    ("style_scale 2", {"style_scale": 2.0}),
    ("style_scale 4", {"style_scale": 4.0}),
    ("strength 0.5", {"strength": 0.5}),
    ("preserve_color", {"preserve_color": True}),
]


def label(img: Image.Image, text: str) -> Image.Image:
    out = Image.new("RGB", (img.width, img.height + 22), "white")
    out.paste(img, (0, 22))
    ImageDraw.Draw(out).text((4, 5), text, fill="black")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="starry_night")
    p.add_argument("--photo", default=str(REPO / "stylekit/examples/content/hubble_deep_field.jpg"))
    p.add_argument("--output", default=str(REPO / "docs/style_scale.jpg"))
    p.add_argument("--panel", type=int, default=300, help="width of each downsized panel")
    args = p.parse_args()
    photo = np.asarray(Image.open(args.photo).convert("RGB"))
    model = load_model(args.model).model
    h, w = photo.shape[:2]
    top, left = (h - 300) // 2, (w - 300) // 2
    whole, crops = [], []
    for name, options in SETTINGS:
        out = photo if options is None else Stylizer(model, InferenceOptions(**options)).stylize([photo])[0]
        img = Image.fromarray(out)
        small = img.resize((args.panel, round(args.panel * h / w)), Image.Resampling.LANCZOS)
        whole.append(label(small, name))
        crop = img.crop((left, top, left + 300, top + 300)).resize(
            (args.panel, args.panel), Image.Resampling.NEAREST
        )
        crops.append(crop)
        print(f"{name}: done", flush=True)
    row_h = whole[0].height
    sheet = Image.new("RGB", (args.panel * len(SETTINGS), row_h + args.panel + 4), "white")
    for i, (a, b) in enumerate(zip(whole, crops, strict=True)):
        sheet.paste(a, (i * args.panel, 0))
        sheet.paste(b, (i * args.panel, row_h + 4))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.output, quality=88)
    print(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
