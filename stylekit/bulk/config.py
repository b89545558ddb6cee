"""The bulk job's config: every flag of `jobs/stylize.py`, validated once, and the library
options (inference, decoding, storage) it hands the stages."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING

from stylekit.errors import ConfigError
from stylekit.files import images, storage
from stylekit.files.locations import Place, refuse_overlaps
from stylekit.infer.options import MemoryOptions, RunOptions, StyleChoice, StyleControls, blend_label
from stylekit.nn import zoo
from stylekit.options_meta import flag

if TYPE_CHECKING:  # torch stays out of --help and of the decode/encode workers
    from stylekit.infer.inference import InferenceOptions


# The quick start's defaults: a shipped model over the bundled photos, into ./outputs/.
DEFAULT_MODEL = "starry_night"
DEFAULT_INPUT = str(resources.files("stylekit") / "examples" / "content")
FORMATS = ("same", "png", "jpg", "webp")  # --format


@dataclass(frozen=True)
class BulkConfig:
    """Everything a bulk run needs; `jobs/stylize.py` builds its flags from these fields."""

    model: str = field(
        default=DEFAULT_MODEL,
        metadata=flag(
            zoo.MODEL_HELP,
            metavar="MODEL",
        ),
    )
    # --style: which of a multi-style model's styles; several write OUT/<label>/KEY each
    style_choice: StyleChoice = field(default_factory=StyleChoice)
    input: str = field(
        default="",
        metadata=flag(
            "folder or URL (s3://bucket/prefix, gs://..., az://..., any fsspec protocol but "
            "memory://); every jpg/jpeg/png/webp/bmp/tif/tiff below it, any case, and every "
            "mp4/mov/m4v/mkv/webm/avi video",
            metavar="IN",
            default_text="the bundled example photos",
        ),
    )
    output: str = field(
        default="",
        metadata=flag(
            "folder or URL (s3://bucket/prefix, gs://..., az://..., any fsspec protocol but memory://); each result at its input's relative key",
            metavar="OUT",
            default_text="outputs/<model name>",
        ),
    )
    keys: str = field(
        default="",
        metadata=flag(
            "read the inputs from this list instead of listing IN (a bucket of millions of keys "
            "is never listed): a Parquet or CSV file with a 'key' column, a text file of one key "
            "per line (keys relative to IN), or an S3 Inventory report's manifest.json (CSV or "
            "Parquet); a listed key missing from IN is a failed row",
            metavar="LOCATION",
        ),
    )
    max_bytes: int = field(
        default=256_000_000,
        metadata=flag(
            "bytes an input photo may have, checked against its listed size before it is read "
            "(a larger one is a failed row; videos are streamed and not capped)",
            metavar="BYTES",
        ),
    )
    follow_links: bool = field(
        default=False,
        metadata=flag(
            "follow symbolic links inside a local IN that point outside it (else each is a "
            "failed row naming its target), and links to folders"
        ),
    )
    format: str = field(
        default="same",
        metadata=flag(
            "output format; 'same' keeps the input's (tif and bmp become png)", choices=list(FORMATS)
        ),
    )
    encode_options: images.EncodeOptions = field(default_factory=images.EncodeOptions)  # --quality
    actors: str = field(
        default="auto",
        metadata=flag(
            "stylizing actors: N, or MIN-MAX to autoscale; auto: 1 to one per GPU with GPUs, "
            "else as many as the CPUs allow, keeping CPUs for decoding and encoding",
            metavar="N|MIN-MAX|auto",
        ),
    )
    gpus_per_actor: float | None = field(
        default=None,
        metadata=flag(
            "GPUs per actor, may be fractional; 0 forces CPUs; none: 1 if the cluster has GPUs, else 0"
        ),
    )
    cpus_per_actor: float | None = field(
        default=None,
        metadata=flag(
            "CPUs per actor; none: 1 with GPUs, else up to 4 each with one CPU of each node kept for reading keys (CPU actors decode and encode in their own threads)"
        ),
    )
    # --max-pixels, --max-side
    decode_options: images.DecodeOptions = field(default_factory=images.DecodeOptions)
    # --precision, --batch-size: the device is each actor's own ("auto": one with a GPU assigned
    # sees it, one without sees none)
    run_options: RunOptions = field(default_factory=RunOptions, metadata={"exclude": ("device",)})
    # --strength, --preserve-color, --style-scale
    style_controls: StyleControls = field(default_factory=StyleControls)
    # --max-memory: each actor's (tiles in its temporary folder)
    memory_options: MemoryOptions = field(default_factory=MemoryOptions, metadata={"exclude": ("tile_dir",)})
    stabilize: float = field(
        default=0.0,
        metadata=flag(
            "videos: temporal stabiliser strength, 0-1 (0: frame by frame); see `python -m stylekit video`"
        ),
    )
    decode_timeout: float = field(
        default=120.0,
        metadata=flag(
            "seconds one input may take to read and decode; past it (a pathological file, a "
            "stuck read) the input fails and its batch goes on"
        ),
    )
    engine: str = field(
        default="auto",
        metadata=flag(
            "where photos are stylized: ray (an actor pool on the Ray cluster), local (blocks in "
            "this process, no Ray: a small machine, where Ray's start costs more than it gives), or "
            "auto: local when there is no Ray cluster to join (no RAY_ADDRESS, no `ray start` here), "
            "the machine has at most 5 CPUs and no GPU, and the night holds no videos; else ray",
            choices=["auto", "ray", "local"],
        ),
    )
    wait_for_nodes: float = field(
        default=600.0,
        metadata=flag(
            "seconds to wait for an autoscaling cluster to add a node the actors fit on (a 0-CPU "
            "head whose workers are not up yet) before giving up with one line; 0: do not wait"
        ),
    )
    stall_timeout: float = field(
        default=1800.0,
        metadata=flag(
            "seconds with no input settling (ok or failed) before the job ends with one line "
            "naming the stage that stopped; what settled is in the manifest and a rerun does the "
            "rest (generous: a 100 MP photo or a long 4K video settles well within it); 0: never"
        ),
    )
    lease_wait: float = field(
        default=600.0,
        metadata=flag(
            "seconds to wait for another run that holds the output's lease (the night before, "
            "still running) before refusing with one line naming it (exit status 5); a lease "
            "whose run died expires within --lease-ttl"
        ),
    )
    lease_ttl: float = field(
        default=90.0,
        metadata=flag(
            "seconds the output's lease lives without renewal (renewed every third of it): "
            "how long a rerun after a crash waits for the dead run's lease"
        ),
    )
    take_lease: bool = field(
        default=False,
        metadata=flag(
            "take over the output's lease whatever its state, for an operator who knows the run "
            "holding it is gone"
        ),
    )
    then: str = field(
        default="",
        metadata=flag(
            "a super-resolution model run on each result in the same pass (a two-model chain: stylize at --max-side, then upscale; e.g. --then sr_x4)",
            metavar="SR_MODEL",
        ),
    )
    overwrite: bool = field(
        default=False, metadata=flag("restylize every input, even those with an up-to-date output")
    )
    limit: int | None = field(
        default=None, metadata=flag("consider only the first N inputs in listing order (a trial run)")
    )
    strict: bool = field(default=False, metadata=flag("exit with status 1 if any input failed"))
    progress_every: float = field(default=10.0, metadata=flag("seconds between progress lines"))
    storage_options: storage.StorageOptions = field(default_factory=storage.StorageOptions)

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
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit must be >= 1 (got {self.limit})")
        if self.gpus_per_actor is not None and self.gpus_per_actor < 0:
            raise ConfigError(f"--gpus-per-actor must be >= 0 (got {self.gpus_per_actor})")
        if self.cpus_per_actor is not None and not self.cpus_per_actor > 0:
            raise ConfigError(f"--cpus-per-actor must be > 0 (got {self.cpus_per_actor})")
        if not self.decode_timeout > 0:
            raise ConfigError(f"--decode-timeout must be > 0 seconds (got {self.decode_timeout})")
        if self.engine not in ("auto", "ray", "local"):
            raise ConfigError(f"--engine must be auto, ray or local (got {self.engine!r})")
        if self.wait_for_nodes < 0:
            raise ConfigError(f"--wait-for-nodes must be >= 0 seconds (got {self.wait_for_nodes})")
        if self.stall_timeout < 0:
            raise ConfigError(
                f"--stall-timeout must be >= 0 seconds, 0 to disable (got {self.stall_timeout})"
            )
        if self.lease_wait < 0:
            raise ConfigError(f"--lease-wait must be >= 0 seconds (got {self.lease_wait})")
        if not self.lease_ttl >= 2:
            raise ConfigError(f"--lease-ttl must be >= 2 seconds (got {self.lease_ttl})")
        if not self.progress_every > 0:
            raise ConfigError(f"--progress-every must be > 0 (got {self.progress_every})")
        if not 0 <= self.stabilize <= 1:
            raise ConfigError(f"--stabilize must be between 0 and 1 (got {self.stabilize})")
        if self.max_bytes < 1:
            raise ConfigError(f"--max-bytes must be >= 1 (got {self.max_bytes})")
        # Before anything is read: no spelling of OUT may be, or hold, an input. OUT inside IN
        # is fine: its keys are left out of IN's listing (bulk/plan/planner.py).
        reads = (
            Place("--input", self.input, tree=True),
            Place("--model", self.model),
            Place("--then", self.then),
            Place("--keys", self.keys),
        )
        writes = [Place("--output", self.output, tree=True)]
        if self.per_style:  # each selection's folder, spelled out (an IN may be one of them)
            writes += [
                Place("--output", storage.join(self.output, label), tree=True) for label in self.styles
            ]
        refuse_overlaps(reads, writes, nested_ok=True)
        self.actor_range  # noqa: B018 (validates)

    @property
    def styles(self) -> tuple[str, ...]:
        """The label of each --style selection, in order (infer/selection.py); ("",) without
        --style."""
        return tuple(blend_label(b) for b in self.style_choice.blends) or ("",)

    @property
    def per_style(self) -> bool:
        """Several selections: each writes OUT/<label>/KEY (one selection writes OUT/KEY)."""
        return len(self.styles) > 1

    @property
    def folders(self) -> tuple[str, ...]:
        """Each selection's folder under OUT, in --style's order: its label with several
        selections, "" (OUT itself) with one."""
        return self.styles if self.per_style else ("",)

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
    def inference_options(self) -> InferenceOptions:
        from stylekit.infer.inference import InferenceOptions

        return InferenceOptions.of(self.run_options, self.style_controls, self.memory_options)
