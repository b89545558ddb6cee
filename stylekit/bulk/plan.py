"""The Ray-free half of the bulk job: its config, the plan of what to stylize, and the manifest.

Planning runs on the driver as one stream: list IN (S3 pages of 1000 keys, or a sorted walk of
a folder), keep image keys, map each to its output key, decide done-or-not per page, and write
the keys still to do into bounded Parquet shards under OUT/_manifest/_keys/<run-id>/ that Ray
Data then reads. Nothing is held whole: one page, one shard buffer and one manifest part at a
time. Skipped inputs (and inputs that lose an output-key collision) go straight into the
manifest, so they never cost a Ray task.

The skip check is a merge of each page against the output listing: one range listing of OUT
covering the page's output keys (see `storage.stat_keys`), run in a few threads while the
listing of IN goes on, so it adds about one request per 1000 inputs and no wall time. An input
counts as done when its output exists and is not older than the input; outputs are written
atomically, so an existing output is a complete one, and a rerun after an interruption finishes
exactly what is missing. OUT/_manifest/_outputs.json records the model digest and the settings
that change pixels; a rerun with other ones refuses to mix styles unless --overwrite.
"""

from __future__ import annotations

import collections
import io
import itertools
import json
import logging
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from stylekit.errors import ConfigError
from stylekit.files import images, storage, zoo
from stylekit.infer import memory
from stylekit.video.media import is_video_key, video_output_key

if TYPE_CHECKING:  # torch stays out of --help and of the decode/encode workers
    from stylekit.infer.inference import InferenceOptions

log = logging.getLogger(__name__)

MANIFEST_DIR = "_manifest"
KEYS_DIR = "_keys"  # leading underscore: Parquet dataset readers of _manifest/ skip it
SETTINGS_FILE = "_outputs.json"
FORMATS = ("same", "png", "jpg", "webp")
PAGE_KEYS = 1000  # keys per skip check: one S3 listing page
SHARD_KEYS = 20_000  # keys per Parquet shard Ray reads (about 1 MB)
# The first shard's keys; each next shard doubles, up to SHARD_KEYS. One Ray task cuts a shard
# into batches, and decoding starts on a small cluster only once it is done (about 0.1 s a
# batch on 2 CPUs): small first shards make the first outputs come in seconds, not minutes.
FIRST_SHARD_KEYS = 256
CHECK_THREADS = 4

OK, FAILED, SKIPPED = "ok", "failed", "skipped"

MANIFEST_SCHEMA = pa.schema(
    [
        ("input", pa.string()),
        ("output", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("input_bytes", pa.int64()),
        ("output_bytes", pa.int64()),
        ("seconds", pa.float64()),
        ("format", pa.string()),
        ("model_digest", pa.string()),
        ("run_id", pa.string()),
        ("finished_at", pa.timestamp("ms", tz="UTC")),
        # Videos only (stylekit/bulk/video.py): frames written and seconds of video.
        ("frames", pa.int64()),
        ("duration", pa.float64()),
    ]
)
KEYS_SCHEMA = pa.schema([("key", pa.string()), ("output_key", pa.string()), ("input_bytes", pa.int64())])


def _help(text: str, **more: Any) -> dict[str, Any]:
    return {"help": text, **more}


# The quick start's defaults: a shipped model over the bundled photos, into ./outputs/.
DEFAULT_MODEL = "starry_night"
DEFAULT_INPUT = str(resources.files("stylekit") / "examples" / "content")


@dataclass(frozen=True)
class BulkConfig:
    """Everything a bulk run needs; `jobs/stylize.py` builds its flags from these fields."""

    model: str = field(
        default=DEFAULT_MODEL,
        metadata=_help(
            "a shipped model's name (e.g. starry_night), or a stylekit .safetensors or reference .pth/.model (path or URL: s3://, gs://, az://, any fsspec protocol)",
            metavar="MODEL",
        ),
    )
    input: str = field(
        default="",
        metadata=_help(
            "folder or URL (s3://bucket/prefix, gs://..., az://..., any fsspec protocol but "
            "memory://); every jpg/jpeg/png/webp/bmp/tif/tiff below it, any case, and every "
            "mp4/mov/m4v/mkv/webm/avi video (default: the bundled example photos)",
            metavar="IN",
        ),
    )
    output: str = field(
        default="",
        metadata=_help(
            "folder or URL (s3://bucket/prefix, gs://..., az://..., any fsspec protocol but memory://); each result at its input's relative key (default: outputs/<model name>)",
            metavar="OUT",
        ),
    )
    format: str = field(
        default="same",
        metadata=_help(
            "output format; 'same' keeps the input's (tif and bmp become png)", choices=list(FORMATS)
        ),
    )
    quality: int = field(default=95, metadata=_help("JPEG/WebP quality, 1-100"))
    batch_size: int = field(
        default=8, metadata=_help("images per model call in an actor (same-size images share a pass)")
    )
    actors: str = field(
        default="auto",
        metadata=_help(
            "stylizing actors: N, or MIN-MAX to autoscale; auto: 1 to one per GPU with GPUs, "
            "else as many as the CPUs allow, keeping CPUs for decoding and encoding",
            metavar="N|MIN-MAX|auto",
        ),
    )
    gpus_per_actor: float | None = field(
        default=None,
        metadata=_help(
            "GPUs per actor, may be fractional; 0 forces CPUs; none: 1 if the cluster has GPUs, else 0"
        ),
    )
    cpus_per_actor: float | None = field(
        default=None,
        metadata=_help(
            "CPUs per actor; none: 1 with GPUs, else up to 4 each, a quarter of the CPUs kept for codecs"
        ),
    )
    max_side: int | None = field(
        default=None, metadata=_help("downscale inputs so the longest side is at most this")
    )
    max_pixels: int = field(
        default=images.DEFAULT_MAX_PIXELS,
        metadata=_help("refuse images with more pixels than this (decompression bombs)"),
    )
    precision: str = field(
        default="auto",
        metadata=_help("auto (bf16 on GPU, fp32 on CPU), fp32, bf16 or fp16"),
    )
    strength: float = field(
        default=1.0,
        metadata=_help("how much style, 0-1: 1 the stylized image, 0 the photo, between a blend"),
    )
    preserve_color: bool = field(
        default=False,
        metadata=_help("keep the photo's own colours: only the stylized luminance is used"),
    )
    style_scale: float | None = field(
        default=None,
        metadata=_help(
            "brush-stroke size relative to the photo, 0.25-8: 2 twice as large, 0.5 half (the network runs on the photo resized by 1/SCALE); default: the model's own scale, the same painting on a photo of any size (stylekit models paint a large photo as a pyramid from the size they were trained for; a reference .pth runs at full size)"
        ),
    )
    max_memory: str | None = field(
        default=None,
        metadata=_help(
            "peak memory of each stylizing actor, e.g. 4G: larger images run tiled to stay inside "
            "it (same pixels); default the actor's CPU share of its node's available memory"
        ),
    )
    stabilize: float = field(
        default=0.0,
        metadata=_help(
            "videos: temporal stabiliser strength, 0-1 (0: frame by frame); see `python -m stylekit video`"
        ),
    )
    decode_timeout: float = field(
        default=120.0,
        metadata=_help(
            "seconds one input may take to read and decode; past it (a pathological file, a "
            "stuck read) the input fails and its batch goes on"
        ),
    )
    then: str = field(
        default="",
        metadata=_help(
            "a super-resolution model run on each result in the same pass (a two-model chain: stylize at --max-side, then upscale; e.g. --then sr_x4)",
            metavar="SR_MODEL",
        ),
    )
    overwrite: bool = field(
        default=False, metadata=_help("restylize every input, even those with an up-to-date output")
    )
    limit: int | None = field(
        default=None, metadata=_help("consider only the first N inputs in listing order (a trial run)")
    )
    strict: bool = field(default=False, metadata=_help("exit with status 1 if any input failed"))
    progress_every: float = field(default=10.0, metadata=_help("seconds between progress lines"))
    s3_endpoint: str | None = field(
        default=None, metadata=_help("S3-compatible endpoint URL (else AWS_ENDPOINT_URL, else AWS)")
    )

    def __post_init__(self) -> None:
        if not self.model:
            raise ConfigError("--model is required: a shipped model's name or a model file")
        if not self.input:
            object.__setattr__(self, "input", DEFAULT_INPUT)
        if not self.output:
            stem = os.path.splitext(os.path.basename(self.model.rstrip("/")))[0] or "stylized"
            object.__setattr__(self, "output", os.path.join("outputs", stem))
        object.__setattr__(self, "model", zoo.resolve_shipped(self.model))  # a shipped model's name
        if self.then:
            object.__setattr__(self, "then", zoo.resolve_shipped(self.then))
        if self.format not in FORMATS:
            raise ConfigError(f"--format must be one of {', '.join(FORMATS)} (got {self.format!r})")
        if not 1 <= self.quality <= 100:
            raise ConfigError(f"--quality must be 1-100 (got {self.quality})")
        if self.max_memory:
            memory.parse_size(self.max_memory)  # validates
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit must be >= 1 (got {self.limit})")
        if self.gpus_per_actor is not None and self.gpus_per_actor < 0:
            raise ConfigError(f"--gpus-per-actor must be >= 0 (got {self.gpus_per_actor})")
        if self.cpus_per_actor is not None and not self.cpus_per_actor > 0:
            raise ConfigError(f"--cpus-per-actor must be > 0 (got {self.cpus_per_actor})")
        if not self.decode_timeout > 0:
            raise ConfigError(f"--decode-timeout must be > 0 seconds (got {self.decode_timeout})")
        if not self.progress_every > 0:
            raise ConfigError(f"--progress-every must be > 0 (got {self.progress_every})")
        if not 0 <= self.stabilize <= 1:
            raise ConfigError(f"--stabilize must be between 0 and 1 (got {self.stabilize})")
        if root_of(self.input) == root_of(self.output):
            raise ConfigError("--output must differ from --input (results would replace the photos)")
        self.actor_range  # noqa: B018 (validates)
        self.inference_options  # noqa: B018
        self.storage_options  # noqa: B018
        try:
            self.decode_options  # noqa: B018
        except ValueError as e:
            raise ConfigError(f"--max-side/--max-pixels: {e}") from None

    @property
    def actor_range(self) -> tuple[int, int] | None:
        """(min, max) actors, or None for auto."""
        text = self.actors.strip().lower()
        if text == "auto":
            return None
        low, _, high = text.partition("-")
        try:
            lo, hi = int(low), int(high or low)
        except ValueError:
            raise ConfigError(f"--actors must be N, MIN-MAX or auto (got {self.actors!r})") from None
        if not 1 <= lo <= hi:
            raise ConfigError(f"--actors needs 1 <= MIN <= MAX (got {self.actors!r})")
        return lo, hi

    @property
    def storage_options(self) -> storage.StorageOptions:
        return storage.StorageOptions(self.s3_endpoint)

    @property
    def decode_options(self) -> images.DecodeOptions:
        return images.DecodeOptions(self.max_pixels, self.max_side)

    @property
    def inference_options(self) -> InferenceOptions:
        from stylekit.infer.inference import InferenceOptions

        # "auto" device: an actor with a GPU assigned sees it, one without sees none.
        return InferenceOptions(
            device="auto",
            precision=self.precision,
            max_batch=self.batch_size,
            strength=self.strength,
            preserve_color=self.preserve_color,
            style_scale=self.style_scale,
            max_memory=memory.parse_size(self.max_memory) if self.max_memory else None,
        )


def root_of(location: str) -> str:
    """A comparable form of a folder or URI: absolute real path, or URI without trailing '/'."""
    if storage.is_uri(location) and not location.startswith("file://"):
        return location.rstrip("/")
    return os.path.realpath(location.removeprefix("file://"))


def nested_prefix(inner: str, outer: str) -> str | None:
    """`inner`'s key prefix (ending in '/') relative to `outer` when it lies below it."""
    a, b = root_of(inner), root_of(outer)
    sep = "/" if storage.is_uri(b) else os.sep
    if not a.startswith(b.rstrip(sep) + sep):
        return None
    return a[len(b.rstrip(sep)) + 1 :].replace(os.sep, "/") + "/"


# --- output keys ------------------------------------------------------------------------------

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


# --- run layout -------------------------------------------------------------------------------


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


@dataclass(frozen=True)
class RunLayout:
    """Where one run reads and writes. Roots are absolute paths or URIs without a trailing '/'."""

    input_root: str
    output_root: str
    run_id: str

    @classmethod
    def for_config(cls, config: BulkConfig, run_id: str | None = None) -> RunLayout:
        def norm(loc: str) -> str:
            return loc.rstrip("/") if storage.is_uri(loc) else os.path.abspath(loc.removeprefix("file://"))

        return cls(norm(config.input), norm(config.output), run_id or new_run_id())

    @property
    def manifest_dir(self) -> str:
        # Hive-style: reading OUT/_manifest/ as one dataset gives every run with a run column.
        return storage.join(self.output_root, MANIFEST_DIR, f"run={self.run_id}")

    @property
    def keys_dir(self) -> str:
        return storage.join(self.output_root, MANIFEST_DIR, KEYS_DIR, self.run_id)

    @property
    def settings_file(self) -> str:
        return storage.join(self.output_root, MANIFEST_DIR, SETTINGS_FILE)

    def input_uri(self, key: str) -> str:
        return storage.join(self.input_root, key)

    def output_uri(self, key: str) -> str:
        return storage.join(self.output_root, key)


# Settings recorded since the stylization controls: a settings file written before them holds
# outputs made at these values (the controls' neutral defaults).
_SETTINGS_BEFORE_CONTROLS = {"strength": 1.0, "preserve_color": False, "style_scale": 1.0, "stabilize": 0.0}


def output_settings(config: BulkConfig, digest: str) -> dict[str, Any]:
    """What, besides the output key, decides an output's pixels."""
    return {
        "model_digest": digest,
        "max_side": config.max_side,
        "quality": config.quality,
        "strength": config.strength,
        "preserve_color": config.preserve_color,
        "style_scale": config.style_scale,
        "stabilize": config.stabilize,
    }


def settings_changes(found: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """The settings that differ between a recorded settings file and this run's, as
    "name old -> new" (empty: the same); keys a file from before the controls lacks count
    as their defaults."""
    found = {**_SETTINGS_BEFORE_CONTROLS, **found}
    return [f"{k} {found.get(k)!r} -> {v!r}" for k, v in wanted.items() if found.get(k) != v]


def check_output_settings(
    config: BulkConfig, layout: RunLayout, digest: str, options: storage.StorageOptions
) -> None:
    """Refuse to mix outputs of another model or other settings into OUT (unless --overwrite);
    record the settings on a first run. An --overwrite run records its own only when it ends
    (`record_output_settings`), so an interrupted one still refuses a plain rerun."""
    wanted = output_settings(config, digest)
    if not storage.exists(layout.settings_file, options):
        record_output_settings(config, layout, digest, options)
        return
    found = json.loads(storage.read_bytes(layout.settings_file, options))
    changes = settings_changes(found, wanted)
    if not changes or config.overwrite:
        return
    changed = ", ".join(changes)
    raise ConfigError(
        f"{layout.output_root} holds results made differently ({changed}); rerun with --overwrite "
        "to restylize everything, or use another --output"
    )


def record_output_settings(
    config: BulkConfig, layout: RunLayout, digest: str, options: storage.StorageOptions
) -> None:
    data = json.dumps(output_settings(config, digest), indent=1).encode()
    storage.write_bytes(layout.settings_file, data, options)


# --- the manifest -----------------------------------------------------------------------------


def manifest_table(columns: dict[str, list[Any]], layout: RunLayout, digest: str) -> pa.Table:
    """Manifest rows from per-row `key`, `output_key`, `status`, `error`, `width`, `height`,
    `input_bytes`, `output_bytes`, `seconds` lists, and for videos `frames` and `duration`
    ("" and 0 mean unknown)."""
    keys, outs = columns["key"], columns["output_key"]
    n = len(keys)
    now = int(time.time() * 1000)

    def or_none(values: list[Any]) -> list[Any]:
        return [v if v else None for v in values]

    data = {
        "input": [layout.input_uri(k) for k in keys],
        "output": [layout.output_uri(o) for o in outs],
        "status": columns["status"],
        "error": [storage.redact(e) if e else None for e in columns["error"]],
        "width": or_none(columns["width"]),
        "height": or_none(columns["height"]),
        "input_bytes": columns["input_bytes"],
        "output_bytes": or_none(columns["output_bytes"]),
        "seconds": or_none(columns["seconds"]),
        "format": [_format_of(o) for o in outs],
        "model_digest": [digest] * n,
        "run_id": [layout.run_id] * n,
        "finished_at": [now] * n,
        "frames": or_none(columns.get("frames", [0] * n)),
        "duration": or_none(columns.get("duration", [0.0] * n)),
    }
    return pa.Table.from_pydict(data, schema=MANIFEST_SCHEMA)


def _format_of(output_key: str) -> str:
    """The manifest's format: a photo's image format, a video's container ("mp4")."""
    if is_video_key(output_key):
        return os.path.splitext(output_key)[1].lower().lstrip(".")
    return images.format_of(output_key)


class ManifestWriter:
    """Appends manifest rows as Parquet parts (part-00000.parquet, ...) under the run's folder.

    A part is written whole (atomically) once it has `rows_per_part` rows or is
    `seconds_per_part` old, so an interrupted run leaves a manifest of what it finished, minus
    at most the last part's rows."""

    def __init__(
        self,
        location: str,
        options: storage.StorageOptions,
        rows_per_part: int = 50_000,
        seconds_per_part: float = 60.0,
    ):
        self.location, self.options = location, options
        self.rows_per_part, self.seconds_per_part = rows_per_part, seconds_per_part
        self.counts: collections.Counter[str] = collections.Counter()
        self.parts = 0
        self._buffer: list[pa.Table] = []
        self._rows = 0
        self._since = time.monotonic()

    def add(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        self.counts.update(table.column("status").to_pylist())
        self._buffer.append(table)
        self._rows += table.num_rows
        if self._rows >= self.rows_per_part or time.monotonic() - self._since > self.seconds_per_part:
            self.flush()

    def flush(self) -> None:
        self._since = time.monotonic()
        if not self._buffer:
            return
        buf = io.BytesIO()
        pq.write_table(pa.concat_tables(self._buffer), buf, compression="zstd")
        name = f"part-{self.parts:05d}.parquet"
        storage.write_bytes(storage.join(self.location, name), buf.getvalue(), self.options)
        self.parts += 1
        self._buffer, self._rows = [], 0

    def __enter__(self) -> ManifestWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()  # also on an interrupt: the rows buffered are true


# --- planning ---------------------------------------------------------------------------------


@dataclass
class Plan:
    """What the listing found: the key shards Ray reads and the counts so far."""

    shards: list[str] = field(default_factory=list)
    video_shards: list[str] = field(default_factory=list)  # one video per row (bulk/video.py)
    listed: int = 0
    todo: int = 0  # photos and videos
    videos: int = 0  # of which videos
    skipped: int = 0
    failed: int = 0


def image_entries(config: BulkConfig, layout: RunLayout) -> Iterator[storage.FileEntry]:
    """The inputs: image keys under IN, minus OUT's own keys when OUT lies inside IN."""
    inside = nested_prefix(layout.output_root, layout.input_root)
    entries = (
        e
        for e in storage.list_entries(layout.input_root, config.storage_options)
        if (images.is_image_key(e.key) or is_video_key(e.key)) and not (inside and e.key.startswith(inside))
    )
    return itertools.islice(entries, config.limit)


def _pages(entries: Iterable[storage.FileEntry], size: int) -> Iterator[list[storage.FileEntry]]:
    it = iter(entries)
    while page := list(itertools.islice(it, size)):
        yield page


class _ShardWriter:
    """Buffers to-do keys and writes them as bounded Parquet shards under the run's _keys/."""

    def __init__(
        self, layout: RunLayout, options: storage.StorageOptions, plan: Plan, *, videos: bool = False
    ):
        self.layout, self.options, self.plan = layout, options, plan
        self.shards, self.prefix = (plan.video_shards, "videos") if videos else (plan.shards, "keys")
        self.rows: dict[str, list[Any]] = {name: [] for name in KEYS_SCHEMA.names}

    def add(self, key: str, out: str, size: int) -> None:
        for name, value in zip(KEYS_SCHEMA.names, (key, out, size), strict=True):
            self.rows[name].append(value)
        if len(self.rows["key"]) >= min(SHARD_KEYS, FIRST_SHARD_KEYS << min(len(self.shards), 10)):
            self.flush()

    def flush(self) -> None:
        if not self.rows["key"]:
            return
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pydict(self.rows, schema=KEYS_SCHEMA), buf)
        location = storage.join(self.layout.keys_dir, f"{self.prefix}-{len(self.shards):05d}.parquet")
        storage.write_bytes(location, buf.getvalue(), self.options)
        self.shards.append(location)
        self.rows = {name: [] for name in KEYS_SCHEMA.names}


def plan_inputs(config: BulkConfig, layout: RunLayout, manifest: ManifestWriter, digest: str) -> Plan:
    """List IN and settle each input as to-do (into key shards), skipped or failed (into the
    manifest), checking OUT a page at a time in a few threads while the listing goes on."""
    return _Planner(config, layout, manifest, digest).run()


class _Planner:
    def __init__(self, config: BulkConfig, layout: RunLayout, manifest: ManifestWriter, digest: str):
        self.config, self.layout, self.manifest, self.digest = config, layout, manifest, digest
        self.options = config.storage_options
        self.plan = Plan()
        self.shards = _ShardWriter(layout, self.options, self.plan)
        self.video_shards = _ShardWriter(layout, self.options, self.plan, videos=True)
        self.guard = CollisionGuard()

    def run(self) -> Plan:
        progress = _Every(self.config.progress_every)
        check = _no_outputs if self.config.overwrite else storage.stat_keys
        pending: collections.deque[tuple[list[storage.FileEntry], Future[dict[str, storage.FileEntry]]]]
        pending = collections.deque()
        with ThreadPoolExecutor(CHECK_THREADS) as pool:
            for page in _pages(image_entries(self.config, self.layout), PAGE_KEYS):
                outs = [output_key(e.key, self.config.format) for e in page]
                pending.append((page, pool.submit(check, self.layout.output_root, outs, self.options)))
                # Pages are settled in listing order, at most CHECK_THREADS checks behind.
                if len(pending) > CHECK_THREADS:
                    page_done, future = pending.popleft()
                    self.settle(page_done, future.result())
                if progress.due():
                    p = self.plan
                    log.info(
                        "listed %d inputs so far: %d to stylize, %d done before", p.listed, p.todo, p.skipped
                    )
            while pending:
                page_done, future = pending.popleft()
                self.settle(page_done, future.result())
        self.shards.flush()
        self.video_shards.flush()
        return self.plan

    def settle(self, page: list[storage.FileEntry], existing: dict[str, storage.FileEntry]) -> None:
        """Decide each input of a page, in listing order (the collision guard relies on it)."""
        rows: dict[str, list[Any]] = {name: [] for name in ROW_FIELDS}
        for entry in page:
            out = output_key(entry.key, self.config.format)
            earlier = self.guard.claim(entry.key, out)
            found = existing.get(out)
            if earlier is not None:
                error = f"output {out!r} is also the output of input {earlier!r}; rename one of them"
                _add_row(rows, entry, out, FAILED, error)
                self.plan.failed += 1
            elif found is not None and found.mtime >= entry.mtime:
                _add_row(rows, entry, out, SKIPPED, "", found.size)
                self.plan.skipped += 1
            elif is_video_key(entry.key):
                self.video_shards.add(entry.key, out, entry.size)
                self.plan.todo += 1
                self.plan.videos += 1
            else:
                self.shards.add(entry.key, out, entry.size)
                self.plan.todo += 1
        self.plan.listed += len(page)
        self.manifest.add(manifest_table(rows, self.layout, self.digest))


def _no_outputs(location: str, keys: list[str], options: storage.StorageOptions) -> dict[str, Any]:
    return {}  # --overwrite: treat every output as missing


# A manifest row's columns as the writers fill them (the video rows add "frames", "duration").
ROW_FIELDS = (
    "key",
    "output_key",
    "status",
    "error",
    "width",
    "height",
    "input_bytes",
    "output_bytes",
    "seconds",
)


def _add_row(
    rows: dict[str, list[Any]],
    entry: storage.FileEntry,
    out: str,
    status: str,
    error: str,
    out_bytes: int = 0,
) -> None:
    values = (entry.key, out, status, error, 0, 0, entry.size, out_bytes, 0.0)
    for name, value in zip(ROW_FIELDS, values, strict=True):
        rows[name].append(value)


class _Every:
    """True once every `seconds` (for progress lines)."""

    def __init__(self, seconds: float):
        self.seconds, self.last = seconds, time.monotonic()

    def due(self) -> bool:
        now = time.monotonic()
        if now - self.last < self.seconds:
            return False
        self.last = now
        return True
