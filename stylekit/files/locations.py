"""Where a command reads and where it writes, compared: the one normalisation of locations and
the one guard every command that writes goes through, so that no spelling of a location lets
a result replace an original.

`root` is the form storage reads and writes with: an absolute local path (`file://` and
`local://` taken off, relative paths and `..` resolved, no trailing separator) or a URI without
a trailing '/'. `identity` is the form locations are compared in: locally the real path
(symlinks resolved), and below it the device and inode of each folder, so that a bind mount or
a case-insensitive disk cannot hide a match; remotely the protocol (aliases folded: s3a is s3,
abfs is az), the bucket or host without credentials, and the key's parts.

`refuse_overlaps` refuses, before anything is read, an output that is an input, or lies inside
one, or a folder of outputs with an input inside it (results land at keys below it, any of
which may be the input's).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass

from stylekit.errors import ConfigError
from stylekit.files import storage
from stylekit.redact import shown, userinfo_end

# Protocols that name the same store by another name.
ALIASES = {"s3a": "s3", "gcs": "gs", "abfs": "az", "abfss": "az", "https": "http", "local": "file"}


@dataclass(frozen=True)
class Identity:
    """A location as it is compared: `store` is "file" for this machine's files, else
    "protocol://host" (credentials out, host in lower case); `parts` the path's components;
    `path` the real local path (None remotely)."""

    store: str
    parts: tuple[str, ...]
    path: str | None = None


def root(location: str) -> str:
    """The form storage reads and writes `location` with (see the module's docstring)."""
    if storage.is_local(location):
        return storage.local_path(location)
    return location.rstrip("/")


def identity(location: str) -> Identity:
    if storage.is_local(location):
        path = os.path.realpath(storage.local_path(location))
        return Identity("file", tuple(p for p in path.split(os.sep) if p), path)
    scheme, _, rest = location.partition("://")
    scheme = scheme.lower()
    end = userinfo_end(scheme, rest)
    if end >= 0 and ALIASES.get(scheme, scheme) != "az":  # az: container@account is no credential
        rest = rest[end + 1 :]
    host, _, path = rest.partition("/")
    parts: list[str] = []
    for part in path.split("/"):
        if part == "..":
            if parts:
                parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    return Identity(f"{ALIASES.get(scheme, scheme)}://{host.lower()}", tuple(parts))


def below(inner: str, outer: str) -> tuple[str, ...] | None:
    """The parts of `inner` below `outer` (empty: the same location), or None when `inner`
    is not `outer` and does not lie inside it."""
    a, b = identity(inner), identity(outer)
    if a.store != b.store:
        return None
    if a.parts[: len(b.parts)] == b.parts:
        return a.parts[len(b.parts) :]
    if a.path is not None and b.path is not None:
        return _below_on_disk(a.path, b.path)
    return None


def _below_on_disk(inner: str, outer: str) -> tuple[str, ...] | None:
    """`below` by device and inode: `inner` or a folder above it is `outer` itself."""
    try:
        target = os.stat(outer)
    except OSError:
        return None
    path, tail = inner, []
    while True:
        try:
            st = os.stat(path)
            if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino) and stat.S_ISDIR(
                st.st_mode
            ) == stat.S_ISDIR(target.st_mode):
                return tuple(reversed(tail))
        except OSError:
            pass
        parent, name = os.path.split(path)
        if parent == path:
            return None
        tail.append(name)
        path = parent


def relative_key(inner: str, outer: str) -> str | None:
    """`inner`'s key prefix relative to `outer` ("styled/") when it lies strictly inside it."""
    parts = below(inner, outer)
    return "/".join(parts) + "/" if parts else None


def is_folder(location: str) -> bool:
    """Whether an output location names a folder: spelled with a trailing separator, or an
    existing local folder."""
    if location.endswith(("/", os.sep)):
        return True
    return storage.is_local(location) and os.path.isdir(storage.local_path(location))


@dataclass(frozen=True)
class Place:
    """A location a command reads or writes, as the user named it: `flag` ("--input", "INPUT"),
    `location`, and `tree` when every key below it is meant (the bulk job's IN and OUT)."""

    flag: str
    location: str
    tree: bool = False

    def __str__(self) -> str:
        return f"{self.flag} {shown(self.location)}"


class Overlap(ConfigError):
    """An output that would replace an input."""


def _chain(location: str) -> list[list[tuple[object, ...]]]:
    """For `location` itself (index 0) and each folder above it (1, 2, ...): the keys it is
    known by, its identity's parts and, for an existing local one, its device and inode."""
    ident = identity(location)
    chain: list[list[tuple[object, ...]]] = []
    path = ident.path
    for depth in range(len(ident.parts) + 1):
        keys: list[tuple[object, ...]] = [("at", ident.store, ident.parts[: len(ident.parts) - depth])]
        if path is not None:
            try:
                st = os.stat(path)
                keys.append(("inode", st.st_dev, st.st_ino))
            except OSError:
                pass
            path = os.path.dirname(path)
        chain.append(keys)
    return chain


def refuse_overlaps(reads: Iterable[Place], writes: Iterable[Place], *, nested_ok: bool = False) -> None:
    """Raise Overlap (one line) when a written place is a read one, lies inside one, or is a
    folder of outputs holding one. With `nested_ok`, a written tree may lie inside a read
    tree (the bulk job leaves OUT's keys out of IN's listing). Each location is stat'ed once
    per folder above it, whatever the number of places."""
    read_chains = [(r, _chain(r.location)) for r in reads if r.location]
    write_chains = [(w, _chain(w.location)) for w in writes if w.location]
    read_at = {key: r for r, chain in reversed(read_chains) for key in chain[0]}
    for w, chain in write_chains:
        for depth, keys in enumerate(chain):
            r = next((read_at[k] for k in keys if k in read_at), None)
            if r is None:
                continue
            if depth == 0:
                raise Overlap(
                    f"{w} is {r}: {w.flag} must differ from {r.flag}, or results would replace the originals"
                )
            if not (nested_ok and w.tree and r.tree):
                raise Overlap(
                    f"{w} lies inside {r}: results would land among the originals; give {w.flag} outside it"
                )
    trees_at = {key: w for w, chain in reversed(write_chains) if w.tree for key in chain[0]}
    for r, chain in read_chains:
        for keys in chain[1:]:
            w = next((trees_at[k] for k in keys if k in trees_at), None)
            if w is not None:
                raise Overlap(
                    f"{r} lies inside {w}, where results land at the inputs' keys and could replace "
                    f"it; give {w.flag} outside it"
                )
