"""The bulk family's harness: what bench_bulk, bench_cpu, bench_scale and bench_pipeline share.

- `make_inputs`: the one input maker, a folder of distinct images (photos or noise) of the
  sizes asked for, made once and kept when --work names a folder that already holds them.
- `run_process`: the one whole-process timer: wall seconds from the start to the exit, the CPU
  seconds of every process it started (Ray's included), the first output's time (the fixed
  cost), and a stop (SIGTERM) when a condition holds.
- The bulk job with what a benchmark measures around it: in this process (`run_job`) or in a
  process of its own (`job_command`, which runs `python benchmarks/harness.py job IN OUT ...`:
  `run_night` as jobs/stylize.py calls it, then one JSON line).
The report table is `common.table`.

The seam: `run_night(config, engine)` takes the engine a benchmark makes (bulk/engines/engine.py):
`_engine` makes it, the job's own with the photo stage's actor class of the benchmark's choice,
wrapped so that it is timed while it runs; it is the one place in benchmarks/ that knows it.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import common
import numpy as np
from PIL import Image

REPO = common.REPO
MARKER = "STYLEKIT_BENCH_MARKER"  # in the environment of every process a timed run starts
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
ONE_MP = [(1280, 800), (1152, 864), (1024, 1024), (800, 1280), (1222, 818)]  # ~1 MP camera shapes
SOURCES = 8  # distinct photos a set is made from (then the same with a little noise)
ACTORS = ("stylize", "timed", "identity")


# --- inputs -----------------------------------------------------------------------------------


def make_inputs(folder: Path, sizes: Sequence[tuple[int, int]], kind: str = "photo", quality: int = 90,
                suffix: str = "jpg") -> list[Path]:  # fmt: skip
    """One image per (width, height) in `sizes`, in sub-folders of 1000, no two alike. `photo`:
    the bundled or shared photos, cover-cropped to the size, with +-2 levels of noise once they
    repeat; `noise`: uniform noise with the image's index in its first pixel."""
    paths = [folder / f"d{i // 1000:03d}" / f"{kind}{i:06d}.{suffix}" for i in range(len(sizes))]
    signature = hashlib.sha256(json.dumps([kind, quality, suffix, sizes]).encode()).hexdigest()
    done = folder / ".complete"
    if done.is_file() and done.read_text() == signature:
        return paths
    shutil.rmtree(folder, ignore_errors=True)
    rng = np.random.default_rng(0)
    sources = min(SOURCES, len(common.photo_files()))
    base: dict[tuple[int, int, int], np.ndarray] = {}
    for i, (path, (w, h)) in enumerate(zip(paths, sizes, strict=True)):
        key = (i % (sources if kind == "photo" else 64), w, h)
        if key not in base:
            base[key] = (common.photos(1, w, h, start=key[0])[0] if kind == "photo"
                         else rng.integers(0, 256, (h, w, 3), dtype=np.uint8))  # fmt: skip
        pixels = base[key].copy()
        if kind == "noise":
            pixels[0, 0] = (i % 256, (i // 256) % 256, (i // 65536) % 256)
        elif i >= sources:
            pixels = np.clip(pixels.astype(np.int16) + rng.integers(-2, 3, pixels.shape), 0, 255).astype(
                np.uint8
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path, quality=quality)
    done.write_text(signature)
    return paths


def outputs_of(folder: Path) -> list[Path]:
    """The images under a job's or command's output folder (its manifest aside)."""
    return [p for p in folder.rglob("*") if p.is_file() and "_manifest" not in p.parts]


# --- the whole-process timer ---------------------------------------------------------------------


class TreeCPU:
    """CPU seconds (user + system) of every process whose environment holds `marker`, polled
    from /proc; a process's last reading counts once it is gone (at most `every` s lost)."""

    def __init__(self, marker: str, every: float = 0.2):
        self.tag = f"{MARKER}={marker}".encode()
        self.every, self.seen, self.alive = every, {}, set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _poll(self) -> None:
        alive = set()
        for pid in (p for p in os.listdir("/proc") if p.isdigit()):
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    if self.tag not in f.read():
                        continue
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                self.seen[pid] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
                alive.add(pid)
            except OSError:
                continue
        self.alive = alive

    def _run(self) -> None:
        while not self._stop.is_set():
            self._poll()
            self._stop.wait(self.every)

    def __enter__(self) -> TreeCPU:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def seconds(self) -> float:
        return sum(self.seen.values())


def job_env(**extra: str) -> dict[str, str]:
    """This checkout's stylekit and a fresh local Ray: never a cluster the caller's RAY_* names."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_ADDRESS="local", PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", **extra)
    return env


@dataclass(frozen=True)
class Timed:
    """One whole process: wall and CPU seconds (`driver`: the process itself, `cpu`: with all
    it started), the oldest output's mtime (`first_at`, absolute) and the start's."""

    wall: float
    cpu: float
    driver: float
    start: float
    first_at: float | None
    outputs: int
    stopped: bool
    stdout: str

    @property
    def first(self) -> float | None:
        """Seconds from the process start to its first output: the fixed cost."""
        return None if self.first_at is None else self.first_at - self.start

    def json(self) -> dict[str, Any]:
        """The last line of its output, as JSON (the job's summary; `job_command`'s result)."""
        return json.loads(self.stdout.strip().splitlines()[-1])


def run_process(cmd: Sequence[str], outputs: Path | None = None, env: dict[str, str] | None = None,
                stop_when: Callable[[], bool] | None = None, linger: float = 30.0) -> Timed:  # fmt: skip
    """Run `cmd` from the checkout as a process of its own and time it; SIGTERM it once
    `stop_when` holds (polled twice a second). Its processes (Ray's too) are waited for up to
    `linger` s after it exits, then killed by pid. Exits with its stderr if it failed."""
    marker = secrets.token_hex(6)
    env = {**(env or job_env()), MARKER: marker}
    if outputs is not None:
        shutil.rmtree(outputs, ignore_errors=True)
    stopped = False
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err, TreeCPU(marker) as cpu:
        start = time.time()
        proc = subprocess.Popen(list(cmd), cwd=REPO, env=env, stdout=out, stderr=err, text=True)
        while proc.poll() is None:
            if stop_when is not None and not stopped and stop_when():
                proc.send_signal(signal.SIGTERM)
                stopped = True
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(0.5)
        wall = time.time() - start
        deadline = time.monotonic() + linger
        while cpu.alive and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in list(cpu.alive):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0 and not stopped:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}):\n{stderr[-3000:]}")
    made = outputs_of(outputs) if outputs is not None and outputs.exists() else []
    first = min((p.stat().st_mtime for p in made), default=None)
    return Timed(
        wall, cpu.seconds, cpu.seen.get(str(proc.pid), 0.0), start, first, len(made), stopped, stdout
    )


# --- the bulk job, and what is measured around it -------------------------------------------------


class AroundPhotos:
    """Entered while the engine stylizes (the photo rows stream in): when that started and
    ended, and the object store's peak meanwhile (on Ray, polled every 0.1 s: what
    `ray memory --stats-only` reports; Ray has no public API for it)."""

    def __init__(self) -> None:
        self.start = self.end = 0.0
        self.peak = 0
        self._stop = threading.Event()

    def _poll(self) -> None:
        import ray
        from ray._private.internal_api import get_memory_info_reply, get_state_from_address

        state = get_state_from_address(ray.get_runtime_context().gcs_address)
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # a reply lost while Ray is busy: the next one counts
                used = get_memory_info_reply(state).store_stats.object_store_bytes_used
                self.peak = max(self.peak, int(used))
            self._stop.wait(0.1)

    @contextlib.contextmanager
    def __call__(self):  # type: ignore[no-untyped-def]
        import ray

        self.start = time.time()
        poller = threading.Thread(target=self._poll, daemon=True) if ray.is_initialized() else None
        if poller:
            poller.start()
        try:
            yield
        finally:
            self.end = time.time()
            self._stop.set()
            if poller:
                poller.join()


class Measured:
    """An engine (bulk/engines/engine.py) with `around` entered while it runs."""

    def __init__(self, engine: Any, around: AroundPhotos) -> None:
        self.engine, self.around = engine, around

    def start(self) -> None:
        self.engine.start()

    def run(self, run: Any, rows: Any) -> None:
        with self.around():
            self.engine.run(run, rows)


def _engine(engine: str, actor: str, log_dir: str, around: AroundPhotos) -> Any:
    """The engine a benchmark runs the job with: `local` (the job's own process), or Ray's with
    the photo stage's actor class, `stylize` (the job's own), `timed` (logs each model call's
    start and end to a file per actor process, under `log_dir`) or `identity` (its network
    returns its input: the pipeline with the network taken out; with `local` too); timed by
    `around` while it runs. The classes are made in this function, so Ray ships them to the actors by value."""
    from stylekit.bulk.engines.local import LocalEngine
    from stylekit.bulk.engines.ray_engine import RayEngine
    from stylekit.bulk.engines.ray_photos import StylizeActor

    class TimedActor(StylizeActor):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            self._log = open(os.path.join(log_dir, f"actor-{os.getpid()}-{id(self)}.jsonl"), "a")  # noqa: SIM115
            self._write({"ready": time.time()})

        def _write(self, record: dict[str, float]) -> None:
            self._log.write(json.dumps(record) + "\n")
            self._log.flush()

        def __call__(self, batch: dict) -> dict:  # type: ignore[type-arg]
            t0 = time.time()
            out = super().__call__(batch)
            self._write({"t0": t0, "t1": time.time(), "n": float(len(batch["key"]))})
            return out

    class IdentityActor(StylizeActor):
        def _stylize(self, pixels: list, slot: int = 0) -> list:  # type: ignore[override]
            return list(pixels)

    class IdentityLocal(LocalEngine):
        def networks(self, run: Any, cpus: int) -> Any:
            return lambda pixels, slot: list(pixels)

    if engine == "local":
        return Measured(IdentityLocal() if actor == "identity" else LocalEngine(), around)
    classes = {"stylize": StylizeActor, "timed": TimedActor, "identity": IdentityActor}
    return Measured(RayEngine(actor=classes[actor]), around)


def wait_shares(log_dir: str) -> list[float]:
    """Each timed actor's share of its span (ready to its last call's end) spent between calls."""
    shares = []
    for path in Path(log_dir).glob("actor-*.jsonl"):
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        ready = [r["ready"] for r in records if "ready" in r]
        calls = [r for r in records if "t0" in r]
        if ready and calls:
            span = max(c["t1"] for c in calls) - min(ready)
            busy = sum(c["t1"] - c["t0"] for c in calls)
            shares.append(1 - busy / span if span > 0 else 0.0)
    return shares


def run_job(config: Any, actor: str = "stylize") -> dict[str, Any]:
    """The bulk job in this process (`run_night`, as jobs/stylize.py calls it), on Ray with the
    photo stage's `actor` (see `_engine`) unless the config says --engine local: its summary,
    wall seconds, when the engine started and ended stylizing, the object store's peak
    meanwhile, the timed actors' wait shares and this process's peak resident memory (bytes)."""
    from stylekit.bulk.night import run_night
    from stylekit.ray_env import shutdown_ray

    around = AroundPhotos()
    with tempfile.TemporaryDirectory(prefix="bench-actors-") as log_dir:
        t0 = time.time()
        summary = run_night(config, _engine(config.engine, actor, log_dir, around))
        wall = time.time() - t0
        shutdown_ray()
        wait = wait_shares(log_dir)
    return {"summary": json.loads(summary.to_json()), "wall": wall, "photos_start": around.start,
            "photos_end": around.end, "store_peak": around.peak, "wait": wait,
            "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}  # fmt: skip


def job_command(src: Path, out: Path, model: str, engine: str = "ray", actor: str = "stylize",
                batch_size: int | None = None, style: str | None = None) -> list[str]:  # fmt: skip
    """The command of `run_job` in a process of its own (it prints the result as one JSON line)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "job", str(src), str(out)]
    cmd += ["--model", model, "--engine", engine, "--actor", actor]
    cmd += ["--style", style] if style else []
    return cmd + (["--batch-size", str(batch_size)] if batch_size else [])


def main() -> int:
    p = argparse.ArgumentParser(description="The bulk job with a benchmark's probes, one JSON line out.")
    p.add_argument("what", choices=["job"])
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--model", required=True)
    p.add_argument("--engine", default="ray", choices=["ray", "local"])
    p.add_argument("--actor", default="stylize", choices=ACTORS)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--style", default=None)
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args()
    from stylekit.bulk.config import BulkConfig
    from stylekit.cli import config_from_flags
    from stylekit.logs import setup_logging

    setup_logging(args.log_level)
    flags: dict[str, Any] = dict(model=args.model, input=args.input, output=args.output, engine=args.engine)
    if args.batch_size:
        flags["batch_size"] = args.batch_size
    if args.style:
        flags["style"] = args.style
    print(json.dumps(run_job(config_from_flags(BulkConfig, **flags), args.actor)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
