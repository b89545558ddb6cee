"""The jobs on a multi-node Ray made on this machine (`ray.cluster_utils.Cluster`: a head that
takes no work, worker nodes of a few CPUs, each its own raylet and object store), as a user
runs them, through RAY_ADDRESS: sizing from the nodes that exist, nodes lost mid-run (with and
without a replacement), a run that stalls, elastic training, and what a run prints.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import PYTHON, REPO, add_workers, cluster_env, stylekit_lines
from stylekit import exitcodes

pytestmark = pytest.mark.ray

JOB = str(REPO / "jobs" / "stylize.py")


def photos(folder: Path, n: int, side: int = 16) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(folder / f"p{i:03d}.png")
    return folder


def bulk_args(model: Path, inp: Path, out: Path, *more: str) -> list[str]:
    return [
        PYTHON,
        JOB,
        "--model",
        str(model),
        "--input",
        str(inp),
        "--output",
        str(out),
        "--batch-size",
        "2",
        *more,
    ]


def outputs(out: Path) -> set[str]:
    return {p.name for p in out.glob("*.png")}


def manifest_rows(out: Path) -> list[dict[str, Any]]:
    return [
        row
        for part in sorted(out.glob("_manifest/run=*/part-*.parquet"))
        for row in pq.read_table(part).to_pylist()
    ]


def wait_for(predicate: Any, proc: subprocess.Popen[str], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the job ended before {what}: {((out or '') + (err or ''))[-3000:]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_actors_sized_to_small_nodes_and_a_demand_no_node_meets_is_one_line(
    ray_cluster: Any, model_file: Path, tmp_path: Path
) -> None:
    add_workers(ray_cluster, 2, cpus=2)
    inp, out = photos(tmp_path / "in", 6), tmp_path / "out"
    env = cluster_env(ray_cluster)
    started = time.monotonic()
    bad = subprocess.run(
        bulk_args(model_file, inp, out, "--cpus-per-actor", "4"),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--cpus-per-actor" in errors[0] and "2 CPUs" in errors[0], bad.stderr
    assert "Traceback" not in bad.stderr and time.monotonic() - started < 90  # no hang
    good = subprocess.run(
        bulk_args(model_file, inp, out), env=env, capture_output=True, text=True, timeout=300
    )
    assert good.returncode == 0, good.stderr[-3000:]
    assert "actor(s) of 1 CPU each" in good.stderr  # never the sum's 4 CPU
    assert json.loads(good.stdout.splitlines()[-1])["ok"] == 6
    # What a run on a cluster prints: stylekit's own lines (the driver's and its actors'), and
    # none of Ray's routine ones, the line Ray's C++ core worker writes straight to the
    # driver's stderr when Ray Data starts an actor pool included (stylekit/stderr_filter.py).
    own = re.compile(
        r"^(\x1b\[\d+m)?(\(\S+ pid=\d+(, ip=\S+)?\)(\x1b\[0m)? )?\d\d:\d\d:\d\d [A-Z]+ stylekit[.:]"
    )
    lines = stylekit_lines(good.stderr)
    foreign = [line for line in lines if not own.match(line)]
    assert not foreign, "\n".join(foreign)
    assert 5 <= len(lines) <= 14, "\n".join(lines)


def test_the_node_holding_the_model_dies_and_a_replacement_finishes_every_input_once(
    ray_cluster: Any, model_file: Path, tmp_path: Path
) -> None:
    (worker,) = add_workers(ray_cluster, 1, cpus=2)
    n = 120
    inp, out = photos(tmp_path / "in", n), tmp_path / "out"
    proc = subprocess.Popen(
        bulk_args(model_file, inp, out, "--stall-timeout", "240"),
        env=cluster_env(ray_cluster),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: len(outputs(out)) >= 10, proc, 240, "the first outputs")
        ray_cluster.remove_node(worker, allow_graceful=False)  # a spot node gone, no warning
        time.sleep(3)
        add_workers(ray_cluster, 1, cpus=2)  # its replacement joins
        stdout, stderr = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    summary = json.loads(stdout.splitlines()[-1])
    assert (summary["ok"], summary["failed"]) == (n, 0)
    assert outputs(out) == {f"p{i:03d}.png" for i in range(n)}
    rows = manifest_rows(out)
    assert sorted(Path(r["input"]).name for r in rows) == sorted(outputs(out))  # each input once


def test_one_of_two_nodes_lost_without_replacement_the_job_goes_on(
    ray_cluster: Any, model_file: Path, tmp_path: Path
) -> None:
    first, _ = add_workers(ray_cluster, 2, cpus=2)
    n = 120
    inp, out = photos(tmp_path / "in", n), tmp_path / "out"
    proc = subprocess.Popen(
        bulk_args(model_file, inp, out, "--stall-timeout", "120"),
        env=cluster_env(ray_cluster),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: len(outputs(out)) >= 10, proc, 240, "the first outputs")
        ray_cluster.remove_node(first, allow_graceful=False)
        stdout, stderr = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
    Path("/tmp/one_of_two.err").write_text(stderr)
    assert proc.returncode == 0, stderr[-3000:]
    assert json.loads(stdout.splitlines()[-1])["ok"] == n
    rows = manifest_rows(out)
    assert len(rows) == n and len({r["input"] for r in rows}) == n


def test_a_run_whose_nodes_are_all_gone_stalls_with_one_line_and_a_rerun_finishes(
    ray_cluster: Any, model_file: Path, tmp_path: Path
) -> None:
    (worker,) = add_workers(ray_cluster, 1, cpus=2)
    n = 120
    inp, out = photos(tmp_path / "in", n), tmp_path / "out"
    args = bulk_args(model_file, inp, out, "--stall-timeout", "8", "--wait-for-nodes", "0")
    env = cluster_env(ray_cluster)
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Outputs are written inside a block (8 inputs here, two in flight on two CPUs) and its
        # manifest rows reach the driver when the block ends: wait past a few whole blocks.
        wait_for(lambda: len(outputs(out)) >= 40, proc, 240, "the first blocks")
        ray_cluster.remove_node(worker, allow_graceful=False)  # nothing left to run on
        _stdout, stderr = proc.communicate(timeout=200)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == exitcodes.STALLED, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "stalled" in errors[0] and "--stall-timeout 8" in errors[0], stderr[-3000:]
    assert "stage stopped" in errors[0] and "Ray cannot place" in errors[0]
    assert "Traceback" not in stderr.split(errors[0])[-1]  # nothing from Ray's threads after it
    settled = manifest_rows(out)
    assert {Path(r["input"]).name for r in settled if r["status"] == "ok"} <= outputs(out)
    assert settled, "what settled before the stall is in the manifest"

    add_workers(ray_cluster, 1, cpus=2)
    rerun = subprocess.run(
        bulk_args(model_file, inp, out), env=env, capture_output=True, text=True, timeout=400
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    summary = json.loads(rerun.stdout.splitlines()[-1])
    assert summary["failed"] == 0 and summary["ok"] + summary["skipped"] == n
    assert outputs(out) == {f"p{i:03d}.png" for i in range(n)}
    assert stylekit_lines(rerun.stderr)  # (used by the log test below)


def test_the_head_lost_mid_run_ends_the_job_with_one_line_and_the_next_run_records_what_it_wrote(
    ray_cluster: Any, model_file: Path, tmp_path: Path
) -> None:
    """The head (GCS and all) killed mid-run: the job ends with one line and CLUSTER_LOST well
    before Ray's own reconnect timeout would end it with status 1 and no line of ours; its
    manifest holds the rows that reached the driver, its lease is released, and the next run
    (without a cluster: --engine local) keeps every output written, recording those without a
    row, and does only the rest."""
    from stylekit.bulk.plan.lease import LEASE_FILE

    add_workers(ray_cluster, 1, cpus=2)
    n = 240
    inp, out = photos(tmp_path / "in", n, side=32), tmp_path / "out"
    env = cluster_env(ray_cluster, RAY_gcs_rpc_server_reconnect_timeout_s="30")  # ours: 15 s
    proc = subprocess.Popen(
        bulk_args(model_file, inp, out, "--stall-timeout", "600"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(
            lambda: len(manifest_rows(out)) >= 10 and len(outputs(out)) >= 20, proc, 300, "the first rows"
        )
        ray_cluster.remove_node(ray_cluster.head_node, allow_graceful=False)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == exitcodes.CLUSTER_LOST, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "lost the Ray cluster" in errors[0], stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == errors[0] and "Traceback" not in stderr, stderr[-3000:]
    assert '"ok":' not in stdout, "no summary: the run did not finish"
    assert not (out / "_manifest" / LEASE_FILE).exists(), "the lease was not released"
    written = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    recorded = {Path(r["input"]).name for r in manifest_rows(out) if r["status"] == "ok"}
    assert len(recorded) >= 10 and recorded <= set(written)

    local = {k: v for k, v in env.items() if k != "RAY_ADDRESS"}
    rerun = subprocess.run(
        bulk_args(model_file, inp, out, "--engine", "local"),
        env=local,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    summary = json.loads(rerun.stdout.splitlines()[-1])
    assert (summary["ok"], summary["skipped"], summary["failed"]) == (n - len(written), len(written), 0)
    assert all(out.joinpath(name).stat().st_mtime_ns == at for name, at in written.items()), (
        "an output was rewritten"
    )
    if set(written) - recorded:
        assert "recorded now" in rerun.stderr


# --- training ------------------------------------------------------------------------------------

TRAIN = str(REPO / "jobs" / "train.py")
STYLE = str(REPO / "stylekit" / "examples" / "styles" / "wave.jpg")


def train_args(data: Path, output: Path, *more: str) -> list[str]:
    return [
        PYTHON, TRAIN, "--style", STYLE, "--data", str(data), "--output", str(output),
        "--vgg-weights", "random", "--image-size", "32", "--log-every", "1", "--batch-size", "2",
        "--checkpoint-every", "2", *more,
    ]  # fmt: skip


def complete_steps(run_dir: Path) -> list[int]:
    found = []
    for state in run_dir.glob("checkpoint_*/state.json"):
        try:
            found.append(json.loads(state.read_text())["step"])
        except ValueError:
            continue
    return found


def test_elastic_training_loses_a_workers_node_and_goes_on_with_fewer(
    ray_cluster: Any, tiny_train_dir: Path, tmp_path: Path
) -> None:
    from stylekit.nn.modelio import load_model

    # One 2-CPU worker per 3-CPU node, a CPU left on each for data loading.
    first, _ = add_workers(ray_cluster, 2, cpus=3)
    run_dir = tmp_path / "runs" / "wave"
    args = train_args(tiny_train_dir, tmp_path / "runs", "--num-workers", "1-2", "--cpus-per-worker", "2")
    args += ["--max-steps", "6", "--stall-timeout", "300"]
    proc = subprocess.Popen(
        args, env=cluster_env(ray_cluster), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        wait_for(lambda: bool(complete_steps(run_dir)), proc, 300, "the first checkpoint")
        ray_cluster.remove_node(first, allow_graceful=False)  # the node of one of the two workers
        output, _ = proc.communicate(timeout=500)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output[-4000:]
    assert "resumed from step" in output
    # The log a person reads: stylekit's lines, not Ray's routine ones, even after a node loss.
    for routine in (
        "Reporting training result",
        "Failed to query Ray Train Controller",
        "Starting execution",
    ):
        assert routine not in output
    meta = load_model(str(run_dir / "model.safetensors")).metadata
    assert meta["steps"] == "6" and meta["num_workers"] == "1-2"
    counts = meta["worker_counts"]
    assert counts.startswith("2 from step 1, 1 from step "), counts


def test_training_whose_only_node_is_gone_stalls_with_one_line_and_a_rerun_resumes(
    ray_cluster: Any, tiny_train_dir: Path, tmp_path: Path
) -> None:
    (worker,) = add_workers(ray_cluster, 1, cpus=3)
    run_dir = tmp_path / "runs" / "wave"
    args = train_args(tiny_train_dir, tmp_path / "runs", "--num-workers", "1", "--cpus-per-worker", "2")
    env = cluster_env(ray_cluster)
    proc = subprocess.Popen(
        [*args, "--max-steps", "400", "--stall-timeout", "90", "--wait-for-nodes", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(lambda: bool(complete_steps(run_dir)), proc, 300, "the first checkpoint")
        ray_cluster.remove_node(worker, allow_graceful=False)  # nowhere left for the worker
        output, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0, output[-4000:]
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output[-4000:]
    assert "training stalled" in errors[0] and "--stall-timeout 90" in errors[0], errors[0]
    assert "run the same command again" in errors[0]
    assert "Traceback" not in output.split(errors[0])[-1]
    for routine in (
        "Requesting resources:",
        "Attempting to start training worker group",
        "Reporting training",
    ):
        assert routine not in output
    saved = max(complete_steps(run_dir))

    add_workers(ray_cluster, 1, cpus=3)
    rerun = subprocess.run(
        [*args, "--max-steps", str(saved + 2)], env=env, capture_output=True, text=True, timeout=400
    )
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert f"resumed from step {saved}" in rerun.stderr + rerun.stdout
