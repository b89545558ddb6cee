"""tools/gpu_run/gpu_run.py's dry run: every part of the GPU run walked at tiny sizes on the CPU, so
the one prepared GPU command does not rot between the rare GPU leases (tools/gpu_run/README.md)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from conftest import PYTHON, REPO

GPU_RUN = REPO / "tools" / "gpu_run" / "gpu_run.py"
HAS_RAY = importlib.util.find_spec("ray") is not None


def results(log: Path) -> list[dict]:
    return [
        json.loads(ln.split(" ", 1)[1]) for ln in log.read_text().splitlines() if ln.startswith("@@result ")
    ]


@pytest.mark.ray
def test_dry_run_walks_every_part(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [PYTHON, str(GPU_RUN), "--dry-run", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=850,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = sorted(p.name for p in out.iterdir())
    # What the GPU machine returns is at most 8 files: the run keeps to 6.
    assert files == ["bench.log", "models.tar", "ray.log", "summary.md", "tests.log", "train.log"]
    summary = (out / "summary.md").read_text()
    for part in ("tests", "bench", "train", "ray"):
        assert f"| {part} | ok |" in summary, summary
    assert "## Targets" in summary and "training, 256 px: >= 1500 img/s" in summary

    tests = results(out / "tests.log")
    cases = {name: status for t in tests for status, name, _ in t["cases"]}
    assert any(n.startswith("test_cuda_") for n in cases) and "PASSED" in cases.values()

    benches = {r["bench"]: r for r in results(out / "bench.log") if r["kind"] == "bench"}
    assert set(benches) >= {"train", "stylize", "bulk", "profile"}
    assert all(r["status"] == "ok" for r in benches.values()), benches
    assert all(r["table"] for k, r in benches.items() if k != "profile")
    kinds = {r["kind"] for r in results(out / "bench.log")}
    assert {"flops", "roofs", "profile"} <= kinds

    (trained,) = [r for r in results(out / "train.log") if r.get("style")]
    assert trained["steps"] == 2
    with tarfile.open(out / "models.tar") as tar:
        names = tar.getnames()
    assert names == [f"{trained['style']}/model.safetensors"]

    ray = {r["step"]: r for r in results(out / "ray.log")}
    if HAS_RAY:
        assert [ray[s]["status"] for s in ("start", "train", "bulk")] == ["ok"] * 3, ray
        assert ray["train"]["backend"] == "gloo" and ray["train"]["all_reduce"] == 1.0
        assert ray["bulk"]["ok"] == 2
    else:
        assert ray["import"]["status"].startswith("unavailable")


def test_gpu_marker_selects_exactly_the_cuda_tests() -> None:
    """`pytest -m gpu` (the real run) selects the test_cuda_* tests the dry run picks by name."""
    proc = subprocess.run(
        [PYTHON, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-m", "gpu", "tests/test_fast_paths.py"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    selected = {ln.split("::")[1].split("[")[0] for ln in proc.stdout.splitlines() if "::" in ln}
    source = (REPO / "tests" / "test_fast_paths.py").read_text()
    named = {ln.split("(")[0][4:] for ln in source.splitlines() if ln.startswith("def test_cuda_")}
    assert selected == named and len(named) >= 5
