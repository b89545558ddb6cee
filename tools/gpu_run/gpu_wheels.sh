#!/usr/bin/env bash
# Carries Ray (and the training photos) to the GPU machine for tools/gpu_run/gpu_run.py; see
# tools/gpu_run/README.md.
#
# The GPU machine has PyTorch, pyarrow, pandas, aiohttp, grpcio, ... but not Ray, cannot
# download, and takes at most 64 MiB per call, of which this checkout already uses most. Ray's
# wheel is ~79 MB, 32 MB of it a Java jar. So `prepare` downloads, for the machine's Python
# (CPython 3.12, manylinux x86-64), Ray and the few packages it needs that the machine's image
# lacks; drops what a single-node, Python-only Ray never loads (the jar, rllib, serve, llm, the
# dashboard's web client); strips the binaries' symbols; and packs it all as one xz tarball
# (~21 MB). `parts` cuts that tarball into one folder per device call, each sized to fit beside
# the checkout; the training photos ride in the last. On the machine, every call's command
# starts with `stash` (what it carried is kept outside the checkout, which a warm machine keeps
# between calls), and the last runs `install` (join, check sha256, unpack into
# $STYLEKIT_CARRY/site) before tools/gpu_run/gpu_run.py, which puts that folder on PYTHONPATH.
#
# Here:   bash tools/gpu_run/gpu_wheels.sh prepare   # -> .whl/build/site.tar.xz
#         bash tools/gpu_run/gpu_wheels.sh data      # -> .whl/build/train-data (256 px crops, JPEG)
#         bash tools/gpu_run/gpu_wheels.sh parts     # -> .whl/call1 .. .whl/callN; prints the calls
#         bash tools/gpu_run/gpu_wheels.sh check     # the ray part of the dry run here, with a slim
#                                                 #    Ray built the same way and only the GPU
#                                                 #    image's packages (+ the carried) importable
# There:  bash tools/gpu_run/gpu_wheels.sh stash [install]
#
# Environment: STYLEKIT_CARRY (default /var/tmp/stylekit-carry), PYTHON (default: the
# checkout's .venv/bin/python here, python3 there), TRAIN_MINI (photos for `data`, default
# ../shared/data/train-mini), CALL_LIMIT_MIB (64), SLACK_MIB (1.5: room kept per call).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
[ $# -ge 1 ] || { sed -n '2,30p' "$0"; exit 2; }
exec "$PYTHON" - "$@" <<'PY'
import hashlib, importlib.metadata as md, json, os, re, shutil, subprocess, sys, tarfile, tempfile, zipfile
from pathlib import Path

REPO = Path.cwd()
WHL = REPO / ".whl"
BUILD = WHL / "build"
CARRY = Path(os.environ.get("STYLEKIT_CARRY", "/var/tmp/stylekit-carry"))
MIB = 1 << 20
# What Ray Train + Ray Data need beyond the GPU machine's image (tools/gpu_run/README.md): found by
# `check`, which blocks every other package this checkout's .venv has and the image has not.
CARRIED = ["ray", "jsonschema", "jsonschema-specifications", "referencing", "rpds-py", "pydantic", "pydantic-core",
           "annotated-types", "typing-inspection", "typing-extensions", "attrs", "tensorboardX"]
DROP = ["ray/jars", "ray/rllib", "ray/serve", "ray/llm", "ray/dashboard/client/build"]
PLATFORM = ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp", "--abi", "cp312",
            *[a for p in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
                          "manylinux2014_x86_64", "manylinux1_x86_64") for a in ("--platform", p)]]
# The GPU image's Python packages (device KINDS.md, as read on 2026-11-17).
IMAGE = """absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build
certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers
flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize
hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib
kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py
markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind
narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc
nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse
nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir
onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging
pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11
py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock
pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors
scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham
simplejson six sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore
threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics
torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig
werkzeug wheel wrapt xarray xxhash yarl zipp""".split()


def norm(name):
    return re.sub(r"[-_.]+", "-", name.lower())


def pins():
    out = []
    for name in CARRIED:
        try:
            out.append(f"{name}=={md.version(name)}")  # the versions this checkout is tested with
        except md.PackageNotFoundError:
            out.append(name)
    return out


def pip_download(dest, specs, platform):
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(dest), *(PLATFORM if platform else []), *specs]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return sorted(dest.glob("*.whl"))


def slim_tree(wheels, site):
    """Unpack the wheels into `site` (a wheel is a zip of site-packages), then slim Ray."""
    shutil.rmtree(site, ignore_errors=True)
    site.mkdir(parents=True)
    for w in wheels:
        with zipfile.ZipFile(w) as z:
            for info in z.infolist():
                path = z.extract(info, site)
                mode = info.external_attr >> 16
                if mode:
                    os.chmod(path, mode & 0o755 | 0o644)
    for rel in DROP:
        shutil.rmtree(site / rel, ignore_errors=True)
    stripped = 0
    if shutil.which("strip"):
        for p in (site / "ray").rglob("*"):
            if p.is_file() and not p.is_symlink() and p.open("rb").read(4) == b"\x7fELF":
                subprocess.run(["strip", "--strip-unneeded", str(p)], check=True)
                stripped += 1
    (site / "STYLEKIT_CARRY.txt").write_text("\n".join(w.name for w in wheels) + "\n")
    size = sum(p.stat().st_size for p in site.rglob("*") if p.is_file())
    print(f"{site}: {len(wheels)} wheels unpacked, {', '.join(DROP)} dropped, {stripped} binaries stripped: {size / MIB:.0f} MiB")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(MIB), b""):
            h.update(chunk)
    return h.hexdigest()


def prepare():
    wheels = pip_download(BUILD / "wheels", pins(), platform=True)
    for w in wheels:
        print(f"  {w.stat().st_size / MIB:6.1f} MiB  {w.name}")
    print(f"  {sum(w.stat().st_size for w in wheels) / MIB:6.1f} MiB  in all, as wheels")
    site = BUILD / "site"
    slim_tree(wheels, site)
    blob = BUILD / "site.tar.xz"
    print(f"packing {blob} (xz -9: a minute or two)", flush=True)
    if shutil.which("xz"):
        with open(blob, "wb") as out:
            tar = subprocess.Popen(["tar", "-C", str(site), "-cf", "-", "."], stdout=subprocess.PIPE)
            subprocess.run(["xz", "-9", "-T0", "-c"], stdin=tar.stdout, stdout=out, check=True)
            tar.wait()
    else:
        with tarfile.open(blob, "w:xz", preset=9) as t:
            t.add(site, arcname=".")
    print(f"{blob}: {blob.stat().st_size / MIB:.1f} MiB")


def data():
    sys.path.insert(0, str(REPO))
    from stylekit.files import images

    src = Path(os.environ.get("TRAIN_MINI", REPO.parent / "shared" / "data" / "train-mini"))
    files = sorted(p for p in src.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))
    if not files:
        raise SystemExit(f"no photos under {src}")
    dest = BUILD / "train-data"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for p in files:  # the training job's own crop (shorter side to 256, centre square), so nothing changes there
        pixels = images.resize_crop(images.decode(p.read_bytes()), 256)
        (dest / f"{p.stem}.jpg").write_bytes(images.encode(pixels, "jpg", 95))
    (dest / "SOURCE.txt").write_text(
        f"train-mini: {len(files)} photos (colour BSD68 + Sun-Hays 80), a small stand-in for the paper's MS-COCO; "
        "carried as 256x256 centre crops, JPEG quality 95\n")
    size = sum(p.stat().st_size for p in dest.iterdir())
    print(f"{dest}: {len(files)} crops, {size / MIB:.1f} MiB")


def travelling_bytes():
    """What every device call sends anyway: tracked files and untracked files git does not ignore."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], check=True,
                            capture_output=True).stdout.split(b"\0")
    return sum(os.path.getsize(p) for p in {f.decode() for f in listed if f} if os.path.isfile(p))


def parts():
    blob, photos = BUILD / "site.tar.xz", BUILD / "train-data"
    if not blob.is_file():
        raise SystemExit(f"{blob} missing: run `bash tools/gpu_run/gpu_wheels.sh prepare` first")
    travel = travelling_bytes()
    room = int((float(os.environ.get("CALL_LIMIT_MIB", 64)) - float(os.environ.get("SLACK_MIB", 1.5))) * MIB) - travel
    extra = sum(p.stat().st_size for p in photos.rglob("*") if p.is_file()) if photos.is_dir() else 0
    if room < 2 * MIB:
        raise SystemExit(f"the checkout alone sends {travel / MIB:.1f} MiB per call: no room left to carry anything")
    sizes, left = [], blob.stat().st_size
    while True:
        if left + extra <= room:
            sizes.append(left)
            break
        take = min(room, left)
        sizes.append(take)
        left -= take
    for old in WHL.glob("call*"):
        shutil.rmtree(old)
    manifest = {"blob": blob.name, "bytes": blob.stat().st_size, "sha256": sha256(blob),
                "pieces": [f"{blob.name}.{i + 1:02d}" for i in range(len(sizes))]}
    with open(blob, "rb") as f:
        for i, n in enumerate(sizes):
            folder = WHL / f"call{i + 1}"
            folder.mkdir(parents=True)
            (folder / manifest["pieces"][i]).write_bytes(f.read(n))
            (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    if extra:
        shutil.copytree(photos, WHL / f"call{len(sizes)}" / "train-data")
    print(f"every call sends the checkout: {travel / MIB:.1f} MiB; room per call: {room / MIB:.1f} MiB")
    print(f"{blob.name} {blob.stat().st_size / MIB:.1f} MiB + training photos {extra / MIB:.1f} MiB -> {len(sizes)} call(s):")
    for i, n in enumerate(sizes):
        more = f" + train-data {extra / MIB:.1f} MiB" if extra and i == len(sizes) - 1 else ""
        last = i == len(sizes) - 1
        cmd = "bash tools/gpu_run/gpu_run.sh --out $OUT" if last else "bash tools/gpu_run/gpu_wheels.sh stash && nvidia-smi -L"
        print(f"  call {i + 1}: carry [\".whl/call{i + 1}\"] ({n / MIB:.1f} MiB{more}); command: {cmd}")
    if len(sizes) > 1:
        print("  make each call right after the one before: a machine stays warm ~30 s, and a cold one forgets the parts")


def stash():
    got = []
    for folder in sorted(WHL.glob("call*")):
        (CARRY / "parts").mkdir(parents=True, exist_ok=True)
        for p in folder.iterdir():
            if p.is_dir():  # train-data
                shutil.rmtree(CARRY / p.name, ignore_errors=True)
                shutil.copytree(p, CARRY / p.name)
            else:
                shutil.copy2(p, CARRY / "parts" / p.name)
            got.append(p.name)
    print(f"stash: kept {', '.join(got) or 'nothing (no .whl/call* carried)'} in {CARRY}")


def install():
    site = CARRY / "site"
    if (site / "ray").is_dir():
        print(f"install: Ray already unpacked in {site}")
        return
    manifest_file = CARRY / "parts" / "manifest.json"
    if not manifest_file.is_file():
        print(f"install: no parts stashed in {CARRY}: the ray part will be skipped")
        return
    manifest = json.loads(manifest_file.read_text())
    missing = [p for p in manifest["pieces"] if not (CARRY / "parts" / p).is_file()]
    if missing:
        print(f"install: missing {', '.join(missing)} of {len(manifest['pieces'])} pieces (the machine went cold "
              "between calls, or a call was skipped): the ray part will be skipped")
        return
    blob = CARRY / manifest["blob"]
    with open(blob, "wb") as out:
        for p in manifest["pieces"]:
            out.write((CARRY / "parts" / p).read_bytes())
    if blob.stat().st_size != manifest["bytes"] or sha256(blob) != manifest["sha256"]:
        print("install: the joined pieces do not match the manifest's sha256: the ray part will be skipped")
        return
    tmp = CARRY / "site.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    with tarfile.open(blob) as t:
        kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        t.extractall(tmp, **kw)
    tmp.rename(site)
    blob.unlink()
    shutil.rmtree(CARRY / "parts")
    print(f"install: unpacked into {site}: {', '.join((site / 'STYLEKIT_CARRY.txt').read_text().split())}")


def check():
    """The dry run's ray part, here, with a Ray slimmed as for the GPU machine (but for this
    Python) and every package that is neither on the GPU image nor carried made unimportable."""
    import ray

    work = WHL / "check"
    wheels = pip_download(work / "wheels", [f"ray=={ray.__version__}"], platform=False)
    carry = work / "carry"
    slim_tree(wheels, carry / "site")
    if (BUILD / "train-data").is_dir():
        shutil.rmtree(carry / "train-data", ignore_errors=True)
        shutil.copytree(BUILD / "train-data", carry / "train-data")
    allowed = {norm(n) for n in IMAGE + CARRIED} | {"stylekit"}
    blocked, kept = set(), set()
    for dist in md.distributions():
        files = [str(f) for f in dist.files or []]
        tops = {f.split("/")[0] for f in files if "/" in f} | {f.split(".")[0] for f in files if f.endswith((".py", ".so"))}
        tops = {t.split(".")[0] for t in tops}
        tops = {t for t in tops if t.isidentifier()}
        (kept if norm(dist.metadata["Name"]) in allowed else blocked).update(tops)
    blocked -= kept
    hook = work / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(
        "import importlib.abc, json, os, sys\n"
        "BLOCKED = set(json.loads(os.environ.get('STYLEKIT_BLOCKED', '[]')))\n"
        "class Blocker(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r} (not on the GPU machine)', name=name)\n"
        "sys.meta_path.insert(0, Blocker())\n")
    env = dict(os.environ, STYLEKIT_CARRY=str(carry), STYLEKIT_BLOCKED=json.dumps(sorted(blocked)),
               PYTHONPATH=os.pathsep.join([str(hook), *filter(None, [os.environ.get("PYTHONPATH")])]))
    print(f"check: blocking {len(blocked)} modules: {' '.join(sorted(blocked))}", flush=True)
    out = work / "out"
    subprocess.run([sys.executable, "tools/gpu_run/gpu_run.py", "--dry-run", "--parts", "ray", "--out", str(out)], env=env, check=True)
    text = (out / "ray.log").read_text()
    rows = [ln for ln in text.splitlines() if ln.startswith("@@result")]
    print("\n".join(rows))
    if "carried" not in (out / "summary.md").read_text() or len(rows) < 3 or any('"status": "ok"' not in r for r in rows):
        raise SystemExit("check FAILED: see " + str(out))
    print("check passed: the slim Ray ran the training job and the bulk job with only the GPU image's packages")


commands = {"prepare": prepare, "data": data, "parts": parts, "stash": stash, "install": install, "check": check}
for name in sys.argv[1:]:
    if name not in commands:
        raise SystemExit(f"unknown command {name!r}; choose from {', '.join(commands)}")
for name in sys.argv[1:]:
    commands[name]()
PY
