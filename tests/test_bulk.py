"""The nightly bulk job (jobs/stylize.py, stylekit.bulk.driver): a real local Ray and a moto S3 server.

The bucket holds good, odd and broken images plus objects that are not images. Runs check the
accounting (every input once in the manifest), output sizes and pixels against the
single-machine CLI, incremental reruns (nothing rewritten: the bucket keeps versions),
retries, --overwrite, recovery from a partial and from a killed run, local folders, and the job
script end to end. The subprocess tests come first, before this module starts its own Ray.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import signal
import struct
import subprocess
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import PYTHON, REPO, FlakyProxy, make_bucket
from stylekit.bulk.config import BulkConfig
from stylekit.bulk.plan.keys import CollisionGuard, output_key
from stylekit.bulk.plan.layout import RunLayout
from stylekit.cli import config_from_flags
from stylekit.errors import ConfigError, StylekitError
from stylekit.files import images, storage
from stylekit.files.locations import relative_key as nested_prefix

pytestmark = [pytest.mark.ray, pytest.mark.s3]

JOB = str(REPO / "jobs" / "stylize.py")
MARKER = "STYLEKIT_BULK_TEST_MARKER"


# --- test images ------------------------------------------------------------------------------


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _save(img: Image.Image, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _noise(w: int, h: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _bomb_png(w: int = 40_000, h: int = 40_000) -> bytes:
    """A valid PNG header claiming 1.6 gigapixels, with almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 30x12, shown rotated 90 degrees: 12x30
    return _save(_noise(30, 12, 7), "JPEG", exif=exif.tobytes())


def odd_images() -> tuple[dict[str, bytes], dict[str, tuple[int, int]], set[str]]:
    """(key -> bytes, good key -> oriented (width, height), broken keys). Keys not in either
    are not images and must be ignored."""
    grey16 = Image.fromarray(np.arange(12 * 20, dtype=np.uint16).reshape(12, 20) * 250)
    good: dict[str, tuple[bytes, tuple[int, int]]] = {
        "plain/rgb.jpg": (_save(_noise(40, 30, 1), "JPEG", quality=90), (40, 30)),
        "plain/same1.png": (_png(_noise(32, 24, 2)), (32, 24)),  # three of one size: one batch
        "plain/same2.png": (_png(_noise(32, 24, 3)), (32, 24)),
        "plain/same3.png": (_png(_noise(32, 24, 4)), (32, 24)),
        "odd/grey.png": (_png(_noise(20, 18, 5).convert("L")), (20, 18)),
        "odd/rgba.png": (_png(_noise(24, 20, 6).convert("RGBA")), (24, 20)),
        "odd/palette.png": (_png(_noise(16, 16, 8).convert("P")), (16, 16)),
        "odd/cmyk.jpg": (_save(_noise(24, 16, 9).convert("CMYK"), "JPEG"), (24, 16)),
        "odd/deep16.png": (_png(grey16), (20, 12)),
        "odd/rotated.jpg": (_rotated_jpeg(), (12, 30)),
        "odd/one.png": (_png(_noise(1, 1, 10)), (1, 1)),
        "odd/thin.png": (_png(_noise(3, 97, 11)), (3, 97)),
        "odd/UPPER.JPG": (_save(_noise(20, 20, 12), "JPEG"), (20, 20)),
        "odd/scan.tif": (_save(_noise(20, 16, 13), "TIFF"), (20, 16)),
        "odd/paint.bmp": (_save(_noise(14, 10, 14), "BMP"), (14, 10)),
        "odd/web.webp": (_save(_noise(18, 18, 15), "WEBP", lossless=True), (18, 18)),
        "names/with space/café ü.png": (_png(_noise(16, 12, 16)), (16, 12)),
        "names/日本.jpg": (_save(_noise(12, 16, 17), "JPEG"), (12, 16)),
    }
    jpeg = _save(_noise(40, 40, 18), "JPEG")
    broken = {
        "broken/truncated.jpg": jpeg[: len(jpeg) // 2],
        "broken/empty.png": b"",
        "broken/not-an-image.jpg": b"this is plain text, not a JPEG\n",
        "broken/bomb.png": _bomb_png(),
    }
    ignored = {"notes.txt": b"hello", "odd/meta.json": b"{}", "plain/rgb.jpg.xmp": b"<x/>"}
    data = {k: v[0] for k, v in good.items()} | broken | ignored
    return data, {k: v[1] for k, v in good.items()}, set(broken)


# --- helpers ----------------------------------------------------------------------------------


def _s3() -> Any:
    import boto3

    return boto3.client("s3")


def _upload(bucket: str, prefix: str, files: dict[str, bytes]) -> None:
    client = _s3()
    for key, data in files.items():
        client.put_object(Bucket=bucket, Key=f"{prefix}/{key}", Body=data)


def _versions(bucket: str, prefix: str) -> dict[str, int]:
    """Versions per key under prefix (outputs only): 2 means an output was written twice."""
    counts: dict[str, int] = {}
    pages = _s3().get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix + "/")
    for page in pages:
        for v in page.get("Versions", []):
            key = v["Key"][len(prefix) + 1 :]
            if not key.startswith("_manifest/"):
                counts[key] = counts.get(key, 0) + 1
    return counts


def _read_manifest(uri: str) -> list[dict[str, Any]]:
    fs, path = storage.filesystem(uri, storage.StorageOptions())
    return pq.read_table(path, filesystem=fs).to_pylist()


def _by_key(rows: list[dict[str, Any]], input_root: str) -> dict[str, dict[str, Any]]:
    keys = [r["input"][len(input_root) + 1 :] for r in rows]
    assert len(keys) == len(set(keys)), "an input appears twice in one run's manifest"
    return dict(zip(keys, rows, strict=True))


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _cli_outputs(model: Path, uris: list[str], out: Path) -> dict[str, np.ndarray]:
    """What `python -m stylekit stylize` makes of each input (run in this process: the same
    code path, without another torch start), by input URI."""
    from stylekit.__main__ import main

    assert main(["stylize", "--model", str(model), "--format", "png", "--output", str(out), *uris]) == 0
    stems = {uri: os.path.splitext(uri.rsplit("/", 1)[-1])[0] for uri in uris}
    assert len(set(stems.values())) == len(uris)
    return {uri: np.asarray(Image.open(out / f"{stem}.png")) for uri, stem in stems.items()}


def _bulk(**kw: Any) -> Any:
    from stylekit.bulk.driver import run_bulk

    kw.setdefault("progress_every", 2.0)
    return run_bulk(config_from_flags(BulkConfig, **kw))


def _job_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    # A fresh local Ray for the job, never a `ray start` cluster someone runs on this machine.
    env.update(RAY_ADDRESS="local", STYLEKIT_LOG_LEVEL="INFO", PYTHONUNBUFFERED="1", **extra)
    return env


def _processes_with(marker: str) -> set[int]:
    tag = f"{MARKER}={marker}".encode()
    found = set()
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if tag in f.read():
                    found.add(pid)
        except OSError:
            continue
    return found - {os.getpid()}


def _reap(marker: str, timeout: float = 30.0) -> set[int]:
    """Wait for the job's Ray processes to go; stop (by pid) any still there. Returns those."""
    deadline = time.monotonic() + timeout
    while (left := _processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return left


# --- no Ray needed ----------------------------------------------------------------------------


def test_output_keys_keep_the_key_and_change_only_the_extension() -> None:
    assert output_key("a/b c.JPG", "same") == "a/b c.JPG"
    assert output_key("x.jpeg", "jpg") == "x.jpeg"
    assert output_key("scan.tif", "same") == "scan.png"
    assert output_key("scan.TIFF", "same") == "scan.png"
    assert output_key("p.bmp", "same") == "p.png"
    assert output_key("photo.v2.jpg", "png") == "photo.v2.png"
    assert output_key("w.webp", "same") == "w.webp"
    assert output_key("w.png", "jpg") == "w.jpg"


def test_collision_guard_finds_inputs_sharing_an_output_in_listing_order() -> None:
    guard = CollisionGuard()
    keys = ["a.b.jpg", "a.png", "a.png.tif", "a.tif", "a/c.tif", "b.jpg"]
    outs = {k: output_key(k, "same") for k in keys}
    found = {k: guard.claim(k, outs[k]) for k in keys}
    assert found == {
        "a.b.jpg": None,
        "a.png": None,
        "a.png.tif": None,
        "a.tif": "a.png",
        "a/c.tif": None,
        "b.jpg": None,
    }


def test_nested_output_prefix_is_found(tmp_path: Path) -> None:
    assert nested_prefix(str(tmp_path / "in" / "styled"), str(tmp_path / "in")) == "styled/"
    assert nested_prefix(str(tmp_path / "inx"), str(tmp_path / "in")) is None
    assert nested_prefix("s3://b/photos/out", "s3://b/photos/") == "out/"
    assert nested_prefix("s3://b/photos2", "s3://b/photos") is None


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"actors": "3-1"}, "--actors"),
        ({"actors": "two"}, "--actors"),
        ({"quality": 0}, "--quality"),
        ({"batch_size": 0}, "--batch-size"),
        ({"limit": 0}, "--limit"),
        ({"gpus_per_actor": -1.0}, "--gpus-per-actor"),
        ({"max_side": 0}, "--max-side"),
        ({"format": "gif"}, "--format"),
        ({"output": "in/"}, "must differ"),
        ({"s3_endpoint": "localhost:9000"}, "scheme"),
    ],
)
def test_bad_values_are_config_errors(flags: dict[str, Any], message: str) -> None:
    values = {"model": "m.safetensors", "input": "in", "output": "out", **flags}
    with pytest.raises(StylekitError, match=message):
        config_from_flags(BulkConfig, **values)


def test_actor_pool_fits_a_two_cpu_machine_and_uses_gpus_when_present() -> None:
    from stylekit.bulk.engines.sizing import plan_actors
    from stylekit.nodes import Node

    base = BulkConfig(model="m", input="i", output="o")
    two = plan_actors(base, [Node(2.0)])
    assert (two.min_size, two.max_size, two.num_cpus, two.num_gpus, two.task_cpus) == (1, 1, 1.0, 0.0, 1.0)
    assert two.threads == 2 and two.codecs_inside  # the codecs run in the actor's own threads
    big = plan_actors(base, [Node(32.0)])
    assert big.num_cpus == 4 and big.min_size == big.max_size == 7  # 1 CPU kept for the key reads
    assert big.threads == 4
    gpu = plan_actors(base, [Node(16.0, 4.0)])
    assert (gpu.min_size, gpu.max_size, gpu.num_gpus, gpu.num_cpus) == (1, 4, 1.0, 1.0)
    half = plan_actors(
        BulkConfig(model="m", input="i", output="o", gpus_per_actor=0.5, actors="2-8"), [Node(16, 4)]
    )
    assert (half.min_size, half.max_size, half.num_gpus) == (2, 8, 0.5)
    with pytest.raises(ConfigError, match="lower --actors"):
        plan_actors(BulkConfig(model="m", input="i", output="o", actors="2"), [Node(2.0)])
    with pytest.raises(ConfigError, match="has 0 GPUs"):
        plan_actors(BulkConfig(model="m", input="i", output="o", gpus_per_actor=1), [Node(8.0)])


def test_stat_keys_on_s3_lists_a_range_and_falls_back_to_heads(
    s3_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_bucket("stat-keys")
    _upload("stat-keys", "out", {f"d/{i:03d}.png": b"x" * i for i in range(40)} | {"d/other.txt": b""})
    wanted = [f"d/{i:03d}.png" for i in range(0, 60, 3)]
    expected = {k for k in wanted if int(k[2:5]) < 40}
    found = storage.stat_keys("s3://stat-keys/out", wanted)
    assert set(found) == expected and found["d/009.png"].size == 9
    # A range that holds too many other objects: after one page of 5, HEAD the rest.
    monkeypatch.setattr(storage, "LIST_PAGE_SIZE", 5)
    monkeypatch.setattr(storage, "RANGE_LIST_BUDGET", 0)
    monkeypatch.setattr(storage, "RANGE_LIST_SLACK", 0)
    heads: list[str] = []
    real_head = storage._head
    monkeypatch.setattr(
        storage, "_head", lambda loc, keys, opts: heads.extend(keys) or real_head(loc, keys, opts)
    )
    found = storage.stat_keys("s3://stat-keys/out", wanted)
    assert set(found) == expected and found["d/039.png"].size == 39
    assert heads and "d/000.png" not in heads  # the first page was listed, the rest HEADed


def test_help_documents_every_flag_and_bad_flags_are_one_line_errors() -> None:
    run = subprocess.run([PYTHON, JOB, "--help"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0
    for flag in ("--model", "--input", "--output", "--format", "--quality", "--batch-size", "--actors"):
        assert flag in run.stdout
    for flag in ("--gpus-per-actor", "--cpus-per-actor", "--max-side", "--max-pixels", "--overwrite"):
        assert flag in run.stdout
    assert "--limit" in run.stdout and "--s3-endpoint" in run.stdout and "(default: same)" in run.stdout
    bad = subprocess.run(
        [PYTHON, JOB, "--model", "m", "--input", "i", "--output", "o", "--actors", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert "--actors" in bad.stderr


# --- the job as a subprocess (first: before this module starts its own Ray) -------------------


def test_job_killed_midway_then_rerun_finishes_the_rest_exactly_once(
    s3_server: str, model_file: Path
) -> None:
    """The job script end to end on S3 (endpoint from AWS_ENDPOINT_URL only): a run killed
    with SIGTERM after its first outputs, then a rerun; credentials never appear anywhere."""
    make_bucket("killed")
    _s3().put_bucket_versioning(Bucket="killed", VersioningConfiguration={"Status": "Enabled"})
    n = 40
    _upload("killed", "in", {f"p/{i:03d}.png": _png(_noise(12, 12, 100 + i)) for i in range(n)})
    secret = "sk-" + secrets.token_hex(12)
    key_id = "AKIA" + secrets.token_hex(8).upper()
    marker = secrets.token_hex(6)
    env = _job_env(AWS_SECRET_ACCESS_KEY=secret, AWS_ACCESS_KEY_ID=key_id, **{MARKER: marker})
    cmd = [
        PYTHON,
        JOB,
        "--model",
        str(model_file),
        "--input",
        "s3://killed/in/",
        "--output",
        "s3://killed/out",
    ]
    cmd += ["--batch-size", "2", "--actors", "1", "--progress-every", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while proc.poll() is None and len(_versions("killed", "out")) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out1, err1 = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        _reap(marker)
    done_before = _versions("killed", "out")
    assert 0 < len(done_before) < n, "not interrupted midway: give the job more images"

    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert not _reap(marker), "the job left Ray processes behind"
    assert second.returncode == 0, second.stderr[-3000:]
    summary = json.loads(second.stdout.strip().splitlines()[-1])
    assert summary["failed"] == 0 and summary["ok"] + summary["skipped"] == n
    assert summary["skipped"] == len(done_before)
    assert summary["manifest"].startswith("s3://killed/out/_manifest/run=")
    rows = _by_key(_read_manifest(summary["manifest"]), "s3://killed/in")
    assert len(rows) == n
    assert {k for k, r in rows.items() if r["status"] == "skipped"} == set(done_before)
    versions = _versions("killed", "out")
    assert set(versions) == {f"p/{i:03d}.png" for i in range(n)}
    assert set(versions.values()) == {1}, "an output was written twice"
    everything = out1 + err1 + second.stdout + second.stderr + json.dumps(list(rows.values()), default=str)
    assert secret not in everything and key_id not in everything
    assert "stylized" in second.stderr  # progress lines
    keys_left = _s3().list_objects_v2(Bucket="killed", Prefix="out/_manifest/_keys/")
    finished_run = summary["run_id"]
    assert not [o for o in keys_left.get("Contents", []) if finished_run in o["Key"]]


# --- in-process runs on this module's local Ray -----------------------------------------------


@pytest.fixture(scope="module")
def local_ray(s3_server: str, gcs_server: str | None, azure_server: str | None) -> Iterator[None]:
    """A fresh local Ray with 2 CPUs (after the S3 and GCS servers, so its workers see their
    settings)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def odd_bucket(s3_server: str) -> dict[str, Any]:
    make_bucket("odd")
    _s3().put_bucket_versioning(Bucket="odd", VersioningConfiguration={"Status": "Enabled"})
    files, good, broken = odd_images()
    _upload("odd", "in", files)
    return {"good": good, "broken": broken, "input": "s3://odd/in", "output": "s3://odd/out"}


@pytest.fixture(scope="module")
def first_runs(local_ray: None, odd_bucket: dict[str, Any], model_file: Path) -> dict[str, Any]:
    """A run cut short by --limit (as if interrupted), then the full run that finishes it."""
    common = {"model": str(model_file), "input": "s3://odd/in/", "output": "s3://odd/out/", "format": "png"}
    partial = _bulk(**common, limit=8, batch_size=4)
    before = _versions("odd", "out")
    full = _bulk(
        **common, batch_size=4, storage_options=storage.StorageOptions(os.environ["AWS_ENDPOINT_URL"])
    )
    return {"partial": partial, "before": before, "full": full, "common": common}


def test_every_input_is_accounted_once_and_broken_ones_fail_alone(
    first_runs: dict[str, Any], odd_bucket: dict[str, Any]
) -> None:
    good, broken = odd_bucket["good"], odd_bucket["broken"]
    partial, full = first_runs["partial"], first_runs["full"]
    assert partial.ok + partial.failed == 8 and partial.skipped == 0
    assert full.skipped == partial.ok and full.ok == len(good) - partial.ok and full.failed == len(broken)
    rows = _by_key(_read_manifest(full.manifest), "s3://odd/in")
    assert set(rows) == set(good) | broken  # the txt, json and xmp objects are ignored
    for key in broken:
        assert rows[key]["status"] == "failed" and rows[key]["error"]
        assert rows[key]["output"] == f"s3://odd/out/{output_key(key, 'png')}"
    assert "over the limit" in rows["broken/bomb.png"]["error"]
    assert "empty" in rows["broken/empty.png"]["error"]
    for key in good:
        assert rows[key]["status"] in ("ok", "skipped") and rows[key]["error"] is None
        assert rows[key]["model_digest"] == full.model_digest and rows[key]["run_id"] == full.run_id
    ok = [r for r in rows.values() if r["status"] == "ok"]
    assert all(r["output_bytes"] > 0 and r["seconds"] > 0 and r["width"] and r["height"] for r in ok)


def test_outputs_have_the_oriented_size_and_the_cli_pixels(
    first_runs: dict[str, Any], odd_bucket: dict[str, Any], model_file: Path, tmp_path: Path
) -> None:
    client = _s3()
    good = odd_bucket["good"]
    cli = _cli_outputs(model_file, [f"s3://odd/in/{key}" for key in good], tmp_path / "cli")
    for key, (w, h) in good.items():
        data = client.get_object(Bucket="odd", Key=f"out/{output_key(key, 'png')}")["Body"].read()
        got = _pixels(data)
        assert got.shape == (h, w, 3), key
        assert np.array_equal(got, cli[f"s3://odd/in/{key}"]), key


def test_partial_run_outputs_are_kept_and_nothing_is_written_twice(first_runs: dict[str, Any]) -> None:
    before, versions = first_runs["before"], _versions("odd", "out")
    assert len(before) == first_runs["partial"].ok
    assert all(versions[k] == 1 for k in before)
    assert set(versions.values()) == {1}
    objects = _s3().list_objects_v2(Bucket="odd", Prefix="out/_manifest/")["Contents"]
    names = [o["Key"] for o in objects]
    assert not [n for n in names if "/_keys/" in n], "key shards are removed after a run"
    assert "out/_manifest/_outputs.json" in names


def test_rerun_skips_done_inputs_does_new_ones_and_retries_failures(
    first_runs: dict[str, Any], odd_bucket: dict[str, Any], model_file: Path
) -> None:
    good, broken = odd_bucket["good"], odd_bucket["broken"]
    changes = {
        "new/fresh.png": _png(_noise(10, 9, 50)),  # a new input
        "broken/empty.png": _png(_noise(8, 8, 51)),  # a failed input, fixed
        "plain/same1.png": _png(_noise(32, 24, 52)),  # a done input, replaced: newer than its output
    }
    # S3 keeps LastModified to the second, and an output at least as new as its input counts as
    # done: on a fast machine the first run's outputs and this upload can share a second.
    time.sleep(1.1)
    _upload("odd", "in", changes)
    before = _versions("odd", "out")
    rerun = _bulk(**first_runs["common"])
    assert (rerun.ok, rerun.skipped, rerun.failed) == (3, len(good) - 1, len(broken) - 1)
    after = _versions("odd", "out")
    changed = {k: v for k, v in after.items() if before.get(k) != v}
    assert changed == {"new/fresh.png": 1, "broken/empty.png": 1, "plain/same1.png": 2}
    rows = _by_key(_read_manifest(rerun.manifest), "s3://odd/in")
    assert {k for k, r in rows.items() if r["status"] == "ok"} == set(changes)
    assert rows["broken/bomb.png"]["status"] == "failed"
    assert len(rows) == len(good) + len(broken) + 1


def test_another_model_is_refused_unless_overwrite(
    first_runs: dict[str, Any], odd_bucket: dict[str, Any], model_file: Path, tmp_path: Path
) -> None:
    import torch

    from stylekit.nn.model import TransformerNet
    from stylekit.nn.modelio import save_model

    torch.manual_seed(1)
    other = tmp_path / "other.safetensors"
    save_model(str(other), TransformerNet(), {"style": "other"})
    with pytest.raises(ConfigError, match="--overwrite"):
        _bulk(**{**first_runs["common"], "model": str(other)})
    with pytest.raises(ConfigError, match="max_side"):
        _bulk(**first_runs["common"], max_side=16)


def test_overwrite_rewrites_every_output(first_runs: dict[str, Any], odd_bucket: dict[str, Any]) -> None:
    before = _versions("odd", "out")
    forced = _bulk(**first_runs["common"], overwrite=True, batch_size=16)
    assert forced.skipped == 0 and forced.ok == len(before)
    after = _versions("odd", "out")
    assert all(after[k] == before[k] + 1 for k in before)


def test_local_folders_default_format_and_output_inside_input(
    local_ray: None, model_file: Path, tmp_path: Path
) -> None:
    src = tmp_path / "photos"
    files = {
        "a.png": _png(_noise(16, 16, 60)),
        "a.tif": _save(_noise(16, 16, 61), "TIFF"),  # its output a.png is a.png's: fails
        "b.JPG": _save(_noise(20, 12, 62), "JPEG"),
        "c.bmp": _save(_noise(9, 7, 63), "BMP"),
        "deep/d.webp": _save(_noise(8, 8, 64), "WEBP"),
        "deep/e f.jpeg": _save(_noise(8, 10, 65), "JPEG"),
        "readme.md": b"# not an image",
    }
    for key, data in files.items():
        (src / key).parent.mkdir(parents=True, exist_ok=True)
        (src / key).write_bytes(data)
    out = src / "styled"  # inside the input: must not be read back as new inputs
    first = _bulk(
        model=str(model_file), input=str(src), output=str(out), encode_options=images.EncodeOptions(90)
    )
    assert (first.ok, first.failed, first.skipped) == (5, 1, 0)
    made = sorted(
        p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and "_manifest" not in p.parts
    )
    assert made == ["a.png", "b.JPG", "c.png", "deep/d.webp", "deep/e f.jpeg"]
    assert Image.open(out / "b.JPG").format == "JPEG" and Image.open(out / "c.png").size == (9, 7)
    rows = _by_key(_read_manifest(first.manifest), str(src))
    assert "a.png" in rows["a.tif"]["error"] and rows["a.tif"]["status"] == "failed"
    stamps = {
        p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.rglob("*.*") if "_manifest" not in p.parts
    }
    again = _bulk(
        model=str(model_file), input=str(src), output=str(out), encode_options=images.EncodeOptions(90)
    )
    assert (again.ok, again.failed, again.skipped) == (0, 1, 5)
    assert stamps == {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in stamps}
    assert not list(out.rglob(".tmp-*"))


def test_a_flaky_store_loses_and_duplicates_nothing(local_ray: None, model_file: Path) -> None:
    """A fifth of all requests (listing, reads, writes, manifest parts, key shards, Ray's
    reads of the shards) fail with 503 SlowDown or a reset connection: the run still ends with
    every input written once and once in the manifest."""
    make_bucket("flaky")
    _s3().put_bucket_versioning(Bucket="flaky", VersioningConfiguration={"Status": "Enabled"})
    n = 16
    _upload("flaky", "in", {f"p/{i:03d}.png": _png(_noise(12, 10, 300 + i)) for i in range(n)})
    with FlakyProxy(os.environ["AWS_ENDPOINT_URL"], fail_rate=0.2, seed=3) as proxy:
        summary = _bulk(
            model=str(model_file),
            input="s3://flaky/in",
            output="s3://flaky/out",
            batch_size=4,
            storage_options=storage.StorageOptions(proxy.url),
        )
    assert (summary.ok, summary.failed, summary.skipped) == (n, 0, 0)
    assert proxy.faults["503"] > 2 and proxy.faults["reset"] > 2, proxy.faults
    rows = _by_key(_read_manifest(summary.manifest), "s3://flaky/in")
    assert sorted(rows) == [f"p/{i:03d}.png" for i in range(n)]
    assert {r["status"] for r in rows.values()} == {"ok"}
    versions = _versions("flaky", "out")
    assert versions == {f"p/{i:03d}.png": 1 for i in range(n)}, "an output missing or written twice"


@pytest.mark.parametrize(
    ("server", "bucket"), [("gcs_server", "gs://gcs-test"), ("azure_server", "az://az-test")]
)
def test_a_cloud_bucket_end_to_end(
    local_ray: None, model_file: Path, server: str, bucket: str, request: pytest.FixtureRequest
) -> None:
    """gs:// (gcsfs, the GCS emulator) and az:// (adlfs, Azurite) in and out: every input
    once, a rerun skips them all."""
    if request.getfixturevalue(server) is None:
        pytest.skip(f"{server}: the emulator or its fsspec package is not installed")
    root = f"{bucket}/bulk-{secrets.token_hex(3)}"
    inputs = {f"p/{i}.png": _png(_noise(10, 8, 400 + i)) for i in range(5)} | {"p/notes.txt": b"x"}
    for key, data in inputs.items():
        storage.write_bytes(f"{root}/in/{key}", data)
    common = {"model": str(model_file), "input": f"{root}/in", "output": f"{root}/out", "batch_size": 2}
    first = _bulk(**common)
    assert (first.ok, first.failed, first.skipped) == (5, 0, 0)
    assert first.manifest.startswith(f"{root}/out/_manifest/run=")
    rows = _by_key(_read_manifest(first.manifest), f"{root}/in")
    assert sorted(rows) == [f"p/{i}.png" for i in range(5)]
    out = _pixels(storage.read_bytes(f"{root}/out/p/3.png"))
    assert out.shape == (8, 10, 3)
    again = _bulk(**common)
    assert (again.ok, again.failed, again.skipped) == (0, 0, 5)


def _key_shard(path: Path, keys: list[str]) -> None:
    """A key shard as the planner writes it (planner.KEYS_SCHEMA): each key its own output."""
    import pyarrow as pa

    from stylekit.bulk.plan.planner import KEYS_SCHEMA

    columns = {"key": keys, "output_key": keys, "input_bytes": [1] * len(keys)}
    blank = {name: [""] * len(keys) for name in KEYS_SCHEMA.names[3:]}
    pq.write_table(pa.Table.from_pydict(columns | blank, schema=KEYS_SCHEMA), path)


def test_decoding_is_not_fused_into_gpu_actors_and_cpu_actors_run_whole_blocks(
    local_ray: None, model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import ray

    from stylekit.bulk.engines.pool import RayPool
    from stylekit.bulk.engines.ray_photos import photo_engine
    from stylekit.bulk.engines.sizing import plan_actors
    from stylekit.bulk.plan.planner import Plan
    from stylekit.bulk.run import BulkRun
    from stylekit.nodes import Node

    shard = tmp_path / "out" / "keys.parquet"
    shard.parent.mkdir()
    _key_shard(shard, ["a.png"])
    config = BulkConfig(model=str(model_file), input=str(tmp_path / "in"), output=str(tmp_path / "out"))
    layout = RunLayout.for_config(config)
    plan = Plan(shards=[str(shard)], todo=1)
    run = BulkRun(config, layout, config.storage_options, (b"model",), "digest", plan)

    def operators(node: Node) -> list[str]:
        actors = plan_actors(config, [node])
        photo_engine(RayPool(actors, [ray.put(b"model")])).dataset(run).explain()
        physical = capsys.readouterr().out.split("Physical Plan (Optimized)")[-1]
        return [line.strip("+- ") for line in physical.splitlines() if "Operator[" in line]

    gpu = operators(Node(2.0, 1.0))
    assert "ActorPoolMapOperator[MapBatches(StylizeActor)]" in gpu  # the model alone
    assert [op for op in gpu if op.startswith("TaskPoolMapOperator[MapBatches(decode_batch)")]
    assert [op for op in gpu if op.startswith("TaskPoolMapOperator[MapBatches(write_batch)")]
    cpu = operators(Node(2.0))  # codecs inside the actor: no decode or write tasks
    assert "ActorPoolMapOperator[MapBatches(StylizeActor)]" in cpu
    assert not [op for op in cpu if "decode_batch" in op or "write_batch" in op]


def test_key_blocks_are_cut_to_size_and_read_while_no_cpu_is_free(local_ray: None, tmp_path: Path) -> None:
    """After a node's loss Ray restarts its actors on the nodes left, where they take every
    CPU: the key reads and their cut into blocks (re-run too, when their blocks were lost with
    the node) must still run, so they reserve none. Here an actor holds both CPUs while the
    keys of two shards are read and cut."""
    from concurrent.futures import ThreadPoolExecutor

    import ray

    from stylekit.bulk.engines.key_blocks import key_blocks

    shards = []
    for s, count in enumerate((3, 22)):
        _key_shard(tmp_path / f"keys-{s}.parquet", [f"s{s}-{i:02d}.png" for i in range(count)])
        shards.append(str(tmp_path / f"keys-{s}.parquet"))

    @ray.remote(num_cpus=2)
    class Hog:
        def ready(self) -> bool:
            return True

    hog, reads = Hog.remote(), ThreadPoolExecutor(1)
    try:
        assert ray.get(hog.ready.remote(), timeout=120)
        ds = key_blocks(shards, 4, storage.StorageOptions(), tasks=2)
        blocks = reads.submit(
            lambda: [
                b.column("key").to_pylist() for b in ds.iter_batches(batch_size=None, batch_format="pyarrow")
            ]
        ).result(timeout=120)
    finally:
        ray.kill(hog)  # frees the CPUs, so a read that waited for one ends too
        reads.shutdown()
    assert sorted(k for block in blocks for k in block) == sorted(
        [f"s0-{i:02d}.png" for i in range(3)] + [f"s1-{i:02d}.png" for i in range(22)]
    )
    assert max(map(len, blocks)) <= 4 and len(blocks) >= 7  # 22 keys: at least 6 blocks, 3 keys: 1


def _atime_tracks_first_read(folder: Path) -> bool:
    """Whether this filesystem stamps a file's first read in its atime (relatime, strictatime;
    not noatime), which the streaming test reads decode times from."""
    probe = folder / "atime-probe"
    probe.write_bytes(b"x")
    before = probe.stat().st_atime_ns
    time.sleep(0.05)
    probe.read_bytes()
    return probe.stat().st_atime_ns > before


def test_the_first_output_does_not_wait_for_every_decode(
    local_ray: None, model_file: Path, tmp_path: Path
) -> None:
    """The decode stage runs only a few batches ahead of the model: the first outputs are
    written while most inputs are still unread. Each input's atime is when a decode task read
    it (its first read since it was made), each output's mtime when it was written; without
    backpressure every input was read before the actors had loaded the model."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    if not _atime_tracks_first_read(src):
        pytest.skip("this filesystem does not record reads in atime (noatime)")
    count = 96
    for i in range(count):
        (src / f"p{i:03d}.png").write_bytes(_png(_noise(128, 128, 100 + i)))
    summary = _bulk(model=str(model_file), input=str(src), output=str(out), batch_size=2)
    assert summary.ok == count
    read = sorted((src / f"p{i:03d}.png").stat().st_atime_ns for i in range(count))
    first_written = min((out / f"p{i:03d}.png").stat().st_mtime_ns for i in range(count))
    read_before = sum(t < first_written for t in read)
    assert read_before <= count // 2, f"{read_before} of {count} inputs were decoded before the first output"


def test_progress_lines_count_every_row_once_and_end_without_a_repeat(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    import pyarrow as pa

    from stylekit.bulk.driver import FAILED, OK, _Progress

    progress = _Progress(total=3, every=0.0)  # a line at every update
    with caplog.at_level(logging.INFO, logger="stylekit.bulk.driver"):
        rows = {"input": ["a", "b"], "status": [OK, FAILED], "error": [None, "bad"]}
        progress.update(pa.table(rows))
        progress.update(pa.table({"input": ["c"], "status": [OK], "error": [None]}))
        progress.log_line(final=True)  # nothing new since the last line: no repeat
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("stylized ")]
    assert [line.split(",")[0] for line in lines] == ["stylized 2/3 (1 ok", "stylized 3/3 (2 ok"]
    assert any(r.getMessage() == "failed: b: bad" for r in caplog.records)
