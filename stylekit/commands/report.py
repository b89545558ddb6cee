"""`python -m stylekit report OUT [--run ID]`: rebuild a bulk run's morning report."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from stylekit.cli import add_config_arguments, config_from_args
from stylekit.errors import ConfigError
from stylekit.files import storage
from stylekit.redact import redact


@dataclass(frozen=True)
class ReportConfig:
    output: str = field(default="", metadata={"cli": False})  # the positional OUT
    run: str | None = field(
        default=None,
        metadata={
            "help": "the run id (a run=<id> folder under OUT/_manifest/)",
            "default_text": "the newest",
        },
    )
    samples: int = field(default=12, metadata={"help": "photos shown input beside output (thumbnails)"})
    storage_options: storage.StorageOptions = field(default_factory=storage.StorageOptions)

    def __post_init__(self) -> None:
        if not self.output:
            raise ConfigError("OUT is required: the --output of a bulk run (a folder or URL)")
        if not 0 <= self.samples <= 100:
            raise ConfigError(f"--samples must be 0-100 (got {self.samples})")


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "report",
        help="rebuild a bulk run's morning report (OUT/_manifest/run=<id>/_report.html)",
        description=(
            "Rebuild the HTML report of a bulk run from its manifest: counts by status against the "
            "nights before, failures grouped by error, throughput over the run, and a sample of "
            "inputs beside their outputs. One self-contained file, written beside the run's manifest."
        ),
    )
    p.add_argument(
        "output", metavar="OUT", help="the bulk run's --output (a folder or URL: s3://, gs://, ...)"
    )
    add_config_arguments(p, ReportConfig)
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    from stylekit.bulk.report.build import build_report

    config = config_from_args(ReportConfig, args)
    location = build_report(config.output, config.run, config.storage_options, config.samples)
    print(redact(location))
    return 0
