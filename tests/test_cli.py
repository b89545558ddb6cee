"""stylekit.cli: option dataclasses held by a config become flags of their own (flattened),
and come back as themselves; a tri-state field can be a pair of exclusive flags."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import pytest

from stylekit.cli import OneLineErrorParser, add_config_arguments, config_from_args, config_from_flags
from stylekit.errors import ConfigError


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
