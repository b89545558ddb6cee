"""The nightly job: the run itself (bulk/driver.py: plan -> engine -> manifest), then its morning
report (bulk/report/), which reads the finished manifest as `python -m stylekit report` would.
The report never fails a night: it is one warning line when it cannot be made."""

from __future__ import annotations

from stylekit.bulk.config import BulkConfig
from stylekit.bulk.driver import Summary, run_bulk
from stylekit.bulk.engines.engine import Engine
from stylekit.bulk.report.build import write_report_quietly
from stylekit.files import locations


def run_night(config: BulkConfig, engine: Engine | None = None) -> Summary:
    """`run_bulk(config)`, then OUT/_manifest/run=<id>/_report.html; returns the run's summary."""
    summary = run_bulk(config, engine)
    write_report_quietly(
        locations.root(config.output), summary.run_id, config.storage_options, locations.root(config.input)
    )
    return summary
