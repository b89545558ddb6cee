"""Stylize every image under a folder or bucket prefix, incrementally:

    python jobs/stylize.py --model MODEL --input IN --output OUT [options]

IN and OUT are local folders or fsspec URLs (s3://bucket/prefix, gs://..., az://...; an
S3-compatible store through --s3-endpoint or AWS_ENDPOINT_URL; credentials the standard AWS
way), MODEL a shipped model's name, a stylekit .safetensors or a reference-example .pth,
local or URI. Each result lands in OUT at its input's relative key; a rerun skips inputs
whose output is up to date, does new ones and retries failures. One row per input goes to the
Parquet manifest under OUT/_manifest/run=<run-id>/; the last line printed is a JSON summary.
Runs on the Ray cluster it was submitted to (`ray job submit -- python jobs/stylize.py ...`),
a `ray start` cluster on this machine, or, with neither, a local Ray it starts itself.

Exit status: 0 finished (failed inputs are failed rows, still 0
unless --strict), 1 --strict and an input failed, 2 refused (bad flag or value, a setting the
output refuses), 3 the run could not finish (a store or Ray failed), 4 stalled
(--stall-timeout), 5 another run holds the output's lease past --lease-wait, 6 the Ray
cluster's head stopped answering mid-run, 7 another run took the output's lease mid-run, 130
interrupted (SIGINT or SIGTERM). No output is ever written over an input, and no line printed
or stored shows a secret (docs/safety.md).
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's stylekit first

from stylekit import exitcodes
from stylekit.bulk.config import BulkConfig
from stylekit.cli import (
    OneLineErrorParser,
    add_config_arguments,
    config_from_args,
    interrupt_on_sigterm,
    run_main,
)
from stylekit.logs import setup_logging


def main() -> int:
    parser = OneLineErrorParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, BulkConfig)
    args = parser.parse_args()
    interrupt_on_sigterm()  # a stopped RayJob or deleted pod: lease released, exit INTERRUPTED
    setup_logging()
    config = config_from_args(BulkConfig, args)
    from stylekit.bulk.night import run_night
    from stylekit.ray_env import own_console, shutdown_ray

    own_console()  # Ray's routine native lines stay off it (stylekit/stderr_filter.py)
    summary = run_night(config)
    shutdown_ray()  # before the summary: no late Ray output may follow it
    print(summary.to_json(), flush=True)
    return exitcodes.INPUTS_FAILED if config.strict and summary.failed else exitcodes.OK


if __name__ == "__main__":
    run_main(main, fast_exit=True)  # after a run without Ray: no torch teardown (cli.exit_now)
