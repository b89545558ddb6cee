"""The subcommands of `python -m stylekit`: each module has `register(subparsers)`, which adds
its parser and sets `handler` to the function that runs it.

`modules(argv)` imports only the command being run when the command line names one (start-up
time counts when stylizing a handful of photos: every other command's imports are skipped),
and every command otherwise (for `--help` and for errors that list the choices)."""

from __future__ import annotations

import importlib
from types import ModuleType

NAMES = ("stylize", "optimize", "sheet", "export", "video", "report")


def modules(argv: list[str] | None = None) -> list[ModuleType]:
    chosen = [a for a in (argv or [])[:1] if a in NAMES]
    return [importlib.import_module(f"stylekit.commands.{name}") for name in chosen or NAMES]
