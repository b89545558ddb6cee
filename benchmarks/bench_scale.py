"""The bulk job at scale: does its cost grow linearly with the night, does it stream, and does a
rerun do only what is left? Tiny images, whole processes.

    python benchmarks/bench_scale.py                                     # 1000 and 4000 (quick)
    python benchmarks/bench_scale.py --sizes 10000 100000 --work /work/exp/scale
    python benchmarks/bench_scale.py --sizes 500 1000 2000 4000 --first-run-only   # streaming

For each size N: N tiny noise JPEGs (--side px, made once under --work/in<N>, kept), then,
each a whole job process on a fresh local Ray (`benchmarks/harness.py job`: `run_night` as
jobs/stylize.py calls it, on Ray, the actor pool as on a cluster, or with `--engine local`):

1. a first run into --work/out<N>: images/s (N over the whole process), the steady rate (after
   the first output), the first output's time from the process start and from the start of
   the photo pipeline (Ray up, listing and planning done: a job that streams keeps this flat
   as N grows), the driver's peak memory (its maximum resident set) and the object store's
   peak while the photos stream (0 without Ray);
2. a rerun with nothing to do: its time, against the first run's;
3. a run killed part way, then rerun: --redo of the outputs are deleted, a rerun is stopped
   with SIGTERM once about half of them are back, and a last rerun finishes. Then every input
   has exactly one output, no partial (temporary) file is left, and the last run's manifest
   has every input once, ok or skipped.
--first-run-only leaves out 2 and 3.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import common
import harness


def killed_and_rerun(job: list[str], out: Path, redo: float, n: int) -> dict[str, object]:
    import pyarrow.parquet as pq

    gone = sorted(harness.outputs_of(out))[:: max(1, round(1 / redo))]
    for p in gone:
        p.unlink()
    harness.run_process(job, stop_when=lambda: sum(p.exists() for p in gone) >= len(gone) // 2)
    back = sum(p.exists() for p in gone)
    summary = harness.run_process(job).json()["summary"]
    names = [p.relative_to(out).as_posix() for p in harness.outputs_of(out)]
    partial = [name for name in names if ".tmp" in name or name.startswith(".") or "/." in name]
    inputs = [r["input"] for r in pq.read_table(summary["manifest"]).to_pylist()]
    once = len(set(names)) == n and len(inputs) == len(set(inputs)) == n
    return {"deleted": len(gone), "back": back, "ok": summary["ok"], "skipped": summary["skipped"],
            "outputs": len(set(names)), "once": once, "partial": len(partial)}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000])
    p.add_argument("--side", type=int, default=48)
    p.add_argument("--model", default="starry_night")
    p.add_argument("--work", default=None, help="inputs (kept) and outputs; default a temp folder")
    p.add_argument("--redo", type=float, default=0.1, help="share of outputs deleted for the kill test")
    p.add_argument("--engine", default="ray", choices=["ray", "local"], help="the job's --engine")
    p.add_argument("--first-run-only", action="store_true", help="no rerun, no kill test")
    args = p.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-scale-"))
    print(common.header(f"The bulk job at scale: tiny images, whole processes, engine {args.engine}",
                        common.pick_device("cpu")))  # fmt: skip
    rows, kills, rates = [], [], []
    for n in args.sizes:
        src, out = work / f"in{n}", work / f"out{n}"
        harness.make_inputs(src, [(args.side, args.side)] * n, "noise")
        job = harness.job_command(src, out, args.model, args.engine)
        first = harness.run_process(job, outputs=out)
        result = first.json()
        if first.outputs != n:
            raise SystemExit(f"the job over {n} images wrote {first.outputs}")
        since_photos = (first.first_at or 0.0) - result["photos_start"]
        row = [f"{n:,}", f"{first.wall:.0f}", f"{n / first.wall:.1f}", f"{n / max(first.wall - (first.first or 0), 1e-9):.1f}",
               f"{first.first or 0:.1f}", f"{since_photos:.1f}", f"{result['rss'] / 2**20:.0f}",
               f"{result['store_peak'] / 2**20:.1f}"]  # fmt: skip
        if not args.first_run_only:
            again = harness.run_process(job)
            if again.json()["summary"]["skipped"] != n:
                raise SystemExit(
                    f"the rerun over {n} finished inputs did not skip them all: {again.json()['summary']}"
                )
            row += [f"{again.wall:.1f}", f"{100 * again.wall / first.wall:.1f}%"]
            kills.append((n, killed_and_rerun(job, out, args.redo, n)))
        rows.append(row)
        rates.append(n / first.wall)
        print(f"# {row} {kills[-1][1] if kills else ''}", flush=True)
    headers = ["inputs", "whole run s", "images/s", "steady images/s", "first output s",
               "first output s (from the photo pipeline's start)", "driver peak MB", "object store peak MiB"]  # fmt: skip
    if not args.first_run_only:
        headers += ["rerun, nothing to do s", "rerun / first"]
    print(common.table(headers, rows))
    if len(rows) > 1:
        print(f"\nimages/s at {args.sizes[-1]:,} / at {args.sizes[0]:,}: {rates[-1] / rates[0]:.2f}x")
    if kills:
        print()
        print(common.table(
            ["inputs", "outputs deleted", "back when killed (SIGTERM)", "last rerun: ok / skipped", "outputs",
             "each exactly once", "partial files"],
            [[f"{n:,}", f"{k['deleted']:,}", f"{k['back']:,}", f"{k['ok']:,} / {k['skipped']:,}", f"{k['outputs']:,}",
              "yes" if k["once"] else "NO", k["partial"]] for n, k in kills],
        ))  # fmt: skip
    print(f"\n(load average at end {', '.join(f'{x:.1f}' for x in os.getloadavg())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
