"""stylekit.cli: option dataclasses held by a config become flags of their own (flattened),
and come back as themselves; a tri-state field can be a pair of exclusive flags."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import pytest

from stylekit.cli import OneLineErrorParser, add_config_arguments, config_from_args, config_from_flags
from stylekit.errors import ConfigError
from stylekit.options_meta import flag


@dataclass(frozen=True)
class Inner:
    depth: int = field(default=3, metadata={"help": "how deep"})
    hidden: str = field(default="x", metadata={"cli": False})
    wide: bool = field(default=False, metadata={"help": "wide or not"})

    def __post_init__(self) -> None:
        if self.depth < 0:
            raise ConfigError(f"--depth must be >= 0 (got {self.depth})")


@dataclass(frozen=True)
class Outer:
    name: str = field(default="n", metadata={"help": "a name"})
    inner: Inner = field(default_factory=Inner, metadata={"exclude": ("wide",)})
    gpu: bool | None = field(
        default=None, metadata={"switch": {"--gpu": (True, "on GPUs"), "--cpu": (False, "on CPUs")}}
    )


def parse(*argv: str) -> tuple[argparse.ArgumentParser, Outer]:
    parser = OneLineErrorParser(prog="t")
    add_config_arguments(parser, Outer)
    return parser, config_from_args(Outer, parser.parse_args(argv))


def test_nested_options_become_flat_flags_with_their_own_help_and_default() -> None:
    parser, config = parse()
    text = parser.format_help()
    assert "--depth DEPTH" in text and "how deep (default: 3)" in text
    assert "--hidden" not in text and "--wide" not in text  # cli=False; excluded by the holder
    assert "--inner" not in text
    assert config == Outer()


def test_nested_options_come_back_as_their_dataclass() -> None:
    _, config = parse("--depth", "5", "--name", "m")
    assert config.inner == Inner(depth=5) and config.name == "m"


def test_a_nested_check_still_refuses() -> None:
    parser = OneLineErrorParser(prog="t")
    add_config_arguments(parser, Outer)
    with pytest.raises(ConfigError, match="--depth"):
        config_from_args(Outer, parser.parse_args(["--depth", "-1"]))


@pytest.mark.parametrize(("argv", "gpu"), [((), None), (("--gpu",), True), (("--cpu",), False)])
def test_switch_flags_set_a_tri_state_field(argv: tuple[str, ...], gpu: bool | None) -> None:
    assert parse(*argv)[1].gpu is gpu


def test_switch_flags_exclude_each_other() -> None:
    with pytest.raises(SystemExit):
        parse("--gpu", "--cpu")


def test_flat_values_build_the_nested_options_as_the_flags_do() -> None:
    """config_from_flags: what a test or benchmark writes instead of a command line."""
    assert config_from_flags(Outer, depth=5, name="m") == parse("--depth", "5", "--name", "m")[1]
    assert config_from_flags(Outer, inner=Inner(depth=2)).inner == Inner(depth=2)  # whole, too
    assert config_from_flags(Outer, wide=True).inner.wide  # an excluded flag is still an option
    with pytest.raises(TypeError, match="no option deep"):
        config_from_flags(Outer, deep=1)


@dataclass(frozen=True)
class Shown:
    path: str = field(
        default="/somewhere/on/this/machine.jpg", metadata=flag("an image", default_text="the bundled one")
    )
    unset: str | None = field(default=None, metadata=flag("a limit"))
    empty: str = field(default="", metadata=flag("a chain"))
    must: str = field(default="", metadata=flag("a target", required=True))
    loud: bool = field(default=False, metadata=flag("be loud"))


def test_each_flag_says_its_default_once_in_one_form() -> None:
    """cli.shown_default: default_text in place of the value, "none" for None or "", "required"
    for a required flag, a boolean's default once (Python 3.10's BooleanOptionalAction adds its own)."""
    parser = OneLineErrorParser(prog="t")
    add_config_arguments(parser, Shown)
    helps = {a.dest: a.help for a in parser._actions if a.dest != "help"}
    assert helps == {
        "path": "an image (default: the bundled one)",
        "unset": "a limit (default: none)",
        "empty": "a chain (default: none)",
        "must": "a target (required)",
        "loud": "be loud (default: False)",
    }
    text = parser.format_help()
    assert text.count("(default: False)") == 1 and "/somewhere" not in text
    assert parser.parse_args(["--must", "x"]).path == "/somewhere/on/this/machine.jpg"  # shown in words only
    with pytest.raises(SystemExit):
        parser.parse_args([])  # --must is required
