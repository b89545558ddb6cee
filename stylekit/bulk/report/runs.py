"""What a report says about a bulk run, read from its manifest under OUT/_manifest/run=<id>/.

Parts are read one at a time and folded into bounded summaries (counts, failure groups with a
few keys each, per-second throughput, a reservoir of sampled rows), so a night of millions of
inputs takes the memory of one part."""

from __future__ import annotations

import collections
import io
import os
import random
import re
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from stylekit.bulk.plan.layout import MANIFEST_DIR
from stylekit.bulk.plan.manifest import FAILED, OK, SKIPPED
from stylekit.errors import StylekitError
from stylekit.files import storage
from stylekit.redact import describe, redact
from stylekit.video.media import is_video_key

RUN_PREFIX = "run="
STATUSES = (OK, FAILED, SKIPPED)
KEYS_PER_FAILURE = 20  # keys listed under each error; the rest are counted
SAMPLE_MAX_INPUT_BYTES = 40 * 1024 * 1024  # an input larger than this is not read for a thumbnail


def manifest_root(output: str) -> str:
    return storage.join(output.rstrip("/"), MANIFEST_DIR)


def run_dir(output: str, run_id: str) -> str:
    return storage.join(manifest_root(output), RUN_PREFIX + run_id)


def list_runs(output: str, options: storage.StorageOptions) -> list[str]:
    """Run ids under OUT/_manifest/, oldest first (ids start with their UTC start time)."""
    names = storage.list_folders(manifest_root(output), options)
    return sorted(n.removeprefix(RUN_PREFIX) for n in names if n.startswith(RUN_PREFIX))


def _parts(output: str, run_id: str, options: storage.StorageOptions) -> list[str]:
    folder = run_dir(output, run_id)
    return [
        storage.join(folder, k) for k in sorted(storage.list_files(folder, options)) if k.endswith(".parquet")
    ]


def _read(
    part: str, options: storage.StorageOptions, columns: list[str], optional: tuple[str, ...] = ()
) -> pq.Table:
    """`columns` of a part, and those of `optional` it has (a part written before them has
    none: they read as nulls)."""
    try:
        parquet = pq.ParquetFile(io.BytesIO(storage.read_bytes(part, options)))
        names = set(parquet.schema_arrow.names)
        table = parquet.read(columns=[*columns, *(c for c in optional if c in names)])
        for name in optional:
            if name not in names:
                table = table.append_column(name, pa.nulls(table.num_rows, pa.string()))
        return table
    except (pa.ArrowException, OSError) as e:  # truncated, not Parquet, another tool's columns
        raise StylekitError(
            f"{redact(part)} is not a manifest part stylekit can read ({describe(e)}); move it "
            "out of _manifest/ (the report then leaves its rows out) or restore it from a backup"
        ) from None


def status_counts(output: str, run_id: str, options: storage.StorageOptions) -> dict[str, int]:
    counts: collections.Counter[str] = collections.Counter()
    for part in _parts(output, run_id, options):
        counts.update(_read(part, options, ["status"]).column("status").to_pylist())
    return {s: counts.get(s, 0) for s in STATUSES}


_NOISE = re.compile(r"0x[0-9a-fA-F]+|\b\d{3,}\b")


def error_group(error: str) -> str:
    """An error message with what differs between occurrences of one cause (object addresses,
    long numbers such as sizes) masked, so they group together."""
    return _NOISE.sub("…", error.strip())


@dataclass
class FailureGroup:
    error: str
    count: int = 0
    keys: list[str] = field(default_factory=list)


@dataclass
class Sample:
    input: str
    output: str
    width: int
    height: int


@dataclass
class RunSummary:
    """One run, folded from its manifest."""

    run_id: str
    counts: dict[str, int]
    input_bytes: int
    output_bytes: int
    model_digest: str
    input_root: str
    output_root: str
    started_ms: int | None  # earliest finished_at (the listing's rows come first)
    ended_ms: int | None
    done_per_second: dict[int, int]  # seconds since started_ms -> rows stylized (ok or failed)
    failures: list[FailureGroup]  # largest group first
    samples: list[Sample]
    videos: int = 0
    # With several --style selections: each selection's rows by status ({} with one).
    per_style: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def summarize(output: str, run_id: str, options: storage.StorageOptions, samples: int = 12) -> RunSummary:
    """Fold one run's manifest; `samples` ok photo rows are drawn at random (seeded by the run
    id, so a rebuilt report shows the same ones)."""
    parts = _parts(output, run_id, options)
    if not parts:
        raise StylekitError(f"run {run_id} has no manifest parts under {run_dir(output, run_id)}")
    counts: collections.Counter[str] = collections.Counter()
    groups: dict[str, FailureGroup] = {}
    finished: collections.Counter[int] = collections.Counter()  # finished_at (ms) -> rows done
    styles: dict[str, collections.Counter[str]] = {}
    reservoir: list[Sample] = []
    seen = 0
    rng = random.Random(run_id)
    in_bytes = out_bytes = videos = 0
    digest = input_root = ""
    first = last = None
    columns = ["input", "output", "status", "error", "input_bytes", "output_bytes", "finished_at"]
    columns += ["width", "height", "model_digest", "frames"]
    for part in parts:
        table = _read(part, options, columns, optional=("style",))
        cols = {c: table.column(c).to_pylist() for c in (*columns, "style")}
        for i, status in enumerate(cols["status"]):
            counts[status] += 1
            if cols["style"][i]:
                styles.setdefault(cols["style"][i], collections.Counter())[status] += 1
            at = cols["finished_at"][i]
            ms = int(at.timestamp() * 1000) if at is not None else None
            if ms is not None:
                first = ms if first is None else min(first, ms)
                last = ms if last is None else max(last, ms)
            digest = digest or (cols["model_digest"][i] or "")
            uri = cols["input"][i]
            # Character-wise (URIs, not paths); cut at the last '/' by _common_root.
            input_root = uri if not input_root else os.path.commonprefix([input_root, uri])  # noqa: RUF071
            if status == SKIPPED:
                continue
            if ms is not None:
                finished[ms] += 1
            in_bytes += cols["input_bytes"][i] or 0
            if status == FAILED:
                text = cols["error"][i] or "unknown error"
                group = groups.setdefault(error_group(text), FailureGroup(text))
                group.count += 1
                if len(group.keys) < KEYS_PER_FAILURE:
                    group.keys.append(cols["input"][i])
                continue
            out_bytes += cols["output_bytes"][i] or 0
            if cols["frames"][i] or is_video_key(cols["output"][i]):
                videos += 1
                continue
            if (cols["input_bytes"][i] or 0) > SAMPLE_MAX_INPUT_BYTES:
                continue
            seen += 1  # reservoir sampling: each ok photo equally likely, memory bounded
            sample = Sample(
                cols["input"][i], cols["output"][i], cols["width"][i] or 0, cols["height"][i] or 0
            )
            if len(reservoir) < samples:
                reservoir.append(sample)
            elif (j := rng.randrange(seen)) < samples:
                reservoir[j] = sample
    per_second: collections.Counter[int] = collections.Counter()
    for ms, n in finished.items():
        per_second[(ms - (first or ms)) // 1000] += n
    return RunSummary(
        run_id=run_id,
        counts={s: counts.get(s, 0) for s in STATUSES},
        input_bytes=in_bytes,
        output_bytes=out_bytes,
        model_digest=digest,
        input_root=_common_root(input_root),
        output_root=output.rstrip("/"),
        started_ms=first,
        ended_ms=last,
        done_per_second=dict(per_second),
        failures=sorted(groups.values(), key=lambda g: (-g.count, g.error)),
        samples=sorted(reservoir, key=lambda s: s.input),
        videos=videos,
        per_style={name: {s: c.get(s, 0) for s in STATUSES} for name, c in styles.items()},
    )


def _common_root(prefix: str) -> str:
    """The folder every input lies below: their common prefix, cut at its last '/'."""
    return prefix.rsplit("/", 1)[0] if "/" in prefix else prefix
