"""`python -m stylekit COMMAND ...`: parses the command line and hands it to the command's
module under `stylekit/commands/`, which owns its flags and its work."""

from __future__ import annotations

import os
import sys

# Before torch loads its OpenMP runtime: OpenMP workers that spin-wait after each parallel
# region take the cores from NNPACK's own thread pool, which runs the convolutions of the CPU
# fast path (stylekit/infer/fastpath.py); sleeping at once makes 512x512 on 2 cores ~1.2x faster
# (benchmarks/RESULTS.md). Training processes keep the default: many small OpenMP regions
# there, and waking sleeping workers costs more than it saves.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


from stylekit import commands
from stylekit.cli import OneLineErrorParser, run_main
from stylekit.logs import setup_logging

DESCRIPTION = (
    "stylekit on one machine: stylize photos or a video with a trained model, compare models on "
    "a contact sheet, optimise an image the slow way, export a model, or rebuild a bulk run's "
    "report. `python -m stylekit COMMAND --help` says more of each."
)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = OneLineErrorParser(prog="python -m stylekit", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in commands.modules(argv):
        p = command.register(sub)
        p.error = parser.error  # type: ignore[method-assign]
    args = parser.parse_args(argv)
    setup_logging()
    return int(args.handler(args) or 0)


def entry() -> None:
    """Console-script entry point: `stylekit stylize ...`."""
    run_main(main, fast_exit=True)


if __name__ == "__main__":
    run_main(main, fast_exit=True)
