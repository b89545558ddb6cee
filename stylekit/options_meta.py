"""The metadata of an option field: what `cli.add_config_arguments` reads to turn a dataclass
field into a flag. Here, below every part of the package, so the library's option dataclasses
(files, infer, train, bulk) write their help text without importing the command line."""

from __future__ import annotations

from typing import Any


def flag(help_text: str, **more: Any) -> dict[str, Any]:
    """`field(metadata=flag("what it does", choices=[...]))`: the flag's help text, and any of
    choices, metavar, required, aliases, exclude (a held option dataclass's fields left out),
    switch, cli=False (see `cli.add_config_arguments`), or default_text: the default in words
    where the value itself would not tell a user (worked out at run time, or a path of the
    installed package). The help text says what the flag does, not its default: `--help`
    adds "(default: ...)" once (`cli.shown_default`)."""
    return {"help": help_text, **more}
