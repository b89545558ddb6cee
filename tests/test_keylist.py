"""--keys (stylekit/bulk/plan/keylist.py): the inputs from a key list instead of a listing of IN.
Each format (text, CSV, CSV.gz, Parquet, S3 Inventory manifests with CSV.gz and Parquet files),
local and on S3 (moto); the planner with a list (skip check, accounting, a key that would leave
OUT), never listing IN; bad lists as one line; and one bulk run on a local Ray in which a
listed key missing from the bucket is a failed row."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import uuid
from collections.abc import Callable
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
from stylekit.bulk.plan import keylist
from stylekit.bulk.plan.keylist import KeyListError, key_entries
from stylekit.bulk.plan.layout import RunLayout
from stylekit.bulk.plan.manifest import ManifestWriter
from stylekit.bulk.plan.planner import plan_inputs
from stylekit.files import storage

KEYS = ["a/one.png", "a/two with space+plus.jpg", "b/three.png", "c/vid.mp4"]


def _parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def _csv_inventory(bucket: str, rows: list[tuple[str, ...]]) -> bytes:
    from urllib.parse import quote_plus

    lines = [",".join(f'"{v}"' for v in (bucket, quote_plus(key, safe="/"), *rest)) for key, *rest in rows]
    return gzip.compress(("\n".join(lines) + "\n").encode())


def lists(bucket: str, prefix: str) -> dict[str, bytes]:
    """name -> bytes of each kind of list naming KEYS below `prefix` of `bucket` (plus, in the
    inventories, rows that must be left out)."""
    full = [f"{prefix}{k}" for k in KEYS]
    inv_csv = _csv_inventory(
        bucket,
        [(k, "true", "false", "12", "2024-05-01T01:02:03.000Z") for k in full]
        + [("elsewhere/x.png", "true", "false", "1", "2024-05-01T01:02:03.000Z")]  # outside IN
        + [(full[0].replace("one", "old"), "false", "false", "1", "2024-01-01T00:00:00.000Z")]  # old version
        + [(full[0].replace("one", "gone"), "true", "true", "0", "2024-01-01T00:00:00.000Z")],  # deleted
    )
    inv_parquet = _parquet_bytes(
        pa.table(
            {
                "bucket": [bucket] * (len(full) + 1) + ["other-bucket"],
                "key": [*full, "elsewhere/x.png", full[0]],
                "size": [12] * (len(full) + 2),
                "last_modified_date": pa.array([1_714_525_323_000] * (len(full) + 2), pa.timestamp("ms")),
            }
        )
    )
    schema = "Bucket, Key, IsLatest, IsDeleteMarker, Size, LastModifiedDate"

    def manifest(fmt: str, name: str) -> bytes:
        return json.dumps(
            {
                "sourceBucket": bucket,
                "destinationBucket": f"arn:aws:s3:::{bucket}",
                "version": "2016-11-30",
                "creationTimestamp": "1714525323000",
                "fileFormat": fmt,
                "fileSchema": schema if fmt == "CSV" else "message s3.inventory { ... }",
                "files": [{"key": f"inventory/{bucket}/cfg/data/{name}", "size": 1, "MD5checksum": "x"}],
            }
        ).encode()

    return {
        "keys.txt": ("\n".join(reversed(KEYS)) + "\n\n").encode(),
        "keys.csv": ("key,size\n" + "".join(f'"{k}",12\n' for k in KEYS)).encode(),
        "keys.csv.gz": gzip.compress(("other,key\n" + "".join(f'x,"{k}"\n' for k in KEYS)).encode()),
        "keys.parquet": _parquet_bytes(pa.table({"key": KEYS, "size": [12] * len(KEYS)})),
        "inventory/{b}/cfg/data/inv.csv.gz": inv_csv,
        "inventory/{b}/cfg/data/inv.parquet": inv_parquet,
        "inventory/{b}/cfg/2024-05-01T01-00Z/manifest.json": manifest("CSV", "inv.csv.gz"),
        "inventory/{b}/cfg/2024-05-02T01-00Z/manifest.json": manifest("Parquet", "inv.parquet"),
    }


NAMES = [
    "keys.txt",
    "keys.csv",
    "keys.csv.gz",
    "keys.parquet",
    "inventory/{b}/cfg/2024-05-01T01-00Z/manifest.json",
    "inventory/{b}/cfg/2024-05-02T01-00Z/manifest.json",
]


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str, bytes], str]:
    """put(name, bytes) -> location, in a local folder (the "bucket" root) or a moto bucket."""
    if request.param == "local":
        root = tmp_path / "bucket"

        def put_local(name: str, data: bytes) -> str:
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            return str(path)

        put_local.bucket, put_local.root = "bucket", str(root)  # type: ignore[attr-defined]
        return put_local
    request.getfixturevalue("s3_server")
    bucket = f"keys-{uuid.uuid4().hex[:8]}"
    make_bucket(bucket)

    def put_s3(name: str, data: bytes) -> str:
        storage.write_bytes(f"s3://{bucket}/{name}", data)
        return f"s3://{bucket}/{name}"

    put_s3.bucket, put_s3.root = bucket, f"s3://{bucket}"  # type: ignore[attr-defined]
    return put_s3


@pytest.mark.parametrize("name", NAMES)
def test_each_format_names_the_keys_relative_to_in(store: Any, name: str) -> None:
    bucket, prefix = store.bucket, "photos/in/"
    files = lists(bucket, prefix)
    for n, data in files.items():
        store(n.format(b=bucket), data)
    location = storage.join(store.root, *name.format(b=bucket).split("/"))
    inventory, on_s3 = name.endswith("manifest.json"), store.root.startswith("s3")
    expected = sorted(KEYS)
    in_root = storage.join(store.root, "photos", "in")
    if inventory and not on_s3:  # a local copy of an inventory: IN is the bucket's root
        in_root = store.root
        expected = sorted([f"{prefix}{k}" for k in KEYS] + ["elsewhere/x.png"])
    entries = list(key_entries(location, in_root))
    assert [e.key for e in entries] == expected
    if name != "keys.txt" and not name.endswith("csv.gz"):
        assert {e.size for e in entries if "elsewhere" not in e.key} == {12}
    if inventory:
        assert {e.mtime for e in entries} == {1_714_525_323.0}


def test_an_inventory_of_another_bucket_is_refused(store: Any) -> None:
    files = lists("someone-else", "in/")
    for n, data in files.items():
        store(n.format(b="someone-else"), data)
    if not store.root.startswith("s3"):
        pytest.skip("buckets are checked against an s3:// --input")
    manifest = f"{store.root}/inventory/someone-else/cfg/2024-05-01T01-00Z/manifest.json"
    with pytest.raises(KeyListError, match="inventory of bucket someone-else"):
        list(key_entries(manifest, f"{store.root}/in"))


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("missing.txt", None, "not found"),
        ("no-key.csv", b"path,size\na.png,1\n", "no 'key' column"),
        ("bad.parquet", b"PAR1 not really", "not a Parquet file"),
        ("noname.parquet", _parquet_bytes(pa.table({"path": ["a.png"]})), "no 'key' column"),
        ("binary.txt", b"\xff\xfe\x00a.png\n", "not UTF-8"),
        ("manifest.json", b'{"files": 3}', "not an S3 Inventory manifest.json"),
        ("orc/manifest.json", json.dumps({"fileFormat": "ORC", "files": []}).encode(), "ORC format"),
    ],
)
def test_a_bad_list_is_one_line(tmp_path: Path, name: str, data: bytes | None, message: str) -> None:
    path = tmp_path / name
    if data is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    with pytest.raises(KeyListError) as e:
        list(key_entries(str(path), str(tmp_path)))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_bad_list_stops_the_job_before_any_work_with_one_line(tmp_path: Path, model_file: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "keys.csv").write_text("path\na.png\n")
    cmd = [PYTHON, str(REPO / "jobs" / "stylize.py"), "--model", str(model_file)]
    cmd += [
        "--input",
        str(tmp_path / "in"),
        "--output",
        str(tmp_path / "out"),
        "--keys",
        str(tmp_path / "keys.csv"),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == exitcodes.USAGE, run.stderr[-2000:]
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no 'key' column" in errors[0] and "Traceback" not in run.stderr


def test_an_unsorted_list_is_said_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any) -> None:
    monkeypatch.setattr(keylist, "BATCH_ROWS", 2)
    (tmp_path / "keys.txt").write_text("c.png\nd.png\na.png\nb.png\n")
    keys = [e.key for e in key_entries(str(tmp_path / "keys.txt"), str(tmp_path))]
    assert keys == ["c.png", "d.png", "a.png", "b.png"]  # sorted within batches of 2
    assert sum("not sorted" in r.getMessage() for r in caplog.records) == 1


def _photo(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)


def test_the_planner_takes_the_list_and_never_lists_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    for i, key in enumerate(["a.png", "b.png", "c.png", "not-listed.png"]):
        _photo(inp / key, i)
    _photo(out / "b.png", 9)  # done before
    (tmp_path / "keys.txt").write_text("a.png\nb.png\nc.png\nmissing.png\nnotes.txt\n../escape.png\n")

    def no_listing(*args: Any, **kw: Any) -> Any:
        raise AssertionError("IN was listed")

    monkeypatch.setattr(storage, "list_entries", no_listing)
    config = BulkConfig(
        model="starry_night", input=str(inp), output=str(out), keys=str(tmp_path / "keys.txt")
    )
    layout = RunLayout.for_config(config)
    with ManifestWriter(layout.manifest_dir, config.storage_options) as manifest:
        plan = plan_inputs(config, layout, manifest, "digest")
    assert (plan.listed, plan.todo, plan.skipped, plan.failed) == (5, 3, 1, 1)
    todo = pa.concat_tables([pq.read_table(s) for s in plan.shards]).column("key").to_pylist()
    assert sorted(todo) == ["a.png", "c.png", "missing.png"]  # missing: fails when read
    rows = pq.read_table(layout.manifest_dir).to_pylist()
    (bad,) = [r for r in rows if r["status"] == "failed"]
    assert "../escape.png" in bad["error"] and "--keys" in bad["error"]


@pytest.mark.ray
def test_a_night_from_an_inventory_with_a_missing_key(
    s3_server: str, model_file: Path, tmp_path: Path
) -> None:
    bucket = f"inv-{uuid.uuid4().hex[:8]}"
    make_bucket(bucket)
    for i in range(3):
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buf, "PNG")
        storage.write_bytes(f"s3://{bucket}/in/p{i}.png", buf.getvalue())
    storage.write_bytes(f"s3://{bucket}/in/unlisted.png", buf.getvalue())
    data = _parquet_bytes(
        pa.table({"bucket": [bucket] * 4, "key": [f"in/p{i}.png" for i in range(3)] + ["in/deleted.png"]})
    )
    storage.write_bytes(f"s3://{bucket}/inv/data/a.parquet", data)
    manifest = {
        "sourceBucket": bucket,
        "destinationBucket": f"arn:aws:s3:::{bucket}",
        "fileFormat": "Parquet",
    }
    manifest["files"] = [{"key": "inv/data/a.parquet", "size": len(data), "MD5checksum": "x"}]
    storage.write_bytes(f"s3://{bucket}/inv/2024-05-01T01-00Z/manifest.json", json.dumps(manifest).encode())
    cmd = [PYTHON, str(REPO / "jobs" / "stylize.py"), "--model", str(model_file), "--actors", "1"]
    cmd += ["--input", f"s3://{bucket}/in", "--output", f"s3://{bucket}/out"]
    cmd += ["--keys", f"s3://{bucket}/inv/2024-05-01T01-00Z/manifest.json"]
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | {"RAY_ADDRESS": "local"}
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env)
    assert run.returncode == exitcodes.OK, run.stderr[-3000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert (summary["ok"], summary["failed"], summary["skipped"]) == (3, 1, 0)
    fs, path = storage.filesystem(summary["manifest"])
    rows = pq.read_table(path, filesystem=fs).to_pylist()
    (failed,) = [r for r in rows if r["status"] == "failed"]
    assert failed["input"].endswith("in/deleted.png") and "not found" in failed["error"]
    assert not storage.exists(f"s3://{bucket}/out/unlisted.png")
