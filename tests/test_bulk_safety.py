"""The bulk job keeps a photographer's library safe (issue 25), on the local engine (no Ray): a
rerun redoes an input replaced by an older-dated photo and keeps one only touched, finds and
records outputs no row recorded; --max-bytes fails a large input before reading it; dangling
links, unreadable folders and links out of IN are failed rows (followed with --follow-links);
a damaged settings file, manifest part or shipped model is one line; a run whose lease is taken
stops at once with one line; the manifest is written every few seconds."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import PYTHON, REPO, make_bucket
from stylekit import exitcodes
from stylekit.bulk.config import BulkConfig
from stylekit.bulk.plan import manifest as manifest_module
from stylekit.bulk.plan.layout import RunLayout, new_run_id
from stylekit.bulk.plan.lease import LEASE_FILE, LeaseLost, LeaseRecord
from stylekit.bulk.plan.manifest import ManifestWriter, manifest_table
from stylekit.cli import config_from_flags
from stylekit.errors import StylekitError
from stylekit.files import storage

JOB = str(REPO / "jobs" / "stylize.py")


def _png(seed: int, side: int = 12) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)).save(
        buf, "PNG"
    )
    return buf.getvalue()


def _bulk(**kw: Any) -> Any:
    from stylekit.bulk.driver import run_bulk

    kw.setdefault("model", "starry_night")
    return run_bulk(config_from_flags(BulkConfig, engine="local", progress_every=60.0, **kw))


def _rows(summary: Any) -> dict[str, dict[str, Any]]:
    rows = [
        r for p in sorted(Path(summary.manifest).glob("part-*.parquet")) for r in pq.read_table(p).to_pylist()
    ]
    return {r["input"].rsplit("/", 1)[-1]: r for r in rows}


@pytest.fixture
def library(tmp_path: Path) -> Path:
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        (src / f"p{i}.png").write_bytes(_png(i))
    return src


def test_reruns_know_their_inputs_whatever_the_mtime_says(library: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = _bulk(input=str(library), output=str(out))
    assert (first.ok, first.failed) == (3, 0)
    rows = _rows(first)
    assert all(
        r["input_version"].startswith(f"{r['input_bytes']} ") and len(r["input_hash"]) == 32
        for r in rows.values()
    )
    made = {p.name: p.read_bytes() for p in out.glob("*.png")}

    # p0 replaced by another photo dated before the output (a restore, `cp -p`, `touch -d`);
    # p1 only touched (the same bytes, a new mtime and ctime); p2 left alone.
    replacement = tmp_path / "restored.png"
    replacement.write_bytes(_png(99))
    os.utime(replacement, (946684800, 946684800))  # 2000-01-01
    shutil.copy2(replacement, library / "p0.png")
    os.utime(library / "p1.png")
    again = _bulk(input=str(library), output=str(out))
    assert (again.ok, again.skipped, again.failed) == (1, 2, 0)
    assert (out / "p0.png").read_bytes() != made["p0.png"]
    assert {n: (out / n).read_bytes() for n in ("p1.png", "p2.png")} == {
        n: made[n] for n in ("p1.png", "p2.png")
    }
    rows = _rows(again)
    assert (
        rows["p1.png"]["status"] == "skipped"
        and rows["p1.png"]["input_hash"] == _rows(first)["p1.png"]["input_hash"]
    )

    # The same night again: nothing to do, nothing read.
    third = _bulk(input=str(library), output=str(out))
    assert (third.ok, third.skipped) == (0, 3)


def test_run_ids_sort_in_the_order_runs_start_within_one_second() -> None:
    # A rerun reads the newest earlier run's records first, by sorted id: runs of a few tiny
    # photos start within one second of each other.
    ids = []
    for _ in range(5):
        ids.append(new_run_id())
        time.sleep(0.002)  # the ids' resolution is a millisecond
    assert sorted(ids) == ids and len(set(ids)) == 5


def test_outputs_without_a_row_are_found_and_recorded_by_the_next_run(
    library: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out"
    first = _bulk(input=str(library), output=str(out))
    shutil.rmtree(first.manifest)  # the run ended before its rows were written
    with caplog.at_level("INFO"):
        again = _bulk(input=str(library), output=str(out))
    assert (again.ok, again.skipped) == (0, 3)
    assert "3 output(s) had no record" in caplog.text
    assert all(r["input_version"] for r in _rows(again).values())  # recorded now


def test_an_s3_rerun_compares_etags(s3_server: str, tmp_path: Path) -> None:
    import boto3

    make_bucket("etags")
    for i in range(2):
        storage.write_bytes(f"s3://etags/in/p{i}.png", _png(i))
    common = {"input": "s3://etags/in", "output": "s3://etags/out"}
    first = _bulk(**common)
    assert first.ok == 2
    parts = [
        storage.join(first.manifest, k) for k in storage.list_files(first.manifest) if k.endswith(".parquet")
    ]
    rows = [r for p in parts for r in pq.read_table(io.BytesIO(storage.read_bytes(p))).to_pylist()]
    head = boto3.client("s3").head_object(Bucket="etags", Key="in/p0.png")
    (row,) = [r for r in rows if r["input"].endswith("p0.png")]
    assert row["input_version"] == f"{head['ContentLength']} {head['ETag'].strip(chr(34))}"
    storage.write_bytes("s3://etags/in/p0.png", _png(0))  # the same bytes again: the same ETag
    storage.write_bytes("s3://etags/in/p1.png", _png(7))  # other bytes
    again = _bulk(**common)
    assert (again.ok, again.skipped) == (1, 1)


def test_max_bytes_fails_a_large_input_before_reading_it(
    library: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = library / "big.png"
    big.write_bytes(_png(5, side=64))
    read: list[str] = []
    real = storage.read_bytes
    monkeypatch.setattr(
        storage, "read_bytes", lambda loc, *a, **k: read.append(str(loc)) or real(loc, *a, **k)
    )
    summary = _bulk(input=str(library), output=str(tmp_path / "out"), max_bytes=2000)
    assert (summary.ok, summary.failed) == (3, 1)
    row = _rows(summary)["big.png"]
    assert row["status"] == "failed" and "over --max-bytes 2,000" in row["error"]
    assert not [loc for loc in read if loc.endswith("big.png")]
    with pytest.raises(StylekitError, match="--max-bytes"):
        config_from_flags(BulkConfig, input="in", output="out", max_bytes=0)


def test_links_and_unreadable_folders_are_failed_rows(
    library: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "e.png").write_bytes(_png(8))
    (library / "dangling.png").symlink_to(tmp_path / "gone.png")
    (library / "outside.png").symlink_to(elsewhere / "e.png")
    (library / "trip").symlink_to(elsewhere)
    (library / "inside.png").symlink_to(library / "p0.png")  # a link within IN: an input
    locked = library / "locked"
    locked.mkdir()
    (locked / "l.png").write_bytes(_png(9))
    if os.geteuid() == 0:  # root lists any folder: the refusal is the kernel's, made here
        real = os.scandir

        def scandir(path: Any = ".") -> Any:
            if not isinstance(path, int) and os.fspath(path) == str(locked):
                raise PermissionError(13, "Permission denied", str(path))
            return real(path)

        monkeypatch.setattr(os, "scandir", scandir)
    else:
        locked.chmod(0)
    try:
        summary = _bulk(input=str(library), output=str(tmp_path / "out"))
        followed = _bulk(input=str(library), output=str(tmp_path / "out2"), follow_links=True)
    finally:
        locked.chmod(0o755)
    rows = {r["input"][len(str(library)) + 1 :]: r for r in _rows_all(summary)}
    failed = {k: r["error"] for k, r in rows.items() if r["status"] == "failed"}
    assert set(failed) == {"dangling.png", "outside.png", "trip/", "locked/"}, failed
    assert "a link to nothing" in failed["dangling.png"] and "--follow-links" in failed["outside.png"]
    assert "--follow-links" in failed["trip/"] and "cannot list this folder" in failed["locked/"]
    assert rows["inside.png"]["status"] == "ok"
    assert (summary.ok, summary.failed) == (4, 4)
    names = {p.relative_to(tmp_path / "out2").as_posix() for p in (tmp_path / "out2").rglob("*.png")}
    assert {"outside.png", "trip/e.png"} <= names and followed.failed == 2  # dangling, locked


def _rows_all(summary: Any) -> list[dict[str, Any]]:
    return [
        r for p in sorted(Path(summary.manifest).glob("part-*.parquet")) for r in pq.read_table(p).to_pylist()
    ]


def test_damaged_state_files_are_one_line_naming_them(library: Path, tmp_path: Path) -> None:
    from stylekit.__main__ import main

    out = tmp_path / "out"
    first = _bulk(input=str(library), output=str(out))
    settings = out / "_manifest" / "_outputs.json"
    settings.write_text('{"model_digest": ')
    with pytest.raises(StylekitError) as e:
        _bulk(input=str(library), output=str(out))
    assert str(settings) in str(e.value) and "Restore it" in str(e.value) and "\n" not in str(e.value)
    assert not (out / "_manifest" / LEASE_FILE).exists()
    part = next(Path(first.manifest).glob("part-*.parquet"))
    part.write_bytes(part.read_bytes()[: len(part.read_bytes()) // 2])
    with pytest.raises(StylekitError) as e:
        main(["report", str(out)])
    assert str(part) in str(e.value) and "move it out of _manifest/" in str(e.value)


def test_a_damaged_shipped_model_is_refused(
    library: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stylekit.nn import zoo

    models = tmp_path / "models"
    shutil.copytree(zoo.models_dir(), models)
    data = bytearray((models / "starry_night.safetensors").read_bytes())
    data[-1] ^= 0xFF  # one weight's bits, the file still loads
    (models / "starry_night.safetensors").write_bytes(bytes(data))
    monkeypatch.setattr(zoo, "models_dir", lambda: models)
    zoo.index.cache_clear()
    try:
        with pytest.raises(StylekitError, match="damaged"):
            _bulk(input=str(library), output=str(tmp_path / "out"))
    finally:
        zoo.index.cache_clear()
    assert not list((tmp_path / "out").glob("*.png"))


def test_the_manifest_is_written_every_few_seconds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(manifest_module.time, "monotonic", lambda: now[0])
    layout = RunLayout(str(tmp_path / "in"), str(tmp_path / "out"), "r")
    writer = ManifestWriter(layout.manifest_dir, storage.StorageOptions(), flush_every=5.0)

    def rows(key: str) -> pa.Table:
        columns = {"key": [key], "output_key": [key], "status": ["ok"], "error": [""]}
        columns |= {k: [0] for k in ("width", "height", "input_bytes", "output_bytes", "seconds")}
        return manifest_table(columns, layout, "d")

    def written() -> int:
        return sum(pq.read_table(p).num_rows for p in Path(layout.manifest_dir).glob("part-*.parquet"))

    writer.add(rows("a.png"))
    assert written() == 0
    now[0] += 5.0
    writer.add(rows("b.png"))
    assert written() == 2  # the open part, whole
    now[0] += 1.0
    writer.add(rows("c.png"))
    assert written() == 2
    writer.close(LeaseLost("taken"))
    assert written() == 3
    with pytest.raises(LeaseLost):
        writer.add(rows("d.png"))  # a run that is ending claims nothing more


# A job whose read of one input hangs until the test lets it go: the run is mid-block when
# another run takes its lease.
HANG = """
import os, runpy, sys, time
import stylekit.files.storage as storage
marker, sys.argv = sys.argv[1], sys.argv[2:]
real = storage.read_bytes
def read_bytes(location, *args, **kwargs):
    if location.endswith("zz-hang.png"):
        open(marker + ".reached", "w").close()
        while not os.path.exists(marker + ".release"):
            time.sleep(0.05)
    return real(location, *args, **kwargs)
storage.read_bytes = read_bytes
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_a_run_whose_lease_is_taken_stops_at_once_with_one_line(library: Path, tmp_path: Path) -> None:
    (library / "zz-hang.png").write_bytes(_png(4))
    out, marker = tmp_path / "out", str(tmp_path / "marker")
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "PYTHONUNBUFFERED": "1",
    }
    args = ["--engine", "local", "--model", "starry_night", "--input", str(library), "--output", str(out)]
    proc = subprocess.Popen(
        [PYTHON, "-c", HANG, marker, JOB, *args, "--decode-timeout", "20"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while not os.path.exists(marker + ".reached"):  # the run is mid-block, holding its lease
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        now = time.time()
        other = LeaseRecord("other-night", uuid.uuid4().hex, "other-host", 4242, now, now, now + 600, 600.0)
        (out / "_manifest" / LEASE_FILE).write_bytes(other.to_bytes())  # what --take-lease writes
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        Path(marker + ".release").touch()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == exitcodes.LEASE_LOST, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "taken by run other-night" in errors[0], stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == errors[0] and "Traceback" not in stderr
    assert not stdout.strip()  # no summary: the run did not finish
    held = LeaseRecord.parse((out / "_manifest" / LEASE_FILE).read_bytes())
    assert held is not None and held.run_id == "other-night"  # never deleted the other's lease
    assert not (out / "zz-hang.png").exists()


def test_what_a_night_prints_is_one_line_per_line(tmp_path: Path) -> None:
    """A newline in a file name, a dangling link, a broken photo: each line of the job's
    stderr is a log line, the summary is the last line of stdout."""
    src = tmp_path / "in"
    src.mkdir()
    (src / "good.png").write_bytes(_png(1))
    (src / "two\nlines.png").write_bytes(b"not a png")
    (src / "gone.png").symlink_to(tmp_path / "nothing.png")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    run = subprocess.run(
        [
            PYTHON,
            JOB,
            "--engine",
            "local",
            "--model",
            "starry_night",
            "--input",
            str(src),
            "--output",
            str(tmp_path / "out"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert (summary["ok"], summary["failed"]) == (1, 2)
    log_line = re.compile(r"^\d\d:\d\d:\d\d [A-Z]+ stylekit[.\w]*: ")
    assert all(log_line.match(line) for line in run.stderr.strip().splitlines()), run.stderr
    assert "two\\nlines.png" in run.stderr


def test_error_lines_name_their_cause_and_not_a_buffer(s3_server: str) -> None:
    from stylekit.files import images

    with pytest.raises(images.ImageError) as e:
        images.decode(b"GIF87a this is no image")
    assert "BytesIO" not in str(e.value) and "0x" not in str(e.value)
    with pytest.raises(
        StylekitError
    ) as e:  # botocore: "Parameter validation failed:\nInvalid bucket name ..."
        storage.read_bytes("s3://Not_A!Bucket/in/a.png")
    assert "Parameter validation failed: Invalid bucket name" in str(e.value), str(e.value)
