"""The decode timeout: one input's read and decode given up on after --decode-timeout seconds."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from stylekit.errors import StylekitError

T = TypeVar("T")


class DecodeTimeout(StylekitError):
    """Reading and decoding one input took longer than --decode-timeout."""


def run_within(seconds: float, call: Callable[[], T]) -> T:
    """`call()` in a helper thread, given up on after `seconds`. Python cannot stop a thread:
    a hung decode is left behind as a daemon thread (it ends with the worker process), but
    the batch, and the task, go on without it."""
    result: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(call())
        except BaseException as e:
            failure.append(e)

    thread = threading.Thread(target=run, name="stylekit-decode", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise DecodeTimeout(
            f"reading and decoding took longer than {seconds:g} s (--decode-timeout); given up"
        )
    if failure:
        raise failure[0]
    return result[0]
