"""Where the GPU run is: this checkout, what tools/gpu_run/gpu_wheels.sh carried, the device, and
the paper's training schedule the targets are measured at."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
BENCH = REPO / "benchmarks"
TOOL = Path(__file__).resolve().parents[1]  # tools/gpu_run
PYTHON = sys.executable
CARRY = Path(os.environ.get("STYLEKIT_CARRY", "/var/tmp/stylekit-carry")).absolute()  # gpu_wheels.sh install
SHARED_TRAIN = REPO.parent / "shared" / "data" / "train-mini"
TRAIN_MINI = "train-mini: 148 photos (colour BSD68 + Sun-Hays 80), a small stand-in for the paper's MS-COCO"
EXAMPLES = REPO / "stylekit" / "examples"
PAPER_STEPS, PAPER_BATCH, PAPER_SIDE, PAPER_STYLE_SIZE = 40_000, 4, 256, 256


def carried_site() -> Path | None:
    """The carried Ray's folder, when it is there and built for this Python."""
    site = CARRY / "site"
    tags = " ".join(w.read_text() for w in site.glob("ray-*.dist-info/WHEEL"))  # "Tag: cp312-cp312-..."
    return site if f"cp{sys.version_info.major}{sys.version_info.minor}-" in tags else None


def ray_importable() -> tuple[bool, str]:
    """Whether Ray is there for the ray part (installed, or carried: tools/gpu_run/gpu_wheels.sh),
    by its metadata (importing it costs seconds; the part itself reports a failing import)."""
    import importlib.metadata as md

    site = carried_site()
    found = [
        d.version
        for d in md.distributions(path=[str(p) for p in [site] if p] + sys.path)
        if d.metadata["Name"] == "ray"
    ]
    if found:
        return True, f"Ray {found[0]} ({f'carried, {site}' if site else 'installed'})"
    return (
        False,
        "Ray not installed and not carried (tools/gpu_run/gpu_wheels.sh): the ray part will be skipped",
    )


def cuda_here() -> bool:
    """Whether there is a CUDA device; children learn it from the parent (importing torch costs seconds)."""
    known = os.environ.get("STYLEKIT_GPU_RUN_CUDA")
    if known is not None:
        return known == "1"
    import torch

    return torch.cuda.is_available()


def training_data() -> tuple[str, str]:
    """(folder, description) of the training photos: carried, the shared train-mini, or the
    bundled examples, in that order."""
    carried = CARRY / "train-data"
    if carried.is_dir() and any(carried.iterdir()):
        note = carried / "SOURCE.txt"
        return str(carried), note.read_text().strip() if note.is_file() else f"photos carried in {carried}"
    if SHARED_TRAIN.is_dir():
        return str(SHARED_TRAIN), TRAIN_MINI
    return str(
        EXAMPLES / "content"
    ), "the 5 bundled example photos (stylekit/examples/content): none were carried"


def cuda_description() -> tuple[bool, str]:
    import torch

    if not torch.cuda.is_available():
        return False, f"CPU ({os.cpu_count()} cores), torch {torch.__version__}"
    p = torch.cuda.get_device_properties(0)
    return True, (
        f"{p.name} ({p.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}, torch {torch.__version__}, "
        f"{os.cpu_count()} CPU cores"
    )


def git_commit() -> str:
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        )
        return proc.stdout.strip() or "?"
    except OSError:
        return "?"
