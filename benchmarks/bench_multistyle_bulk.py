"""Several styles in one night: one `jobs/stylize.py --style a,b,c` run against three
single-style runs (`--style a`, `--style b`, `--style c`, each into an OUT of its own) on the
same ~1 MP JPEGs, whole processes (harness.py's job, `run_night` as jobs/stylize.py calls it).

    python benchmarks/bench_multistyle_bulk.py                   # 48 photos, 3 styles
    python benchmarks/bench_multistyle_bulk.py --count 4 --size 64x48   # a smoke run

1. With the real network: wall seconds and CPU seconds of every process, for the one-read night
   and the three nights together. One read shares listing, reading, decoding, the imports and
   the model's load among the styles; the network's own cost is the same.
2. With the network taken out (harness.py's `identity`: the stylizing stage returns its
   input): CPU seconds per output, what the pipeline and codecs cost around the network. Each
   output is still encoded and written; reading and decoding is once per input instead of once
   per input and style.

The model is the shipped `wave` grown to three styles (nn/styles.grow): a three-style network
costs what a one-style one does per image. --engine local (the job's own process, what this
small machine runs) by default; --engine ray starts a local Ray per run.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the job runs (stylekit/__main__.py)

import argparse
import json
import shutil
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import common
import harness
import torch

STYLES = ("a", "b", "c")


def three_styles(path: Path) -> str:
    """The shipped `wave` with two more styles (the mean of its one: same cost per image)."""
    from stylekit.nn import styles, zoo
    from stylekit.nn.modelio import load_model, save_model

    net = styles.grow(load_model(zoo.resolve("wave")).model, len(STYLES) - 1)
    entries = [{"name": n, "painting": f"/paintings/{n}.jpg", "digest": "0" * 16} for n in STYLES]
    meta = {"format": "stylekit", "task": "style", "styles": json.dumps(entries)}
    save_model(str(path), net, meta)
    return str(path)


def night(src: Path, out: Path, model: str, style: str, engine: str, actor: str) -> harness.Timed:
    cmd = harness.job_command(src, out, model, engine=engine, actor=actor, style=style)
    timed = harness.run_process(cmd, outputs=out)
    summary = timed.json()["summary"]
    if summary["failed"]:
        raise SystemExit(f"{summary['failed']} outputs failed in {out}")
    return timed


def compare(
    src: Path, work: Path, model: str, engine: str, actor: str
) -> dict[str, tuple[float, float, int]]:
    """(wall, CPU seconds, outputs) of the one-read night and of the three single nights."""
    one = night(src, work / "one", model, ",".join(STYLES), engine, actor)
    singles = [night(src, work / f"single-{s}", model, s, engine, actor) for s in STYLES]
    three = (sum(t.wall for t in singles), sum(t.cpu for t in singles), sum(t.outputs for t in singles))
    return {"one read, --style a,b,c": (one.wall, one.cpu, one.outputs), "3 nights, --style a / b / c": three}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=48, help="input photos")
    p.add_argument("--size", default="", help="WxH of every photo (default: ~1 MP camera shapes)")
    p.add_argument("--engine", default="local", choices=["local", "ray"])
    p.add_argument("--work", default="", help="folder for inputs and outputs (default: a temporary one)")
    args = p.parse_args()
    shapes = common.parse_sizes(args.size) if args.size else harness.ONE_MP
    sizes = [shapes[i % len(shapes)] for i in range(args.count)]
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-multistyle-bulk-"))
    work.mkdir(parents=True, exist_ok=True)
    src = work / "in"
    harness.make_inputs(src, sizes)
    model = three_styles(work / "three.safetensors")
    t0 = time.time()
    real = compare(src, work, model, args.engine, "stylize")
    bare = compare(src, work, model, args.engine, "identity")
    title = "Several styles in one night: one read against a night per style"
    print(common.header(title, torch.device("cpu")))
    print(f"- ray {metadata.version('ray')}, stylekit's job through benchmarks/harness.py")
    print(f"\n{args.count} photos ({'x'.join(map(str, shapes[0])) if args.size else '~1 MP'} JPEG), "
          f"{len(STYLES)} styles, --engine {args.engine}; {time.time() - t0:.0f} s in all\n")  # fmt: skip
    rows = []
    (one_wall, one_cpu, _), (three_wall, three_cpu, _) = real.values()
    for name, (wall, cpu, outputs) in real.items():
        rows.append([name, "network", outputs, f"{wall:.1f}", f"{cpu:.1f}", f"{cpu / outputs:.3f}"])
    for name, (wall, cpu, outputs) in bare.items():
        rows.append([name, "identity", outputs, f"{wall:.1f}", f"{cpu:.1f}", f"{cpu / outputs:.3f}"])
    print(common.table(["night", "stylizing", "outputs", "wall s", "CPU s", "CPU s / output"], rows))
    (_, b_one, n_one), (_, b_three, n_three) = bare.values()
    print(
        f"\nWith the network: one read takes {three_wall / one_wall:.2f}x less wall time and "
        f"{three_cpu / one_cpu:.2f}x fewer CPU seconds than three nights. Without it: "
        f"{(b_three / n_three) / (b_one / n_one):.2f}x fewer CPU seconds per output."
    )
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
