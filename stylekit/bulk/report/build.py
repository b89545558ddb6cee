"""Build and write a run's report: OUT/_manifest/run=<id>/_report.html.

The leading underscore keeps the run's folder a Parquet dataset: readers of OUT/_manifest/
(pyarrow, Ray Data, Spark) skip files starting with "_" or ".", and would fail on any other
file that is not Parquet."""

from __future__ import annotations

import logging

from stylekit.bulk.report import page, runs, thumbs
from stylekit.errors import StylekitError
from stylekit.files import storage
from stylekit.redact import describe, redact

log = logging.getLogger(__name__)

REPORT_FILE = "_report.html"
HISTORY_RUNS = 14  # this night and the 13 before it


def report_location(output: str, run_id: str) -> str:
    return storage.join(runs.run_dir(output, run_id), REPORT_FILE)


def build_report(
    output: str,
    run_id: str | None = None,
    options: storage.StorageOptions = storage.StorageOptions(),
    samples: int = 12,
    input_root: str | None = None,
) -> str:
    """Write the report of run `run_id` (default: the newest) under `output`; returns where.
    The manifest's URIs are redacted: the sampled photos are read below `output` and below
    `input_root` (the run's own --input; default the manifest's, fine when it holds no secret)."""
    options = options.resolved()
    known = runs.list_runs(output, options)
    if not known:
        raise StylekitError(
            f"no bulk runs under {redact(runs.manifest_root(output))}; give the --output of a jobs/stylize.py run"
        )
    run_id = run_id or known[-1]
    if run_id not in known:
        shown = ", ".join(known[-5:])
        raise StylekitError(f"no run {run_id!r} under {redact(runs.manifest_root(output))} (newest: {shown})")
    summary = runs.summarize(output, run_id, options, samples=samples)
    index = known.index(run_id)
    history = [
        (r, runs.status_counts(output, r, options)) for r in known[max(0, index - HISTORY_RUNS + 1) : index]
    ]
    history = [*reversed(history)]
    history.insert(0, (run_id, summary.counts))
    roots = {redact(root.rstrip("/")): root for root in (output, input_root) if root}
    pairs = thumbs.pairs(summary.samples, summary.input_root, options, readable=roots)
    location = report_location(output, run_id)
    storage.write_bytes(location, page.render(summary, history, pairs).encode(), options)
    return location


def write_report_quietly(
    output: str, run_id: str, options: storage.StorageOptions, input_root: str | None = None
) -> str | None:
    """The bulk job's last step: the report, or one warning line if it cannot be made (a
    report never fails a night)."""
    try:
        location = build_report(output, run_id, options, input_root=input_root)
    except Exception as e:
        log.warning("report not written (the run itself is complete): %s", describe(e))
        return None
    log.info("report: %s", redact(location))
    return location
