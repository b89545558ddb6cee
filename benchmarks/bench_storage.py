"""Storage for Ray: read throughput of pyarrow's own S3 filesystem against s3fs wrapped for
pyarrow (`PyFileSystem(FSSpecHandler(s3fs))`), which decides which one Ray Data's reads get.

    python benchmarks/bench_storage.py                       # 64 objects of 1 MiB, best of 3
    python benchmarks/bench_storage.py --objects 16 --mib 0.25 --repeat 1

The S3 server is moto's (`moto.server.ThreadedMotoServer`) on loopback, in a child process so
that its work is not this one's. The child fills its bucket in-process (straight into moto's
backend), then serves it over HTTP; every read measured goes over HTTP, as against a real
store. Each filesystem reads every object whole (`open_input_stream().read()`), with 1 and
with 4 threads (Ray Data's read tasks are concurrent), best of --repeat runs, MiB/s. (The
driver's memory while a night is planned is bench_scale.py's.)
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import common

ACCOUNT = "123456789012"  # moto's default account


def serve(objects: int, mib: float) -> None:
    """Child process: fill moto's backend, start its server, print the URL, wait for stdin."""
    from moto.s3.models import s3_backends
    from moto.server import ThreadedMotoServer

    backend = s3_backends[ACCOUNT]["aws"]
    backend.create_bucket("read", "us-east-1")
    payload = os.urandom(int(mib * 2**20))
    for i in range(objects):
        backend.put_object("read", f"obj/{i:05d}.bin", payload)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    print(f"http://127.0.0.1:{port}", flush=True)
    sys.stdin.read()  # until the parent closes it
    server.stop()


def read_throughput(url: str, objects: int, mib: float, repeat: int) -> list[list[object]]:
    from stylekit.files import storage

    options = storage.StorageOptions(url, "us-east-1")
    rows: list[list[object]] = []
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
            mibs = total / 2**20
            rows.append([name, threads, f"{mibs:.1f}", f"{best:.3f}", f"{mibs / best:.1f}"])
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--objects", type=int, default=64, help="objects read per run")
    p.add_argument("--mib", type=float, default=1.0, help="size of each object read, MiB")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve(args.objects, args.mib)
        return 0
    import fsspec
    import moto
    import pyarrow
    import s3fs
    import torch

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    print(common.header(f"Read throughput, {args.objects} objects of {args.mib:g} MiB, best of {args.repeat}",
                        torch.device("cpu")))  # fmt: skip
    print(f"- pyarrow {pyarrow.__version__}, fsspec {fsspec.__version__}, s3fs {s3fs.__version__}, "
          f"moto {moto.__version__} (its server on loopback, in a child process)\n")  # fmt: skip
    cmd = [sys.executable, __file__, "--serve", "--objects", str(args.objects), "--mib", str(args.mib)]
    server = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        if not url.startswith("http"):
            raise SystemExit("the moto server did not start")
        rows = read_throughput(url, args.objects, args.mib, args.repeat)
        print(common.table(["filesystem", "threads", "MiB", "seconds", "MiB/s"], rows))
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
