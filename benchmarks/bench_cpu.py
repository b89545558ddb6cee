"""CPU end to end: stylizing a folder of photos as a whole process (start Python, load the
model, decode, stylize, encode, write), the reference example against `python -m stylekit`.

    python benchmarks/bench_cpu.py                     # 8 photos of 1280x800, 3 rounds
    python benchmarks/bench_cpu.py --count 4 --width 640 --height 400 --repeat 1

Reference: one process running the example's stylize() body over every file of the folder (its
own script is one image per process; this loads the model once, which favours it): PIL decode,
ToTensor()*255, the seed network fp32 under no_grad, clamp, uint8, PIL JPEG save (quality 75).
stylekit: `python -m stylekit stylize --model M --output OUT --format jpg --quality 75 IN...`
(quality 75, so both pay for the same JPEG encoding). Both read the same reference-format .pth.
Rounds alternate the two processes; wall time per process (median), CPU time (user + sys) of the
children, and the PSNR of stylekit's decoded JPEGs against the reference's.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import common
import numpy as np
import torch
from PIL import Image

REFERENCE_SCRIPT = textwrap.dedent(
    '''
    """The pytorch/examples fast_neural_style stylize(), over every file named on the command line."""
    import re, sys
    import torch
    from torchvision import transforms
    from PIL import Image
    sys.path.insert(0, sys.argv[1])
    from common import RefTransformerNet as TransformerNet

    def load_image(filename):
        return Image.open(filename).convert("RGB")

    def save_image(filename, data):
        img = data.clone().clamp(0, 255).numpy()
        img = img.transpose(1, 2, 0).astype("uint8")
        Image.fromarray(img).save(filename)

    model_path, out_dir, inputs = sys.argv[2], sys.argv[3], sys.argv[4:]
    device = torch.device("cpu")
    with torch.no_grad():
        style_model = TransformerNet()
        state_dict = torch.load(model_path, weights_only=True)
        for k in list(state_dict.keys()):
            if re.search(r"in\\d+\\.running_(mean|var)$", k):
                del state_dict[k]
        style_model.load_state_dict(state_dict)
        style_model.to(device)
        style_model.eval()
        content_transform = transforms.Compose([transforms.ToTensor(), transforms.Lambda(lambda x: x.mul(255))])
        for path in inputs:
            content_image = content_transform(load_image(path)).unsqueeze(0).to(device)
            output = style_model(content_image).cpu()
            save_image(out_dir + "/" + path.rsplit("/", 1)[-1], output[0])
    '''
)


def make_photos(folder: Path, count: int, width: int, height: int) -> list[str]:
    paths = []
    for i, pixels in enumerate(common.photos(count, width, height)):
        path = folder / f"photo{i:03d}.jpg"
        Image.fromarray(pixels).save(path, quality=92)
        paths.append(str(path))
    return paths


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, child CPU seconds) of one process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=common.REPO)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:3]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=8, help="photos in the folder")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=800)
    p.add_argument("--repeat", type=int, default=3, help="rounds (each runs both processes)")
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for both (default: unset)")
    p.add_argument(
        "--model", default=None, help="a reference .pth (default: calibrated random, saved as .pth)"
    )
    args = p.parse_args()
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    print(
        common.header(
            f"CPU, whole process: {args.count} photos of {args.width}x{args.height}", torch.device("cpu")
        )
    )
    with tempfile.TemporaryDirectory(prefix="bench-cpu-") as tmp:
        root = Path(tmp)
        (root / "in").mkdir()
        inputs = make_photos(root / "in", args.count, args.width, args.height)
        model_path = args.model
        if not model_path:
            model_path = str(root / "model.pth")
            torch.save(common.calibrated_model(0).state_dict(), model_path)
        script = root / "reference_stylize.py"
        script.write_text(REFERENCE_SCRIPT)
        out_ref, out_sk = root / "out-ref", root / "out-sk"
        out_ref.mkdir()
        commands = {
            "reference": [sys.executable, str(script), str(common.REPO / "benchmarks"), model_path, str(out_ref), *inputs],
            "stylekit": [
                sys.executable, "-m", "stylekit", "stylize", "--model", model_path, "--output", str(out_sk),
                "--format", "jpg", "--quality", "75", *inputs,
            ],
        }  # fmt: skip
        walls: dict[str, list[float]] = {k: [] for k in commands}
        cpus: dict[str, list[float]] = {k: [] for k in commands}
        for r in range(args.repeat):
            for name in list(commands)[r % 2 :] + list(commands)[: r % 2]:
                wall, cpu = run(commands[name], env)
                walls[name].append(wall)
                cpus[name].append(cpu)
        scores = []
        for path in inputs:
            name = Path(path).name
            a = np.asarray(Image.open(out_sk / name).convert("RGB"))
            b = np.asarray(Image.open(out_ref / name).convert("RGB"))
            scores.append(common.psnr(a, b))
    ref_wall = common.median(walls["reference"])
    rows = []
    for name in commands:
        wall = common.median(walls[name])
        rows.append(
            [
                name,
                f"{wall:.1f} (±{common.spread(walls[name])})",
                f"{args.count / wall:.2f}",
                f"{ref_wall / wall:.2f}x",
                f"{common.median(cpus[name]):.1f}",
                "(target)" if name == "reference" else f"{min(scores):.1f}",
            ]
        )
    print(
        common.table(
            ["process", "wall s", "photos/s", "vs reference", "CPU s (user+sys)", "PSNR dB vs ref (min)"],
            rows,
        )
    )
    print()
    print(
        f"(median of {args.repeat} rounds; wall time includes Python start-up and imports, model load, decode, "
        "stylize, JPEG encode and write; PSNR of the decoded JPEGs, both encoded at quality 75)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
