"""jobs/train.py as a user runs it: real local Ray, 2 CPU workers, tiny images, random VGG.

Fault cases: a training worker killed mid-run (the run finishes from its last checkpoint), and
the driver killed right after its first checkpoint (the same command again resumes).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import PYTHON, REPO, FlakyProxy, make_bucket, upload_dir
from stylekit.nn.modelio import load_model

pytestmark = pytest.mark.ray

TRAIN = str(REPO / "jobs" / "train.py")
STYLE = str(REPO / "stylekit" / "examples" / "styles" / "wave.jpg")


def job_env(**extra: str) -> dict[str, str]:
    """A fresh local Ray per job (never someone's `ray start` cluster), quiet Ray warnings."""
    env = {**os.environ, "RAY_ADDRESS": "local", "PYTHONUNBUFFERED": "1", **extra}
    env.pop("RAY_AUTH_MODE", None)
    return env


def train_args(data: Path | str, output: Path | str, *more: str) -> list[str]:
    return [
        PYTHON, TRAIN, "--style", STYLE, "--data", str(data), "--output", str(output),
        "--vgg-weights", "random", "--image-size", "64", "--num-workers", "2",
        "--log-every", "1", "--batch-size", "2", "--epochs", "10", *more,
    ]  # fmt: skip


def run(args: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, env=job_env(), timeout=600, **kw)  # type: ignore[call-overload]


def worker_pids(actor_class: str) -> list[int]:
    """Pids of this process's Ray actor processes of `actor_class` (Ray titles them
    `ray::CLASS...`; ours descend from this process, which started their Ray), sorted: another
    Ray on the machine (a training in the background) has its own."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            except OSError:
                continue
            if title.startswith(f"ray::{actor_class}") and descends_from_us(int(entry.name)):
                pids.append(int(entry.name))
    return sorted(pids)


def descends_from_us(pid: int) -> bool:
    while pid > 1:
        if pid == os.getpid():
            return True
        try:
            # /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces, so split after ")".
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
    return False


def checkpoints(run_dir: Path) -> list[dict]:
    found = []
    for state in sorted(run_dir.glob("checkpoint_*/state.json")):
        with contextlib.suppress(ValueError):  # half-written: not a checkpoint yet
            found.append(json.loads(state.read_text()))
    return found


def test_trains_a_loadable_model_that_stylizes(tiny_train_dir: Path, tmp_path: Path) -> None:
    result = run(train_args(tiny_train_dir, tmp_path / "runs", "--max-steps", "3", "--checkpoint-every", "2"))
    assert result.returncode == 0, result.stderr[-3000:]
    model_path = tmp_path / "runs" / "wave" / "model.safetensors"
    assert result.stdout.strip().splitlines()[-1] == str(model_path)
    log = result.stderr + result.stdout
    assert "RANDOM" in log and "images/s" in log and "step 3/3" in log
    loaded = load_model(str(model_path))
    assert loaded.metadata["vgg_weights"] == "random:42"
    assert loaded.metadata["steps"] == "3" and loaded.metadata["image_size"] == "64"
    assert loaded.metadata["style"] == STYLE and loaded.metadata["stylekit_version"]
    ckpts = checkpoints(tmp_path / "runs" / "wave")
    assert sorted(c["step"] for c in ckpts) == [2, 3]
    ckpt_dirs = [p for p in (tmp_path / "runs" / "wave").glob("checkpoint_*") if p.is_dir()]
    assert len(ckpt_dirs) == 2 and all((p / "preview.jpg").exists() for p in ckpt_dirs)
    run_dir = tmp_path / "runs" / "wave"
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert sorted(p.name for p in (run_dir / "previews").iterdir()) == ["step_000002.jpg", "step_000003.jpg"]
    assert (
        Image.open(run_dir / "previews.jpg").height
        > 2 * Image.open(run_dir / "previews" / "step_000002.jpg").height
    )
    styled = tmp_path / "styled.png"
    content = tiny_train_dir / sorted(os.listdir(tiny_train_dir))[0]
    cli = subprocess.run(
        [PYTHON, "-m", "stylekit", "stylize", "--model", str(model_path), "--output", str(styled), str(content)],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert Image.open(styled).size == Image.open(content).size


def test_unreadable_training_images_are_skipped_and_counted(tiny_train_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for p in sorted(tiny_train_dir.iterdir())[:4]:
        (data / p.name).write_bytes(p.read_bytes())
    (data / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (data / "notes.txt").write_text("ignored: not an image extension")
    result = run(train_args(data, tmp_path / "runs", "--max-steps", "1"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "skipped 1 unreadable training image(s)" in result.stderr
    assert "broken.jpg" in result.stderr


def test_driver_killed_after_first_checkpoint_then_rerun_resumes(
    tiny_train_dir: Path, tmp_path: Path
) -> None:
    args = train_args(tiny_train_dir, tmp_path / "runs", "--max-steps", "6", "--checkpoint-every", "2")
    run_dir = tmp_path / "runs" / "wave"
    driver = subprocess.Popen(
        args,
        env=job_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    deadline = time.time() + 400
    while not checkpoints(run_dir):
        assert driver.poll() is None, driver.stdout.read() if driver.stdout else ""
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    # The moment the first checkpoint lands: kill the driver and everything it started.
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait(timeout=60)
    assert not (run_dir / "model.safetensors").exists()

    result = run(args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from step 2" in result.stderr
    assert load_model(str(run_dir / "model.safetensors")).metadata["steps"] == "6"
    assert max(c["step"] for c in checkpoints(run_dir)) == 6


def test_worker_killed_mid_run_is_replaced_and_the_run_finishes(
    tiny_train_dir: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    import ray

    from stylekit.train.config import TrainConfig
    from stylekit.train.ray_job import run_training

    config = TrainConfig(
        style=STYLE, data=str(tiny_train_dir), output=str(tmp_path / "runs"), vgg_weights="random",
        image_size=64, num_workers=2, max_steps=12, checkpoint_every=2, log_every=1, batch_size=2, epochs=10,
    )  # fmt: skip
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    try:
        outcome: dict[str, object] = {}
        thread = threading.Thread(target=lambda: outcome.setdefault("model", run_training(config)))
        thread.start()
        deadline = time.time() + 400
        while not checkpoints(Path(config.run_dir)):
            assert thread.is_alive() and time.time() < deadline
            time.sleep(0.2)
        # The workers' pids from their process titles: at once, where the state API (through
        # the dashboard) took long enough on a loaded machine for the run to end first.
        workers = worker_pids("RayTrainWorker")
        assert len(workers) == 2, workers
        assert not Path(config.model_path).exists(), "the run ended before a worker could be killed"
        os.kill(workers[-1], signal.SIGKILL)
        thread.join(timeout=500)
        assert not thread.is_alive()
    finally:
        ray.shutdown()
    assert outcome["model"] == config.model_path
    assert load_model(config.model_path).metadata["steps"] == "12"
    captured = capfd.readouterr()  # Ray forwards worker logs to either stream
    assert "resumed from step" in captured.err + captured.out


@pytest.mark.s3
def test_style_data_and_output_on_s3(s3_server: str, tiny_train_dir: Path, tmp_path: Path) -> None:
    make_bucket("train-bucket")
    upload_dir(tiny_train_dir, "train-bucket", "photos/nested")
    import boto3

    boto3.client("s3").upload_file(STYLE, "train-bucket", "styles/wave.jpg")
    args = [
        PYTHON, TRAIN, "--style", "s3://train-bucket/styles/wave.jpg", "--data", "s3://train-bucket/photos",
        "--output", "s3://train-bucket/runs", "--name", "wave-s3", "--vgg-weights", "random",
        "--image-size", "64", "--num-workers", "2", "--max-steps", "2", "--s3-endpoint", s3_server,
    ]  # fmt: skip
    env = {k: v for k, v in job_env().items() if k != "AWS_ENDPOINT_URL"}  # the flag alone must do
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "s3://train-bucket/runs/wave-s3/model.safetensors"
    keys = [
        o["Key"]
        for o in boto3.client("s3").list_objects_v2(Bucket="train-bucket", Prefix="runs/")["Contents"]
    ]
    assert "runs/wave-s3/model.safetensors" in keys
    assert any(k.endswith("/preview.jpg") for k in keys) and any(k.endswith("/state.json") for k in keys)
    assert "testing" not in result.stderr  # credentials never logged
    from stylekit.files.storage import StorageOptions

    loaded = load_model("s3://train-bucket/runs/wave-s3/model.safetensors", StorageOptions(s3_server))
    assert loaded.metadata["steps"] == "2"


def test_help_documents_every_flag_with_its_default() -> None:
    result = run([PYTHON, TRAIN, "--help"])
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for flag in ("--epochs", "--max-steps", "--batch-size", "--image-size", "--lr", "--content-weight",
                 "--style-weight", "--tv-weight", "--style-size", "--vgg-weights", "--seed",
                 "--checkpoint-every", "--num-workers", "--gpu", "--cpu", "--output", "--name"):  # fmt: skip
        assert flag in text, flag
    assert "(default: 0.001)" in text and "(default: caffe)" in text
    # The loss weights' defaults depend on the loss network; the help says both.
    assert "1 for caffe, 1e5 for imagenet" in text and "5 for caffe, 1e10 for imagenet" in text


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--batch-size", "0"], "error: --batch-size must be >= 1 (got 0)"),
        (["--lr", "-1"], "error: --lr must be > 0 (got -1.0)"),
        (["--data", "/nonexistent/photos"], "error: /nonexistent/photos: no such folder"),
        (["--style", "/nonexistent/style.jpg"], "error: /nonexistent/style.jpg: not found"),
        (["--epochs", "two"], "--epochs expects int, got 'two'"),
        (
            ["--vgg-weights", "/nonexistent/vgg.pth"],
            "error: --vgg-weights '/nonexistent/vgg.pth': no such file",
        ),
    ],
)
def test_bad_values_get_one_line_errors(
    flags: list[str], message: str, tiny_train_dir: Path, tmp_path: Path
) -> None:
    args = [
        PYTHON,
        TRAIN,
        "--data",
        str(tiny_train_dir),
        "--output",
        str(tmp_path),
        "--vgg-weights",
        "random",
        *flags,
    ]
    result = run(args)
    assert result.returncode == 2
    lines = [line for line in result.stderr.strip().splitlines() if "RANDOM" not in line]
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_imagenet_weights_unavailable_offline_is_one_line(tmp_path: Path, tiny_train_dir: Path) -> None:
    env = job_env(
        TORCH_HOME=str(tmp_path / "torch"), HTTPS_PROXY="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9"
    )
    result = subprocess.run(
        [PYTHON, TRAIN, "--data", str(tiny_train_dir), "--output", str(tmp_path), "--vgg-weights", "imagenet"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: cannot get the VGG-16 ImageNet weights")
    assert "vgg16-397923af.pth" in line and str(tmp_path / "torch" / "hub" / "checkpoints") in line
    assert "--vgg-weights caffe" in line and "Traceback" not in result.stderr


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


@pytest.mark.s3
def test_a_flaky_store_then_a_rerun_resumes_and_leaves_no_temporary_files(
    s3_server: str, tiny_train_dir: Path
) -> None:
    """Everything on S3 behind an endpoint failing 15% of requests (503 SlowDown or a reset):
    the run finishes; a rerun with more steps resumes from its checkpoint on S3 (each worker
    fetches its own copy) and leaves no temporary copy behind."""
    make_bucket("train-flaky")
    upload_dir(tiny_train_dir, "train-flaky", "photos")
    import boto3

    boto3.client("s3").upload_file(STYLE, "train-flaky", "styles/wave.jpg")
    # A short TMPDIR of its own (Ray's socket paths under it must stay below 108 bytes).
    temp = Path(tempfile.mkdtemp(prefix="sk-train-"))
    env = {k: v for k, v in job_env(TMPDIR=str(temp)).items() if k != "AWS_ENDPOINT_URL"}
    with FlakyProxy(s3_server, fail_rate=0.15, seed=7) as proxy:
        args = [
            PYTHON, TRAIN, "--style", "s3://train-flaky/styles/wave.jpg", "--data", "s3://train-flaky/photos",
            "--output", "s3://train-flaky/runs", "--name", "wave", "--vgg-weights", "random",
            "--image-size", "64", "--num-workers", "2", "--batch-size", "2", "--checkpoint-every", "2",
            "--s3-endpoint", proxy.url,
        ]  # fmt: skip
        first = subprocess.run(
            [*args, "--max-steps", "2"], capture_output=True, text=True, env=env, timeout=600
        )
        assert first.returncode == 0, first.stderr[-3000:]
        second = subprocess.run(
            [*args, "--max-steps", "4"], capture_output=True, text=True, env=env, timeout=600
        )
        assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from step 2" in second.stderr
    assert proxy.faults["503"] + proxy.faults["reset"] > 5, proxy.faults
    from stylekit.files.storage import StorageOptions

    loaded = load_model("s3://train-flaky/runs/wave/model.safetensors", StorageOptions(s3_server))
    assert loaded.metadata["steps"] == "4"
    left = [p.name for p in temp.iterdir() if p.name.startswith(("stylekit-", "checkpoint_tmp_"))]
    shutil.rmtree(temp, ignore_errors=True)
    assert not left, left
