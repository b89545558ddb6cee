"""CPU end to end: stylizing a folder of photos as a whole process (start Python, load the
model, decode, stylize, encode, write), the reference example against `python -m stylekit`.

    python benchmarks/bench_cpu.py                     # 8 photos of 1280x800, 3 rounds
    python benchmarks/bench_cpu.py --count 4 --width 640 --height 400 --repeat 1
    python benchmarks/bench_cpu.py --mix                 # 12 photos of 0.1-1 MP, mixed sizes

Reference: one process running the example's stylize() body over every file of the folder (its
own script is one image per process; this loads the model once, which favours it): PIL decode,
ToTensor()*255, the seed network fp32 under no_grad, clamp, uint8, PIL JPEG save (quality 75).
stylekit: `python -m stylekit stylize --model M --output OUT --format jpg --quality 75 IN...`
(quality 75, so both pay for the same JPEG encoding). Both read the same reference-format .pth.
onnxruntime: the same loop over the same weights exported to ONNX by `python -m stylekit export`
(default CPU provider and threads; leave it out with --no-onnx). Rounds rotate the processes
(benchmarks/harness.py times each): wall time per process (median), CPU time (user + sys) of
the process and all it started, and the PSNR of each one's decoded JPEGs against the reference's.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import common
import harness
import numpy as np
import torch
from PIL import Image

from stylekit.infer import srmetrics

REFERENCE_SCRIPT = textwrap.dedent(
    '''
    """The pytorch/examples fast_neural_style stylize(), over every file named on the command line."""
    import re, sys
    import torch
    from torchvision import transforms
    from PIL import Image
    sys.path.insert(0, sys.argv[1])
    from reference import RefTransformerNet as TransformerNet

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


ORT_SCRIPT = textwrap.dedent(
    '''
    """The same loop on onnxruntime: the model exported by `python -m stylekit export` (same
    weights), PIL decode, float32 NCHW in [0, 255], clamp, uint8, PIL JPEG save (quality 75)."""
    import sys
    import numpy as np
    import onnxruntime as ort
    from PIL import Image

    model_path, out_dir, inputs = sys.argv[1], sys.argv[2], sys.argv[3:]
    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for path in inputs:
        x = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32).transpose(2, 0, 1)[None]
        y = session.run(None, {name: np.ascontiguousarray(x)})[0][0]
        img = np.clip(y, 0, 255).astype(np.uint8).transpose(1, 2, 0)
        Image.fromarray(img).save(out_dir + "/" + path.rsplit("/", 1)[-1], quality=75)
    '''
)

# --mix: ordinary photo sizes from 0.1 to 1 MP, landscape and portrait (12 photos, 6.6 MP).
MIX_SIZES = [
    (320, 320), (480, 320), (400, 600), (640, 480), (600, 800), (800, 600),
    (960, 640), (720, 960), (1024, 683), (1000, 1000), (1200, 800), (1280, 720),
]  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=8, help="photos in the folder")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=800)
    mix = f"{len(MIX_SIZES)} photos of mixed sizes, 0.1-1 MP (ignores --count etc.)"
    p.add_argument("--mix", action="store_true", help=mix)
    p.add_argument("--no-onnx", action="store_true", help="leave out the onnxruntime process")
    p.add_argument("--repeat", type=int, default=3, help="rounds (each runs every process)")
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for both (default: unset)")
    p.add_argument(
        "--model", default=None, help="a reference .pth (default: calibrated random, saved as .pth)"
    )
    args = p.parse_args()
    env = harness.job_env(**({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}))
    sizes = MIX_SIZES if args.mix else [(args.width, args.height)] * args.count
    megapixels = sum(w * h for w, h in sizes) / 1e6
    what = f"{args.count} photos of {args.width}x{args.height}"
    what = f"{len(sizes)} photos of mixed sizes, {megapixels:.1f} MP" if args.mix else what
    print(common.header(f"CPU, whole process: {what}", torch.device("cpu")))
    with tempfile.TemporaryDirectory(prefix="bench-cpu-") as tmp:
        root = Path(tmp)
        inputs = [str(p) for p in harness.make_inputs(root / "in", sizes, quality=92)]
        model_path = args.model
        if not model_path:
            model_path = str(root / "model.pth")
            torch.save(common.calibrated_model(0).state_dict(), model_path)
        script = root / "reference_stylize.py"
        script.write_text(REFERENCE_SCRIPT)
        out_ref, out_sk, out_ort = root / "out-ref", root / "out-sk", root / "out-ort"
        out_ref.mkdir()
        out_ort.mkdir()
        commands = {
            "reference": [sys.executable, str(script), str(common.TESTS), model_path, str(out_ref), *inputs],
            "stylekit": [
                sys.executable, "-m", "stylekit", "stylize", "--model", model_path, "--output", str(out_sk),
                "--format", "jpg", "--quality", "75", *inputs,
            ],
        }  # fmt: skip
        if not args.no_onnx:  # exported once, outside the timing
            onnx_path = root / "model.onnx"
            export = [sys.executable, "-m", "stylekit", "export", "--model", model_path, "--format", "onnx",
                      "--output", str(onnx_path)]  # fmt: skip
            subprocess.run(export, check=True, capture_output=True, cwd=common.REPO)
            (root / "ort_stylize.py").write_text(ORT_SCRIPT)
            ort = [sys.executable, str(root / "ort_stylize.py"), str(onnx_path), str(out_ort)]
            commands["onnxruntime"] = [*ort, *inputs]
        walls: dict[str, list[float]] = {k: [] for k in commands}
        cpus: dict[str, list[float]] = {k: [] for k in commands}
        for r in range(args.repeat):
            for name in list(commands)[r % 2 :] + list(commands)[: r % 2]:
                timed = harness.run_process(commands[name], env=env)
                walls[name].append(timed.wall)
                cpus[name].append(timed.cpu)
        outs = {"stylekit": out_sk, "onnxruntime": out_ort}
        scores: dict[str, list[float]] = {name: [] for name in outs if name in commands}
        for path in inputs:
            name = Path(path).name
            b = np.asarray(Image.open(out_ref / name).convert("RGB"))
            for process in scores:
                a = np.asarray(Image.open(outs[process] / name).convert("RGB"))
                # The reference network returns sides rounded up to a multiple of 4 (683 -> 684
                # rows); the others return the input's size: compare the common part.
                h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
                scores[process].append(srmetrics.psnr(a[:h, :w], b[:h, :w]))
    ref_wall = common.median(walls["reference"])
    sk_wall = common.median(walls["stylekit"])
    rows = []
    for name in commands:
        wall = common.median(walls[name])
        psnr = "(target)" if name == "reference" else f"{min(scores[name]):.1f}"
        rates = [f"{len(sizes) / wall:.2f}", f"{ref_wall / wall:.2f}x", f"{wall / sk_wall:.2f}x"]
        wall_text = f"{wall:.1f} (±{common.spread(walls[name])})"
        rows.append([name, wall_text, *rates, f"{common.median(cpus[name]):.1f}", psnr])
    columns = ["process", "wall s", "photos/s", "vs reference", "stylekit's speedup over it",
               "CPU s (user+sys)", "PSNR dB vs ref (min)"]  # fmt: skip
    print(common.table(columns, rows))
    if args.mix:
        print("\nsizes: " + ", ".join(f"{w}x{h}" for w, h in sizes))
    print(
        f"\n(median of {args.repeat} rounds; wall time includes Python start-up and imports, model load, decode, "
        "stylize, JPEG encode and write; PSNR of the decoded JPEGs, both encoded at quality 75)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
