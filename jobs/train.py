"""Train a style: `python jobs/train.py --style STYLE --data DATA [--output OUT] [--name NAME] ...`

Several --style paintings (or a folder of them) train one network with a style for each; with
--init-from MODEL --add-style they are added to MODEL as new styles (docs/multistyle.md).
With no flags it trains on the bundled examples and writes under ./runs/. Runs on the Ray
cluster it was submitted to (`ray job submit -- python jobs/train.py ...`), a `ray start`
cluster on this machine, or, with neither, a local Ray it starts itself.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's stylekit first

from stylekit.cli import OneLineErrorParser, add_config_arguments, config_from_args, run_main
from stylekit.logs import setup_logging
from stylekit.train.config import TrainConfig


def main() -> int:
    parser = OneLineErrorParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, TrainConfig)
    args = parser.parse_args()
    setup_logging()
    config = config_from_args(TrainConfig, args)
    from stylekit.ray_env import own_console, shutdown_ray
    from stylekit.train.ray_job import run_training

    own_console()  # Ray's routine native lines stay off it (stylekit/stderr_filter.py)

    model = run_training(config)
    shutdown_ray()  # before the model's path: no late worker output may follow it
    print(model)
    return 0


if __name__ == "__main__":
    run_main(main)
