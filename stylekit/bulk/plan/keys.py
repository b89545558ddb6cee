"""Output keys: where each input's result lands under OUT, and the guard that no two inputs
land on one."""

from __future__ import annotations

import os

from stylekit.files import images
from stylekit.video.media import is_video_key, video_output_key

_OWN_FORMAT = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp"}


def output_key(key: str, fmt: str) -> str:
    """The output's key: the input's own key when the format does not change (case and
    .jpeg kept), else its stem plus the new extension ("a.tif" -> "a.png"). A video keeps its
    container if it can hold H.264, else becomes .mp4 (`--format` is for photos)."""
    if is_video_key(key):
        return video_output_key(key)
    stem, ext = os.path.splitext(key)
    own = _OWN_FORMAT.get(ext.lower())
    wanted = images.format_of(key) if fmt == "same" else fmt
    return key if own == wanted else stem + images.extension(wanted)


def style_output_key(out: str, folder: str) -> str:
    """Where a selection's result of output key `out` lands: in its folder under OUT (with
    several --style selections: `wave/a.jpg`), or at `out` itself (folder "")."""
    return f"{folder}/{out}" if folder else out


class CollisionGuard:
    """Finds inputs whose output key an earlier input already has ("a.tif" and "a.png" both
    -> "a.png"). Such inputs share their stem, so in a sorted listing they all fall inside the
    contiguous run of keys starting with "<stem>."; only the runs enclosing the current key
    (a short chain of nested prefixes) are remembered."""

    def __init__(self) -> None:
        self._open: list[tuple[str, dict[str, str]]] = []  # (stem + ".", {output key: input key})

    def claim(self, key: str, out: str) -> str | None:
        """Record that `key` writes `out`; returns the earlier input that already writes it."""
        while self._open and not key.startswith(self._open[-1][0]):
            self._open.pop()
        prefix = os.path.splitext(key)[0] + "."
        if not self._open or self._open[-1][0] != prefix:
            self._open.append((prefix, {}))
        owners = self._open[-1][1]
        earlier = owners.get(out)
        if earlier is None:
            owners[out] = key
        return earlier
