"""Storage for Ray: read throughput of pyarrow's own S3 filesystem against s3fs wrapped for
pyarrow (`PyFileSystem(FSSpecHandler(s3fs))`), and the driver's peak memory while the bulk
job plans a bucket of 10,000 to 100,000 objects.

    python benchmarks/bench_storage.py                       # both parts
    python benchmarks/bench_storage.py --objects 64 --mib 1  # throughput: 64 objects of 1 MiB
    python benchmarks/bench_storage.py --plan-sizes 10000,30000,100000

The S3 server is moto's (`moto.server.ThreadedMotoServer`) on loopback, in a child process so
that its memory is not the driver's. The child fills its buckets in-process (straight into
moto's backend: 100,000 PUTs over HTTP would take longer than the benchmark), then serves them
over HTTP; every read and listing measured goes over HTTP, as against a real store.

Throughput: each filesystem reads every object whole (`open_input_stream().read()`), with 1
and with 4 threads (Ray Data's read tasks are concurrent), best of --repeat runs, MiB/s.

Planning: `stylekit.bulk.planner.plan_inputs` over s3://plan-N/in (N image keys) into an empty
output prefix, measured with tracemalloc (Python allocations, peak) in this process, after
an unmeasured warm-up plan of 200 objects (one-time allocations: lazy imports, clients): the
listing is streamed a page at a time, so the peak is bounded by one page, one key shard
(20,000 keys) and one manifest part, not by N.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

ACCOUNT = "123456789012"  # moto's default account
WARM_UP = 200  # objects planned, unmeasured, first: one-time allocations (lazy imports, clients)


def serve(objects: int, mib: float, plan_sizes: list[int]) -> None:
    """Child process: fill moto's backend, start its server, print the URL, wait for stdin."""
    import logging
    import socket

    from moto.s3.models import s3_backends
    from moto.server import ThreadedMotoServer

    backend = s3_backends[ACCOUNT]["aws"]
    backend.create_bucket("read", "us-east-1")
    payload = os.urandom(int(mib * 2**20))
    for i in range(objects):
        backend.put_object("read", f"obj/{i:05d}.bin", payload)
    for n in [WARM_UP, *plan_sizes]:
        name = f"plan-{n}"
        backend.create_bucket(name, "us-east-1")
        for i in range(n):
            backend.put_object(name, f"in/d{i // 1000:03d}/photo{i:06d}.jpg", b"x")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    print(f"http://127.0.0.1:{port}", flush=True)
    sys.stdin.read()  # until the parent closes it
    server.stop()


def start_server(objects: int, mib: float, plan_sizes: list[int]) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, __file__, "--serve", "--objects", str(objects), "--mib", str(mib)]
    cmd += ["--plan-sizes", ",".join(map(str, plan_sizes))]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        raise SystemExit("the moto server did not start")
    return proc, url


def read_throughput(url: str, objects: int, mib: float, repeat: int) -> list[dict[str, object]]:
    from stylekit.files import storage

    options = storage.StorageOptions(url, "us-east-1")
    rows = []
    for name, native in (("pyarrow S3FileSystem", True), ("s3fs via PyFileSystem(FSSpecHandler)", False)):
        fs, path = storage.arrow_filesystem("s3://read/obj", options, native_s3=native)
        keys = [f"{path}/{i:05d}.bin" for i in range(objects)]

        def read(key: str, fs: object = fs) -> int:
            with fs.open_input_stream(key) as f:  # type: ignore[attr-defined]
                return len(f.read())

        for threads in (1, 4):
            best = float("inf")
            for _ in range(repeat):
                t0 = time.perf_counter()
                with ThreadPoolExecutor(threads) as pool:
                    total = sum(pool.map(read, keys))
                best = min(best, time.perf_counter() - t0)
            assert total == int(mib * 2**20) * objects
            rows.append(
                {
                    "filesystem": name,
                    "threads": threads,
                    "MiB": round(total / 2**20, 1),
                    "seconds": round(best, 3),
                    "MiB/s": round(total / 2**20 / best, 1),
                }
            )
    return rows


def plan_memory(url: str, sizes: list[int]) -> list[dict[str, object]]:
    from stylekit.bulk.config import BulkConfig
    from stylekit.bulk.layout import RunLayout
    from stylekit.bulk.manifest import ManifestWriter
    from stylekit.bulk.planner import plan_inputs
    from stylekit.files import storage

    rows = []
    for n in [WARM_UP, *sizes]:
        config = BulkConfig(
            model="starry_night",
            input=f"s3://plan-{n}/in",
            output=f"s3://plan-{n}/out",
            storage_options=storage.StorageOptions(url),
            progress_every=3600,
        )
        layout = RunLayout.for_config(config)
        storage.exists(f"s3://plan-{n}/in/none", config.storage_options)  # the client, built once
        tracemalloc.start()
        t0 = time.perf_counter()
        with ManifestWriter(layout.manifest_dir, config.storage_options) as manifest:
            plan = plan_inputs(config, layout, manifest, "0" * 16)
        seconds = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert plan.todo == n, (plan.todo, n)
        if n == WARM_UP:
            continue
        rows.append(
            {
                "objects": n,
                "key shards": len(plan.shards),
                "planning s": round(seconds, 1),
                "keys/s": round(n / seconds),
                "peak Python MiB": round(peak / 2**20, 1),
            }
        )
    return rows


def table(rows: list[dict[str, object]]) -> str:
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(r[k]) for k in head) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--objects", type=int, default=64, help="objects read per run")
    parser.add_argument("--mib", type=float, default=1.0, help="size of each object read, MiB")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--plan-sizes", default="10000,30000,100000", help="bucket sizes planned ('' none)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [int(s) for s in args.plan_sizes.split(",") if s]
    if args.serve:
        serve(args.objects, args.mib, sizes)
        return
    import fsspec
    import pyarrow
    import s3fs

    from stylekit import __version__

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    t0 = time.perf_counter()
    proc, url = start_server(args.objects, args.mib, sizes)
    print(f"moto server filled in {time.perf_counter() - t0:.0f} s")
    print(
        json.dumps(
            {
                "cpus": os.cpu_count(),
                "load": os.getloadavg(),
                "stylekit": __version__,
                "pyarrow": pyarrow.__version__,
                "fsspec": fsspec.__version__,
                "s3fs": s3fs.__version__,
                "python": sys.version.split()[0],
            }
        )
    )
    try:
        print(f"\n### Read throughput, {args.objects} objects of {args.mib:g} MiB, best of {args.repeat}\n")
        print(table(read_throughput(url, args.objects, args.mib, args.repeat)))
        if sizes:
            print("\n### Driver's peak memory while planning (streamed listing, empty output)\n")
            print(table(plan_memory(url, sizes)))
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=60)


if __name__ == "__main__":
    main()
