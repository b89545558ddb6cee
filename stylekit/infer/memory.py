"""Memory budgets: parsing `--max-memory`, what the machine has, what this process uses.

A budget is the peak resident memory the whole process may reach (Python, torch, the model and
the images included), the figure a user reads off `top` or a container's limit. Linux facts come
from /proc and the cgroup files; elsewhere the functions fall back to "unknown" and the caller
uses its own default.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from stylekit.errors import ConfigError

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
# When the budget is left to the machine: this share of the memory available when the work starts.
DEFAULT_SHARE = 0.6


def parse_size(text: str) -> int:
    """'2G', '1.5GB', '1500M', '800MiB', '123456' (bytes) -> bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(I?B)?\s*", text.upper())
    if not m or float(m.group(1)) <= 0:
        raise ConfigError(f"--max-memory takes a size such as 2G, 1500M or 1.5GB (got {text!r})")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def format_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit in ("B", "KB") else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def available_bytes() -> int | None:
    """Memory this process could still take: MemAvailable, capped by its cgroup's limit less
    the cgroup's usage. None where neither can be read."""
    found: list[int] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    limit, usage = _cgroup_limit_and_usage()
    if limit is not None and usage is not None:
        found.append(max(0, limit - usage))
    return min(found) if found else None


def _cgroup_limit_and_usage() -> tuple[int | None, int | None]:
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            raw = Path(limit_file).read_text().strip()
            if raw == "max" or int(raw) >= 1 << 60:
                return None, None
            return int(raw), int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
    return None, None


def resident_bytes() -> int:
    """This process's resident memory now (0 where /proc is not there)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def default_budget() -> int | None:
    """The budget when the user gives none: what this process holds now plus a share of what
    the machine has available. None where that cannot be known (no limit is then applied)."""
    free = available_bytes()
    if free is None:
        return None
    return resident_bytes() + int(free * DEFAULT_SHARE)
