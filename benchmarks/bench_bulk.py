"""The bulk job against the plain command: the same images, the same machine, whole processes.

    python benchmarks/bench_bulk.py                                  # 120 photos, 2000 tiny
    python benchmarks/bench_bulk.py --photos 40 --tiny 500 --rounds 2
    python benchmarks/bench_bulk.py --photos 2000 --photo-size 1280x800 --tiny 0   # a GPU node
    python benchmarks/bench_bulk.py --work /work/exp/bulk           # keep the inputs there

For each set of inputs (--photos photos of --photo-size, JPEG q90 made from the bundled
photos; --tiny noise JPEGs of --tiny-size), each command runs as a fresh process, one after
the other in each round (the order reversed every other round, so the machine's load hits
each alike):

- plain: `python -m stylekit stylize --model M --output OUT/ FILE...` (no Ray);
- bulk: `python jobs/stylize.py --model M --input IN --output OUT --engine local`: what the
  job's default (`--engine auto`) picks on a machine of at most 5 CPUs with no GPU and no Ray
  cluster to join, its blocks in its own process (given explicitly, so that a cluster someone
  runs on the machine is never joined);
- bulk on Ray: the same with `--engine ray` on a fresh local Ray: the actor pool, as on a cluster.

Reported per command: wall seconds from the process start to its exit, images/s over that, the
ratio to the plain command's images/s (the target: >= 0.9), the first output's time from the
process start (the fixed cost: imports, model, Ray's start) and the CPU seconds of every
process of the run (Ray's included).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import common
import harness

COMMANDS = ("plain", "bulk", "bulk on Ray")


def commands(model: str, files: list[Path], work: Path, bulk_args: list[str]) -> dict[str, list[str]]:
    folder = files[0].parents[1]  # make_inputs puts them in sub-folders of 1000
    bulk = [sys.executable, "jobs/stylize.py", "--model", model, "--input", str(folder), *bulk_args]
    return {
        "plain": [sys.executable, "-m", "stylekit", "stylize", "--model", model,
                  "--output", f"{work / 'out-plain'}/", *map(str, files)],
        "bulk": [*bulk, "--output", str(work / "out-bulk"), "--engine", "local"],
        "bulk on Ray": [*bulk, "--output", str(work / "out-bulk on Ray"), "--engine", "ray"],
    }  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=int, default=120, help="photos (0: none)")
    p.add_argument("--photo-size", default="512x340")
    p.add_argument("--tiny", type=int, default=2000, help="tiny noise images (0: none)")
    p.add_argument("--tiny-size", type=int, default=48)
    p.add_argument("--commands", default=",".join(COMMANDS), help=f"comma list of {', '.join(COMMANDS)}")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--model", default="starry_night")
    p.add_argument("--work", default=None, help="folder for inputs (kept) and outputs (default: temp)")
    p.add_argument("--bulk-args", default="", help="extra flags for jobs/stylize.py")
    args = p.parse_args()
    chosen = [c.strip() for c in args.commands.split(",") if c.strip()]
    if unknown := set(chosen) - set(COMMANDS):
        p.error(f"--commands: unknown {', '.join(sorted(unknown))}; choose from {', '.join(COMMANDS)}")
    print(common.header("The bulk job against `python -m stylekit stylize`", common.pick_device("auto")))
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-bulk-"))
    (pw, ph) = common.parse_sizes(args.photo_size)[0]
    sets = []
    if args.photos:
        sets.append((f"{args.photos} photos {pw}x{ph}",
                     harness.make_inputs(work / f"photos{args.photos}-{pw}x{ph}", [(pw, ph)] * args.photos)))  # fmt: skip
    if args.tiny:
        side = args.tiny_size
        sets.append((f"{args.tiny} tiny {side}x{side}",
                     harness.make_inputs(work / f"tiny{args.tiny}-{side}", [(side, side)] * args.tiny, "noise")))  # fmt: skip
    results: dict[tuple[str, str], list[harness.Timed]] = {}
    for r in range(args.rounds):
        for name, files in sets:
            cmds = commands(args.model, files, work, args.bulk_args.split())
            order = chosen if r % 2 == 0 else chosen[::-1]
            for command in order:
                out = harness.run_process(cmds[command], outputs=work / f"out-{command}")
                if out.outputs != len(files):
                    raise SystemExit(f"{command} wrote {out.outputs} of {len(files)} outputs")
                results.setdefault((name, command), []).append(out)
                print(f"# round {r} {name} {command}: {out.wall:.1f} s, {out.cpu:.0f} CPU s", flush=True)
    med = statistics.median
    rows = []
    for name, files in sets:
        plain = med(t.wall for t in results[(name, "plain")]) if "plain" in chosen else None
        for command in chosen:
            runs = results[(name, command)]
            wall = med(t.wall for t in runs)
            against = "-" if plain is None else ("1" if command == "plain" else f"**{plain / wall:.2f}x**")
            rows.append([name, command, f"{wall:.1f}", f"{len(files) / wall:.1f}", against,
                         f"{med(t.first or 0.0 for t in runs):.1f}", f"{med(t.cpu for t in runs):.0f}"])  # fmt: skip
    headers = ["inputs", "command", "wall s", "images/s", "against plain"]
    print("\n" + common.table([*headers, "first output s (fixed cost)", "CPU s"], rows))
    print(f"\n(median of {args.rounds} round(s), whole processes, {os.cpu_count()} CPUs; first output: from the "
          "process start to the oldest output's mtime, the fixed cost; load average at end "
          + ", ".join(f"{x:.1f}" for x in os.getloadavg()) + ")")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
