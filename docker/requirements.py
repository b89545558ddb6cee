"""Print stylekit's runtime requirements, one a line, read from pyproject.toml alone.

    python docker/requirements.py [--extras video,gcs] pyproject.toml > requirements.txt

docker/Dockerfile installs these in a layer of their own before stylekit's wheel: the layer
depends on pyproject.toml only, so a change to stylekit's code rebuilds none of it. They are
[project].dependencies plus the optional extras named (each once, in pyproject's order).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import tomllib


def requirements(pyproject: dict[str, Any], extras: list[str]) -> list[str]:
    """The requirement strings stylekit needs with `extras` installed."""
    project = pyproject["project"]
    found = list(project.get("dependencies", []))
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            raise ValueError(
                f"no extra {extra!r} in pyproject.toml; choose from {', '.join(sorted(optional))}"
            )
        found += [r for r in optional[extra] if r not in found]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("pyproject", type=Path)
    parser.add_argument("--extras", default="", help="comma-separated optional extras (e.g. video,gcs)")
    args = parser.parse_args(argv)
    extras = [e.strip() for e in args.extras.split(",") if e.strip()]
    try:
        lines = requirements(tomllib.loads(args.pyproject.read_text()), extras)
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {args.pyproject}: {e}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
