"""The bulk job without Ray (--engine local, auto's choice on a small machine with no cluster):
the same accounting, pixels, reruns and decode timeouts as on Ray, in the job's own process."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from stylekit.bulk.config import BulkConfig
from stylekit.bulk.plan.planner import Plan
from stylekit.cli import config_from_flags
from stylekit.errors import ConfigError


def _png(seed: int, w: int = 20, h: int = 14) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _bulk(**kw: Any) -> Any:
    from stylekit.bulk.driver import run_bulk

    return run_bulk(config_from_flags(BulkConfig, engine="local", progress_every=1.0, **kw))


def test_local_engine_accounts_every_input_with_the_cli_pixels_and_reruns_skip(
    model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray

    from stylekit.__main__ import main
    from stylekit.bulk.engines import local

    src, out = tmp_path / "in", tmp_path / "out"
    files = {f"d/p{i:02d}.png": _png(i, 16 + i % 3, 12) for i in range(21)} | {
        "bad/empty.png": b"",
        "bad/text.jpg": b"not a jpeg",
    }
    for key, data in files.items():
        (src / key).parent.mkdir(parents=True, exist_ok=True)
        (src / key).write_bytes(data)
    monkeypatch.setattr(local, "BLOCK_ROWS", 5)  # several blocks, rows a block at a time
    was_up = ray.is_initialized()
    first = _bulk(model=str(model_file), input=str(src), output=str(out))
    assert (first.ok, first.failed, first.skipped) == (21, 2, 0)
    assert ray.is_initialized() == was_up  # no Ray started
    rows = pq.read_table(first.manifest).to_pylist()
    assert sorted(r["input"] for r in rows) == sorted(str(src / k) for k in files)  # each once
    bad = {Path(r["input"]).name: r for r in rows if r["status"] == "failed"}
    assert set(bad) == {"empty.png", "text.jpg"} and "empty" in bad["empty.png"]["error"]
    assert all(r["output_bytes"] and r["width"] and r["seconds"] > 0 for r in rows if r["status"] == "ok")
    inputs = [str(src / k) for k in sorted(files) if k.startswith("d/")][:4]
    assert main(["stylize", "--model", str(model_file), "--output", str(tmp_path / "cli"), *inputs]) == 0
    for path in inputs:
        name = Path(path).name
        cli = np.asarray(Image.open(tmp_path / "cli" / name))
        assert np.array_equal(np.asarray(Image.open(out / "d" / name)), cli), name
    assert not list(out.rglob(".tmp*")) and not list(out.rglob("*.tmp"))
    again = _bulk(model=str(model_file), input=str(src), output=str(out))
    assert (again.ok, again.failed, again.skipped) == (0, 2, 21)


def test_a_decode_past_the_timeout_fails_alone_in_the_local_engine(
    model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stylekit.files import images

    src = tmp_path / "in"
    src.mkdir()
    for i in range(4):
        (src / f"p{i}.png").write_bytes(_png(40 + i))
    real = images.decode

    def slow(data: bytes, options: images.DecodeOptions = images.DecodeOptions()) -> np.ndarray:
        if data == (src / "p2.png").read_bytes():
            time.sleep(5)  # a pathological file
        return real(data, options)

    monkeypatch.setattr(images, "decode", slow)
    summary = _bulk(model=str(model_file), input=str(src), output=str(tmp_path / "out"), decode_timeout=0.5)
    assert (summary.ok, summary.failed) == (3, 1)
    (row,) = [r for r in pq.read_table(summary.manifest).to_pylist() if r["status"] == "failed"]
    assert row["input"].endswith("p2.png") and "--decode-timeout" in row["error"]


def test_auto_runs_here_only_on_a_small_machine_with_no_cluster_and_no_videos(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from concurrent.futures import Future

    from stylekit.bulk import driver

    def engine(cuda: bool = False, videos: int = 0, **flags: Any) -> str:
        checked: Future[bool] = Future()
        checked.set_result(cuda)
        config = config_from_flags(BulkConfig, model="m", input="i", output="o", **flags)
        return driver._engine(config, Plan(todo=3, videos=videos), checked)

    monkeypatch.setattr(driver, "cluster_to_join", lambda: False)
    monkeypatch.setattr(driver, "machine_cpus", lambda: 2)
    assert engine() == "local"
    assert engine(cuda=True) == "ray" and engine(videos=1) == "ray" and engine(engine="ray") == "ray"
    with pytest.raises(ConfigError, match="--engine ray"):
        engine(videos=1, engine="local")
    monkeypatch.setattr(driver, "machine_cpus", lambda: 16)
    assert engine() == "ray" and engine(engine="local") == "local"
    monkeypatch.setattr(driver, "machine_cpus", lambda: 2)
    monkeypatch.setattr(driver, "cluster_to_join", lambda: True)
    assert engine() == "ray"
    with pytest.raises(ConfigError, match="--engine"):
        BulkConfig(model="m", input="i", output="o", engine="spark")
