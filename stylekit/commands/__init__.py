"""The subcommands of `python -m stylekit`: each module has `register(subparsers)`, which adds
its parser and sets `handler` to the function that runs it."""

from stylekit.commands import export, optimize, sheet, stylize, video

COMMANDS = [stylize, optimize, sheet, export, video]
