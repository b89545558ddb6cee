"""The storage layer (stylekit.files.storage) on fsspec: any protocol, one-line errors, retries
through a flaky S3 endpoint (a proxy in front of moto's server that answers 503 SlowDown or
resets the connection), output checks before any work, and a hung decode that times out."""

from __future__ import annotations

import io
import os
import subprocess
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from conftest import PYTHON, REPO, FlakyProxy, make_bucket
from stylekit.errors import StylekitError, first_line
from stylekit.files import images, storage


def _png(seed: int, w: int = 12, h: int = 10) -> bytes:
    buf = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _one_line(e: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(e.value)
    assert text and "\n" not in text, text
    return text


# --- any fsspec URL ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "base",
    [
        "memory://sk-{u}/root",
        "file://{tmp}/root",
        "{tmp}/plain",
        "gs://gcs-test/{u}/root",
        "az://az-test/{u}/root",
    ],
)
def test_whole_objects_listing_and_checks_work_for_any_protocol(
    tmp_path: Path, base: str, request: pytest.FixtureRequest
) -> None:
    if base.startswith("gs://") and request.getfixturevalue("gcs_server") is None:
        pytest.skip("gcsfs or gcp-storage-emulator is not installed")
    if base.startswith("az://") and request.getfixturevalue("azure_server") is None:
        pytest.skip("adlfs or Azurite is not installed")
    root = base.format(u=uuid.uuid4().hex[:8], tmp=tmp_path)
    keys = ["b.png", "a/x.jpg", "a/y.jpg", "a/deeper/z.png", "c.txt"]
    for i, key in enumerate(keys):
        storage.write_bytes(storage.join(root, key), bytes([i]) * (i + 1))
    assert storage.read_bytes(storage.join(root, "a/y.jpg")) == b"\x02" * 3
    assert storage.read_range(storage.join(root, "c.txt"), 1, 3) == b"\x04\x04"
    entries = list(storage.list_entries(root))
    assert sorted(e.key for e in entries) == sorted(keys)
    # Sorted within each folder: files sharing a stem are neighbours (the collision guard).
    assert [e.key for e in entries if e.key.startswith("a/") and "/" not in e.key[2:]] == [
        "a/x.jpg",
        "a/y.jpg",
    ]
    assert {e.key: e.size for e in entries}["a/deeper/z.png"] == 4
    assert storage.exists(storage.join(root, "b.png")) and not storage.exists(storage.join(root, "nope"))
    found = storage.stat_keys(root, ["b.png", "a/deeper/z.png", "missing.png"])
    assert set(found) == {"b.png", "a/deeper/z.png"} and found["b.png"].size == 1
    assert storage.list_folders(root) == ["a"]
    storage.check_writable(storage.join(root, "new", "folder"), folder=True)
    storage.delete_tree(storage.join(root, "a"))
    assert sorted(storage.list_files(root)) == ["b.png", "c.txt"]
    with pytest.raises(StylekitError, match="not found") as e:
        storage.read_bytes(storage.join(root, "gone.png"))
    _one_line(e)


def test_a_missing_protocol_package_is_named_in_one_line() -> None:
    for url, package in (("gs://bucket/in", "gcsfs"), ("az://container/in", "adlfs")):
        try:
            __import__(package)
            continue  # installed here: nothing to report
        except ImportError:
            pass
        with pytest.raises(StylekitError) as e:
            storage.read_bytes(url + "/x.png")
        scheme = url.split(":")[0]
        assert _one_line(e) == f"{scheme}:// needs {package}: pip install {package}"
    with pytest.raises(StylekitError, match="no fsspec filesystem is known for nosuch://") as e:
        storage.list_files("nosuch://x/y").__next__()
    _one_line(e)


def test_memory_urls_are_refused_for_ray_jobs(model_file: Path) -> None:
    from stylekit.bulk.config import BulkConfig
    from stylekit.bulk.driver import run_bulk

    with pytest.raises(StylekitError, match="lives in one process") as e:
        run_bulk(BulkConfig(model=str(model_file), input="memory://in", output="/tmp/never-written-out"))
    assert _one_line(e).startswith("--input memory://in")
    assert not os.path.exists("/tmp/never-written-out")


def test_vgg_weights_from_a_url() -> None:
    from safetensors.torch import save
    from torchvision.models import vgg16

    from stylekit.nn.vgg import convention_of, load_vgg

    torch.manual_seed(4)
    full = {k: v.contiguous() for k, v in vgg16(weights=None).features.state_dict().items()}
    data = save({f"features.{k}": v for k, v in full.items()}, metadata={"input": "BGR caffe"})
    url = f"memory://vgg-{uuid.uuid4().hex[:8]}/vgg16.safetensors"
    storage.write_bytes(url, data)
    assert convention_of(url).name == "caffe"  # read from the header alone
    net = load_vgg(url)
    torch.testing.assert_close(net.features[0].weight, full["0.weight"])
    with pytest.raises(StylekitError, match="no such file") as e:
        load_vgg(url + ".missing")
    _one_line(e)


# --- faults -----------------------------------------------------------------------------------


@pytest.mark.s3
def test_every_call_survives_a_flaky_store(s3_server: str) -> None:
    """30% of requests fail (503 SlowDown or a reset): every storage call still succeeds,
    control-plane writes (a manifest part, a key shard) included."""
    make_bucket("flaky-calls")
    with FlakyProxy(s3_server, fail_rate=0.3, seed=1) as proxy:
        opts = storage.StorageOptions(proxy.url)
        root = "s3://flaky-calls/data"
        payloads = {f"d/{i:02d}.png": _png(i) for i in range(12)}
        for key, data in payloads.items():
            storage.write_bytes(storage.join(root, key), data, opts)
        table = pa.table({"key": list(payloads)})
        buf = io.BytesIO()
        pq.write_table(table, buf)
        storage.write_bytes(storage.join(root, "_manifest/part-00000.parquet"), buf.getvalue(), opts)
        listed = [e.key for e in storage.list_entries(root, opts)]
        assert listed == sorted([*payloads, "_manifest/part-00000.parquet"])  # S3: lexicographic
        assert all(storage.read_bytes(storage.join(root, k), opts) == v for k, v in payloads.items())
        assert set(storage.stat_keys(root, [*payloads, "d/99.png"], opts)) == set(payloads)
        assert storage.exists(storage.join(root, "d/00.png"), opts)
        storage.check_writable(root, opts, folder=True)
        # What Ray gets reads through the same faults.
        fs, path = storage.arrow_filesystem(storage.join(root, "_manifest/part-00000.parquet"), opts)
        assert pq.read_table(path, filesystem=fs).equals(table)
        storage.delete_tree(storage.join(root, "d"), opts)
        assert list(storage.list_files(root, opts)) == ["_manifest/part-00000.parquet"]
    assert proxy.faults["503"] > 3 and proxy.faults["reset"] > 3, proxy.faults


@pytest.mark.s3
def test_a_persistent_fault_is_one_line_after_the_retries(
    s3_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_bucket("flaky-dead")
    monkeypatch.setattr(storage, "RETRY_ATTEMPTS", 3)
    monkeypatch.setattr(storage, "RETRY_BASE_SECONDS", 0.01)
    monkeypatch.setattr(storage, "S3_RETRY_CONFIG", {"retries": {"max_attempts": 1, "mode": "standard"}})
    with FlakyProxy(s3_server, fail_rate=1.0, kinds=("503",)) as proxy:
        opts = storage.StorageOptions(proxy.url)
        started = time.monotonic()
        with pytest.raises(StylekitError, match="still failing after 3 tries") as e:
            storage.write_bytes("s3://flaky-dead/out/x.png", b"x", opts)
        assert time.monotonic() - started < 60
    assert _one_line(e).startswith("cannot write s3://flaky-dead/out/x.png:")
    assert proxy.requests >= 3


# --- outputs that cannot be written -------------------------------------------------------------


def test_unwritable_outputs_are_one_line_errors(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_bytes(b"")
    cases = [
        (("/proc/x/out.png", False), "cannot make its folder /proc/x"),
        ((str(a_file / "out.png"), False), "a file stands where a folder should be"),
        ((str(a_file), True), "it is a file, not a folder"),
        ((str(tmp_path), False), "it is a folder"),
    ]
    for (location, folder), message in cases:
        with pytest.raises(StylekitError, match=message) as e:
            storage.check_writable(location, folder=folder)
        _one_line(e)


@pytest.mark.s3
def test_an_unwritable_bucket_is_one_line(s3_server: str) -> None:
    with pytest.raises(StylekitError, match="cannot write to s3://no-such-bucket-here/out") as e:
        storage.check_writable("s3://no-such-bucket-here/out", folder=True)
    _one_line(e)


def test_stylize_refuses_an_unwritable_output_before_stylizing(tmp_path: Path) -> None:
    photo = REPO / "stylekit" / "examples" / "content" / "coffee.jpg"
    cmd = [PYTHON, "-m", "stylekit", "stylize", "--model", "starry_night", "--output", "/proc/x/out.png"]
    run = subprocess.run([*cmd, str(photo)], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert run.returncode != 0
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert lines == [
        "error: cannot write /proc/x/out.png: cannot make its folder /proc/x (No such file or directory)"
    ]


def test_error_lines_are_cut_at_sentence_or_word_ends() -> None:
    long = "The model cannot be read. " + "It holds an object of an unsupported type. " * 20
    cut = first_line(long, 100)
    assert cut.endswith(". ...") and len(cut) <= 105 and long.startswith(cut[:-4])
    words = "word " * 50
    assert first_line(words, 23) == "word word word word ..."
    assert first_line("short line\nsecond") == "short line"
    assert first_line("x" * 500, 100) == "x" * 500  # one token: whole, never cut mid-word


# --- a hung decode ------------------------------------------------------------------------------


def test_a_hung_decode_becomes_a_failed_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from stylekit.bulk.engines import ray_photos as stages
    from stylekit.bulk.engines.rows import RowContext
    from stylekit.bulk.plan.layout import RunLayout

    (tmp_path / "ok.png").write_bytes(_png(1))
    (tmp_path / "hangs.png").write_bytes(_png(2))
    real = images.decode

    def decode(data: bytes, options: images.DecodeOptions = images.DecodeOptions()) -> np.ndarray:
        if data == _png(2):
            time.sleep(30)  # a pathological file
        return real(data, options)

    monkeypatch.setattr(images, "decode", decode)
    batch = {
        "key": np.array(["hangs.png", "ok.png"], dtype=object),
        "output_key": np.array(["hangs.png", "ok.png"], dtype=object),
        "input_bytes": np.array([1, 1]),
    }
    started = time.monotonic()
    layout = RunLayout(str(tmp_path), str(tmp_path / "out"), "run")
    context = RowContext(layout, storage.StorageOptions(), images.DecodeOptions(), 0.5, 95, "digest", 2)
    out = stages.decode_batch(batch, context)
    assert time.monotonic() - started < 10
    assert list(out["status"]) == [stages.FAILED, stages.DECODED]
    assert "--decode-timeout" in out["error"][0] and out["pixels"][1].shape == (10, 12, 3)
