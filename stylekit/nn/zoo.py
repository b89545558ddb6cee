"""Models that ship inside the package, usable by name: `--model starry_night`.

They live in `stylekit/models/` as `<name>.safetensors` (the TransformerNet state dict plus
metadata: style, training data and schedule, loss network and weights, final losses) beside
`index.json`, which records each file's sha256 so a damaged or substituted file is refused.
A name may also be one style of a multi-style file (its entry's `style`): it then loads as that
style alone (modelio.one_style_of), whichever file holds it.
A model location that is a bare name (no path separator, no extension, no scheme) is looked up
here; anything else is a path or URI as before.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from stylekit.errors import StylekitError

INDEX = "index.json"
# What a model location may be: every command's and job's --model says it in these words.
MODEL_HELP = (
    "a shipped model's name (e.g. starry_night), or a stylekit .safetensors or reference "
    ".pth/.model (path or URL: s3://, gs://, az://, any fsspec protocol)"
)
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def models_dir() -> Path:
    return Path(str(resources.files("stylekit") / "models"))


@lru_cache(maxsize=1)
def index() -> dict[str, dict[str, Any]]:
    """name -> {"file", "sha256", "bytes", "task", "description"} for every shipped model, and
    "style" where the name is one style of a multi-style file."""
    path = models_dir() / INDEX
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


def names() -> list[str]:
    return sorted(index())


def is_name(location: str) -> bool:
    """A bare model name rather than a path or URI."""
    return bool(_NAME.match(location)) and not Path(location).exists()


def resolve(location: str) -> str:
    """The file behind a shipped model's name; any other location unchanged."""
    if not is_name(location):
        return location
    entry = index().get(location)
    if entry is None:
        known = ", ".join(names()) or "none"
        raise StylekitError(
            f"--model {location!r} is neither a file nor a shipped model (shipped: {known}); give "
            "a shipped name or a path or URI of a .safetensors or reference .pth"
        )
    return str(models_dir() / entry["file"])


def resolve_shipped(location: str) -> str:
    """Like `resolve`, but leaves a bare name that is not shipped as it is (for configs that
    are validated before anything is read; reading it then fails with `resolve`'s message)."""
    return resolve(location) if is_name(location) and location in index() else location


def shipped_name(location: str) -> str | None:
    """The shipped model `location` is: its name, or the path of its file in the package (a
    config resolves names to paths before anything is read); None for any other model."""
    if is_name(location):
        return location if location in index() else None
    if "://" in location and not location.startswith("file://"):
        return None
    path = os.path.realpath(location.removeprefix("file://"))
    if os.path.dirname(path) != os.path.realpath(models_dir()):
        return None
    return next((name for name, entry in index().items() if entry["file"] == os.path.basename(path)), None)


def verify(name: str, data: bytes | None = None) -> None:
    """Check a shipped model's file (or its bytes, already read) against the sha256 recorded
    in index.json."""
    entry = index()[name]
    if data is None:
        data = (models_dir() / entry["file"]).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry["sha256"]:
        raise StylekitError(
            f"shipped model {name!r} is damaged (sha256 {digest[:16]}..., expected "
            f"{entry['sha256'][:16]}...); reinstall stylekit"
        )


def write_index(directory: Path, descriptions: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """(Re)write `directory/index.json` from the .safetensors files there: name, file, sha256,
    size, and the kind and description read from each file's metadata. A multi-style file is
    listed by its own name and by each of its styles' names (where no file has that name)."""
    from safetensors import safe_open

    entries: dict[str, dict[str, Any]] = {}
    old = json.loads((directory / INDEX).read_text()) if (directory / INDEX).is_file() else {}
    for path in sorted(directory.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        entry = {
            "file": path.name,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "bytes": path.stat().st_size,
            "task": meta.get("task", "style"),
        }
        styles = [str(e["name"]) for e in json.loads(meta.get("styles") or "[]")]
        named = [(path.stem, {})] + [(s, {"style": s}) for s in styles if len(styles) > 1]
        for name, extra in named:
            if name in entries or (extra and (directory / f"{name}.safetensors").exists()):
                continue
            description = (descriptions or {}).get(name) or old.get(name, {}).get("description", "")
            entries[name] = {**entry, **extra, "description": description}
    (directory / INDEX).write_text(json.dumps(entries, indent=1, sort_keys=True) + "\n")
    index.cache_clear()
    return entries
