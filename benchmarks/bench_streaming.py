"""Does the bulk job stream? First written output and peak object-store use against input count.

    python benchmarks/bench_streaming.py                       # 500, 1000, 2000 tiny photos
    python benchmarks/bench_streaming.py --counts 500 4000 --side 96

For each count: that many small PNGs (--side pixels square) in a local folder, one run of the
bulk job through its public entry `run_bulk(BulkConfig(...))` on a fresh local Ray, an
untrained (seeded) model. Reported per run:

- first output: seconds from the start of the Ray pipeline (the moment the driver starts
  pulling from the dataset: Ray is up, listing and planning are done) to the oldest written
  output's mtime. A streaming pipeline keeps this flat as the count grows; one whose decode
  runs ahead of the model makes it grow with the count.
- all outputs: seconds from the same start to the newest output's mtime.
- peak store: the most object-store memory in use, polled every 0.1 s while the pipeline runs
  (what `ray memory --stats-only` reports as "Plasma memory usage"). Ray holds no API for this
  outside `ray._private`; the benchmark takes it from there.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def make_inputs(folder: Path, count: int, side: int) -> None:
    """`count` distinct noise PNGs of side x side, in sub-folders of 100."""
    rng = np.random.default_rng(0)
    for i in range(count):
        path = folder / f"d{i // 100:03d}" / f"p{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path)


class StorePeak:
    """Polls the object store's bytes in use in a thread; `peak` is the most seen."""

    def __init__(self, every: float = 0.1):
        self.every, self.peak, self._stop = every, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import ray
        from ray._private.internal_api import get_memory_info_reply, get_state_from_address

        state = get_state_from_address(ray.get_runtime_context().gcs_address)
        while not self._stop.is_set():
            used = get_memory_info_reply(state).store_stats.object_store_bytes_used
            self.peak = max(self.peak, int(used))
            self._stop.wait(self.every)

    def __enter__(self) -> StorePeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_one(count: int, side: int, model: str, batch: int, work: Path) -> dict[str, float]:
    import ray

    from stylekit.bulk import driver
    from stylekit.bulk.config import BulkConfig
    from stylekit.cli import config_from_flags

    inputs, outputs = work / f"in{count}", work / f"out{count}"
    make_inputs(inputs, count, side)
    stamps: dict[str, float] = {}

    @contextlib.contextmanager
    def timed_photos() -> Iterator[None]:
        stamps["start"] = time.time()
        with StorePeak() as peak:
            yield
        stamps["end"], stamps["peak"] = time.time(), peak.peak

    try:
        summary = driver.run_bulk(
            config_from_flags(
                BulkConfig, model=model, input=str(inputs), output=str(outputs), batch_size=batch
            ),
            driver.Probes(around_photos=timed_photos),
        )
    finally:
        ray.shutdown()
    assert summary.ok == count, summary
    mtimes = sorted(
        os.path.getmtime(os.path.join(d, f))
        for d, _, files in os.walk(outputs)
        if "_manifest" not in d
        for f in files
        if f.endswith(".png")
    )
    return {
        "count": count,
        "first": mtimes[0] - stamps["start"],
        "all": mtimes[-1] - stamps["start"],
        "pipeline": stamps["end"] - stamps["start"],
        "peak_mib": stamps["peak"] / 2**20,
        "images_per_s": summary.images_per_s,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[500, 1000, 2000])
    parser.add_argument("--side", type=int, default=64, help="input images are side x side")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    import ray
    import torch

    from stylekit.logs import setup_logging
    from stylekit.nn.model import TransformerNet
    from stylekit.nn.modelio import save_model

    setup_logging()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        torch.manual_seed(0)
        model = str(work / "model.safetensors")
        save_model(model, TransformerNet(), {"format": "stylekit", "style": "bench"})
        for count in args.counts:
            rows.append(run_one(count, args.side, model, args.batch_size, work))
            print(f"# {rows[-1]}", flush=True)
    print(f"\nray {ray.__version__}, torch {torch.__version__}, {os.cpu_count()} CPUs, {args.side}px PNGs")
    print(
        "| inputs | first output (s) | all outputs (s) | pipeline (s) | peak object store (MiB) | images/s |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['count']} | {r['first']:.1f} | {r['all']:.1f} | {r['pipeline']:.1f} "
            f"| {r['peak_mib']:.1f} | {r['images_per_s']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
