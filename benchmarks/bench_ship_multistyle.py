"""The shipped styles in one network: the curve of a multi-style network under the shipped recipe.

The issue on shipped pictures lists one multi-style network for all shipped paintings as a
candidate recipe: its shared convolutions train on every step of every painting, so the same
CPU hours serve all styles at once. This trains one network of the shipped paintings
(`jobs/train.py --style A --style B ...`, one painting a step) in rounds, from the installed
starry_night (every slot starts as it), with the shipped recipe (ship_models.DEFAULT_RECIPE,
flags not listed here go to jobs/train.py), and after each round measures every painting's slot
as the shipped models are judged (`stylekit.train.ship.Judge`: chicago against the 2016
original, the held-out photos, one look at 356 and 1,424 px), beside the installed single-style
model. An interrupted run resumes from its checkpoint when run again.

    RAY_ADDRESS=local nice -n 19 python benchmarks/bench_ship_multistyle.py --rounds 4 --round-steps 1200

Prints one table row per painting and round; rows also go to OUTPUT/multistyle/curve.jsonl.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import common

sys.path.insert(0, str(common.REPO / "jobs"))
import ship_models
import torch

from stylekit.nn.modelio import load_model, one_style_of, save_model
from stylekit.train import ship

NAME = "multistyle"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--styles", default=",".join(ship_models.STYLES), help="the paintings, comma-separated"
    )
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--round-steps", type=int, default=1200, help="training steps per round (all paintings)"
    )
    parser.add_argument(
        "--output", default=str(common.REPO / "runs"), help="the run goes to OUTPUT/multistyle"
    )
    parser.add_argument(
        "--init-from", default=str(common.REPO / "stylekit" / "models" / "starry_night.safetensors")
    )
    parser.add_argument("--shared", default=str(ship_models.SHARED))
    args, train_flags = parser.parse_known_args()
    names = [s for s in args.styles.split(",") if s]
    shared = ship.Shared(Path(args.shared))
    paintings = {n: common.REPO / "stylekit" / "examples" / "styles" / f"{n}.jpg" for n in names}
    run = Path(args.output) / NAME
    flags = ship.merge_flags(ship_models.DEFAULT_RECIPE, train_flags)
    judges = {n: ship.Judge(n, paintings[n], shared) for n in names}
    print(common.header("The shipped styles in one network", torch.device("cpu")))
    print(f"# recipe: {' '.join(flags)}; from {args.init_from}")
    print(
        "| style | steps (per painting) | chicago grain / content / style | held-out | 356 / 1,424 px | shortfall |"
    )
    print("|---|---|---|---|---|---|")
    for n in names:
        installed = common.REPO / "stylekit" / "models" / f"{n}.safetensors"
        if installed.is_file():
            print(f"| {n} | installed | {judges[n].measure(str(installed)).row()} |", flush=True)
    for _ in range(args.rounds):
        target = ship.steps_done(run) + args.round_steps
        cmd = [
            sys.executable, str(common.REPO / "jobs" / "train.py"),
            *(a for n in names for a in ("--style", str(paintings[n]))),
            "--data", str(Path(args.shared) / "train-mini"), "--output", args.output, "--name", NAME,
            "--init-from", args.init_from, "--max-steps", str(target), "--checkpoint-every", "100", *flags,
        ]  # fmt: skip
        print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
        subprocess.run(cmd, check=True)
        loaded = load_model(str(run / "model.safetensors"))
        with tempfile.TemporaryDirectory() as tmp:
            for n in names:
                slot = one_style_of(loaded, n)
                path = Path(tmp) / f"{n}.safetensors"
                save_model(str(path), slot.model, slot.metadata, dtype=torch.float16)  # as shipped
                measured = judges[n].measure(str(path))
                print(f"| {n} | {target} ({target // len(names)}) | {measured.row()} |", flush=True)
                with open(run / "curve.jsonl", "a") as f:
                    f.write(json.dumps({"style": n, "steps": target, "row": measured.row()}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
