"""Thumbnails of sampled inputs and outputs, read from the store, as data: URIs, within a
byte budget so the page stays small however large the night."""

from __future__ import annotations

import base64
import io
import logging
from dataclasses import dataclass

from PIL import Image, ImageOps

from stylekit.bulk.report.runs import Sample
from stylekit.files import storage
from stylekit.redact import describe, redact

log = logging.getLogger(__name__)

THUMB_SIDE = 220  # px, the longer side
THUMB_QUALITY = 72
BUDGET_BYTES = 1_500_000  # all thumbnails together, as base64 text


@dataclass(frozen=True)
class Pair:
    """One sampled input beside its output: data: URIs, or None with why not."""

    key: str
    input_uri: str | None
    output_uri: str | None
    problem: str = ""


def thumbnail(data: bytes, side: int = THUMB_SIDE) -> str:
    """A JPEG data: URI of an image's thumbnail (EXIF orientation applied, as the job does)."""
    with Image.open(io.BytesIO(data)) as img:
        img.draft("RGB", (side * 2, side * 2))  # JPEG: decode at a reduced scale
        img = ImageOps.exif_transpose(img).convert("RGB")
        img.thumbnail((side, side), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=THUMB_QUALITY, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def pairs(
    samples: list[Sample],
    input_root: str,
    options: storage.StorageOptions,
    budget: int | None = None,
    readable: dict[str, str] | None = None,
) -> list[Pair]:
    """Thumbnails of each sample's input and output, until `budget` bytes of them (default
    BUDGET_BYTES) are used; a sample that cannot be read shows its reason instead. The
    manifest's URIs are redacted: `readable` maps a root as the manifest has it to the root
    to read below (the same when it held no secret)."""
    budget = BUDGET_BYTES if budget is None else budget
    out: list[Pair] = []
    used = 0

    def location(uri: str) -> str:
        for shown, real in (readable or {}).items():
            if uri.startswith(shown + "/"):
                return storage.join(real, uri[len(shown) + 1 :])
        return uri

    for sample in samples:
        key = (
            sample.input[len(input_root) + 1 :] if sample.input.startswith(input_root + "/") else sample.input
        )
        try:
            a = thumbnail(storage.read_bytes(location(sample.input), options))
            b = thumbnail(storage.read_bytes(location(sample.output), options))
        except Exception as e:  # a moved or unreadable file: say so in its cell
            out.append(Pair(redact(key), None, None, f"could not read: {describe(e)}"))
            continue
        if used + len(a) + len(b) > budget:
            log.info("report: thumbnail budget reached after %d of %d samples", len(out), len(samples))
            break
        used += len(a) + len(b)
        out.append(Pair(redact(key), a, b))
    return out
