"""The numeric precision of a run's steps (--precision) and the CPU features it depends on."""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """--precision auto: bf16 autocast on CUDA, fp32 on the CPU. On a CPU with bf16 in
    hardware (AMX) `--precision bf16` makes the step 2x the reference, but the network it
    trains paints with more fine grain (held-out total variation +29% after 40 steps at 128 px,
    benchmarks/RESULTS.md), so the CPU default stays fp32."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        log.warning(
            "--precision bf16: this CPU has no AMX or AVX512-BF16, so bf16 is emulated and slower than fp32"
        )
    return torch.bfloat16 if precision == "bf16" else torch.float32


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str] | None:
    """The CPU's feature flags (Linux's /proc/cpuinfo); None where they cannot be read."""
    try:
        with open(cpuinfo) as f:
            line = next((line for line in f if line.startswith("flags")), None)
    except OSError:
        return None
    return None if line is None else frozenset(line.split(":", 1)[1].split())


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bf16 in hardware (the amx_bf16 or avx512_bf16 flag); False
    where the flags cannot be read (not Linux)."""
    flags = cpu_flags(cpuinfo) or frozenset()
    return "amx_bf16" in flags or "avx512_bf16" in flags
