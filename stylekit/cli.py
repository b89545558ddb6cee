"""Turn typed dataclass configs into argparse flags and back, and run a main with one-line errors.

A config dataclass is the one source of defaults: each field becomes `--field-name`, its default
and its `help` metadata become the flag's help text. Validation lives in the dataclass's
`__post_init__`, so a job script only parses and hands over a typed config.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import threading
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from stylekit import exitcodes
from stylekit.errors import StylekitError
from stylekit.redact import remember, shown

T = TypeVar("T")
log = logging.getLogger(__name__)


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def _base_type(annotation: Any) -> tuple[type, bool]:
    """(scalar type, optional?) of a field annotation such as `int | None`."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0], True
    return annotation, False


def nested_options(cls: type) -> dict[str, type]:
    """The fields of dataclass `cls` that hold a whole option dataclass (`storage_options:
    StorageOptions`): their fields become flags of their own, flattened into `cls`'s."""
    hints = typing.get_type_hints(cls)
    return {
        f.name: hints[f.name]
        for f in dataclasses.fields(cls)
        if dataclasses.is_dataclass(hints[f.name]) and f.metadata.get("cli", True)
    }


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, *, exclude: Iterable[str] = ()) -> None:
    """Add one flag per field of dataclass `cls` (fields with metadata cli=False are skipped;
    metadata required=True makes the flag mandatory). A field holding an option dataclass
    adds that dataclass's flags, by their own names, with their own defaults and help: each
    option is written once, in the library's dataclass, whichever command shows it. Metadata
    `switch` ({"--gpu": (True, help), "--cpu": (False, help)}) gives a tri-state field (None
    by default) a pair of exclusive flags instead of one."""
    hints = typing.get_type_hints(cls)
    skip = set(exclude)
    nested = nested_options(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.metadata.get("cli", True):
            continue
        if f.name in nested:
            add_config_arguments(parser, nested[f.name], exclude=(*skip, *f.metadata.get("exclude", ())))
            continue
        kind, _ = _base_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else None
        help_text = f"{f.metadata.get('help', '')} ({shown_default(default, f.metadata)})"
        names = [flag_name(f.name), *f.metadata.get("aliases", ())]
        if "switch" in f.metadata:
            group = parser.add_mutually_exclusive_group()
            for flag, (value, text) in f.metadata["switch"].items():
                group.add_argument(
                    flag, dest=f.name, action="store_const", const=value, default=default, help=text
                )
            continue
        if typing.get_origin(kind) is tuple:  # repeatable: each use adds one item
            parser.add_argument(
                *names,
                dest=f.name,
                action="append",
                default=argparse.SUPPRESS,  # not given: the field's own default
                metavar=f.metadata.get("metavar"),
                help=help_text,
            )
            continue
        if kind is bool:
            action = parser.add_argument(
                *names, action=argparse.BooleanOptionalAction, default=default, help=help_text
            )
        else:
            action = parser.add_argument(
                *names,
                dest=f.name,
                type=_parser_for(kind, flag_name(f.name)),
                default=default,
                choices=f.metadata.get("choices"),
                required=bool(f.metadata.get("required", False)),
                metavar=f.metadata.get("metavar"),
            )
        # Set after the action is built: Python 3.10's BooleanOptionalAction appends a
        # "(default: ...)" of its own to the help it is given, which would show the default twice.
        action.help = help_text


def shown_default(default: Any, metadata: Mapping[str, Any]) -> str:
    """What a flag's help says of its default, after its help text, in parentheses: the one
    rule every flag follows, so each default is said once. "required" for a required flag;
    else "default: X", X the field's `default_text` metadata when it has one (a default worked
    out at run time, "the style file's stem", or a path of the installed package, "the
    bundled Starry Night"), "none" for a None or empty default, else the default itself. Help
    text names no default of its own."""
    if metadata.get("required", False):
        return "required"
    if "default_text" in metadata:
        return f"default: {metadata['default_text']}"
    if isinstance(default, tuple):  # a repeatable flag's items
        default = ", ".join(map(str, default))
    return f"default: {'none' if default is None or default == '' else default}"


def _parser_for(kind: type, flag: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} expects {kind.__name__}, got {text!r}") from None

    parse.__name__ = kind.__name__
    return parse


def option_names(cls: type) -> set[str]:
    """Every name `config_from_flags` takes for `cls`: its own fields and, for a field holding
    an option dataclass, that dataclass's names too."""
    nested = nested_options(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for inner in nested.values():
        names |= option_names(inner)
    return names


def _build(cls: type[T], values: dict[str, Any]) -> T:
    nested = nested_options(cls)
    kwargs = {
        f.name: values[f.name] if f.name in values else _build(nested[f.name], values)
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.name in values or f.name in nested
    }
    return cls(**kwargs)


def config_from_flags(cls: type[T], **values: Any) -> T:
    """Build (and so validate) a config from flat option values, each named as its flag is
    (`strength=0.5`, not `style_controls=StyleControls(0.5)`): what a test or a benchmark
    writes instead of the command line. A held option dataclass may also be given whole."""
    unknown = sorted(set(values) - option_names(cls))
    if unknown:
        raise TypeError(f"{cls.__name__} has no option {', '.join(unknown)}")
    return _build(cls, values)


def config_from_args(cls: type[T], args: argparse.Namespace, **overrides: Any) -> T:
    """Build (and so validate) a config from parsed flags; only fields of `cls` are read, and
    the option dataclasses it holds are built from their own flags the same way."""
    names = option_names(cls)
    values = {name: value for name, value in vars(args).items() if name in names}
    values.update(overrides)
    return _build(cls, values)


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse prints usage plus a message; we keep its message but make it one line."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(exitcodes.USAGE, f"{self.prog}: error: {shown(message)} (see --help)\n")


def run_main(main: Callable[[], int | None], fast_exit: bool = False) -> None:
    """Run `main`, turning a StylekitError into a one-line message and its exit status (2
    unless it says otherwise: stylekit/exitcodes.py), and an interrupt into INTERRUPTED.

    `fast_exit`: end the process without the interpreter's teardown once `main` has returned
    (see `exit_now`); for one-process commands, whose work is all done and flushed by then.

    The secrets of the command line (URL credentials, signed URLs) are known from the start,
    so that no line of the run shows them in any spelling (stylekit/redact.py)."""
    remember(sys.argv)
    try:
        code = main()
    except StylekitError as e:
        print(f"error: {shown(str(e))}", file=sys.stderr)
        code = e.exit_code
        if e.ends_process:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(OSError, ValueError):
                    stream.flush()
            os._exit(code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(exitcodes.INTERRUPTED)
    if fast_exit:
        exit_now(code or 0)
    sys.exit(code or 0)


def interrupt_on_sigterm() -> None:
    """Make SIGTERM (a pod deleted, a RayJob stopped, `kill`) what Ctrl-C is: a
    KeyboardInterrupt, so the job releases its lease and exits INTERRUPTED after its cleanup
    (stylekit.ray_env.init_ray keeps this handler where Ray would install its own)."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def exit_now(code: int) -> None:
    """Exit after the atexit handlers (logging, temporary files, coverage) but without tearing
    down every module: with torch loaded that teardown alone takes ~0.45 s on 2 cores, a
    twentieth of stylizing a dozen photos (benchmarks/RESULTS.md, "A folder of mixed photos"). Falls back to a
    normal exit while other threads run, since their work must finish first."""
    if threading.active_count() > 1 or not hasattr(atexit, "_run_exitfuncs"):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed, or a broken pipe
            stream.flush()
    os._exit(code)
