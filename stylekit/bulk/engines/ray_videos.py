"""Videos in the bulk job: one video per task, on the same actor sizing as photos.

The planner (bulk/plan/planner.py) puts the videos still to do into their own key shards; here each becomes
one call of a `VideoActor`, which holds the model like `StylizeActor` does and runs the path of
`python -m stylekit video` (stylekit/video/transcode.py): the video streams through the actor
(decode, stylize in batches, stabilise, encode, audio copied), so no frame travels through Ray's
object store. The output lands at its key atomically (a local rename, or an S3 upload completed
on close), so incremental reruns treat an existing output as done, exactly as for photos. Each
video gives one manifest row, with its frames and seconds of video; a broken one is a failed
row, never a failed job. A run of several --style selections takes no videos (the driver
refuses it before any work); one selection paints them with its network.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import ray
import ray.data.exceptions

from stylekit.bulk.engines.key_blocks import key_blocks
from stylekit.bulk.engines.models import chosen_networks
from stylekit.bulk.engines.pool import RayPool
from stylekit.bulk.engines.rows import expand
from stylekit.bulk.engines.watch import tick, watched
from stylekit.bulk.metrics import ActorMetrics
from stylekit.bulk.plan.layout import RunLayout
from stylekit.bulk.plan.manifest import FAILED, OK, ROW_FIELDS, manifest_table
from stylekit.errors import RunFailed
from stylekit.files import storage
from stylekit.logs import setup_logging
from stylekit.redact import describe, redact, root_cause

if TYPE_CHECKING:
    from stylekit.bulk.engines.engine import RowSink
    from stylekit.bulk.run import BulkRun
    from stylekit.infer.inference import InferenceOptions
    from stylekit.infer.options import StyleChoice
    from stylekit.video.transcode import VideoOptions

log = logging.getLogger(__name__)

PROGRESS_EVERY = 60.0  # seconds between an actor's progress lines within one video


class RayVideos:
    """The videos still to do, one `VideoActor` call each, on the pool the photos ran on."""

    def __init__(self, pool: RayPool):
        self.pool = pool

    def dataset(self, run: BulkRun) -> ray.data.Dataset:
        """The lazy Ray Dataset: video key shards -> one `VideoActor` call per video ->
        manifest rows. The pool's models: the model file's bytes (and the --then model's,
        which upscales every frame)."""
        from stylekit.video.transcode import VideoOptions

        config, actors, options = run.config, self.pool.actors, run.options
        ds = key_blocks(run.plan.video_shards, 1, options, actors.reads_in_flight)  # one video a call
        video = VideoOptions(stabilize=config.stabilize, progress_every=PROGRESS_EVERY)
        return ds.map_batches(
            VideoActor,
            fn_constructor_kwargs={
                "model": self.pool.models,  # in a list: Ray resolves only top-level refs
                "name": config.model,
                "choice": config.style_choice,
                "inference": config.inference_options,
                "video": video,
                "layout": run.layout,
                "options": options,
                "digest": run.digest,
                "threads": None if actors.num_gpus else actors.threads,
                "clock": self.pool.clock,
            },
            compute=ray.data.ActorPoolStrategy(min_size=actors.min_size, max_size=actors.max_size),
            batch_size=1,
            batch_format="numpy",
            num_cpus=actors.num_cpus,
            num_gpus=actors.num_gpus,
            **actors.ray_args,
        )

    def run(self, run: BulkRun, rows: RowSink) -> None:
        """The videos' rows to the driver as each finishes (ended with one line after
        --stall-timeout without progress, bulk/engines/watch.py)."""
        batches = self.dataset(run).iter_batches(batch_format="pyarrow", batch_size=None)
        try:
            rows.videos(watched(batches, run.config.stall_timeout, self.pool.clock, lambda: rows.settled))
        except (ray.exceptions.RayError, ray.data.exceptions.SystemException) as e:
            raise RunFailed(f"the Ray pipeline failed on videos: {root_cause(e)}") from None


class VideoActor:
    """Holds one model on one device and stylizes whole videos, one per call."""

    def __init__(
        self,
        model: list[ray.ObjectRef],
        name: str,
        choice: StyleChoice,
        inference: InferenceOptions,
        video: VideoOptions,
        layout: RunLayout,
        options: storage.StorageOptions,
        digest: str,
        threads: int | None,
        clock: Any = None,
    ):
        import torch

        from stylekit.infer.inference import Stylizer
        from stylekit.nn.modelio import load_model_bytes

        setup_logging()
        if threads:
            torch.set_num_threads(threads)  # the CPUs Ray reserved for this actor, no more
        (chosen,) = chosen_networks(ray.get(model[0]), name, choice)  # one selection
        self.stylizer = Stylizer(chosen.model, inference)
        # --then: a super-resolution model upscales each frame (the controls are the first's).
        plain = replace(inference, strength=1.0, preserve_color=False, style_scale=1.0)
        self.then = Stylizer(load_model_bytes(ray.get(model[1])).model, plain) if len(model) > 1 else None
        self.video, self.layout, self.options, self.digest = video, layout, options, digest
        self.metrics = ActorMetrics(redact(layout.output_root))  # a video's whole call is busy
        self.clock = clock

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        rows: dict[str, list[Any]] = {name: [] for name in (*ROW_FIELDS, "frames", "duration")}
        outs = expand(batch)  # one output per video: one selection
        t0 = time.perf_counter()
        for key, out, size in zip(outs["key"], outs["output_key"], outs["input_bytes"], strict=True):
            for name, value in zip(rows, self._one(key, out, size), strict=True):
                rows[name].append(value)
        # An ok row's output is made from the video as listed (no hash: it is streamed, not read whole).
        for name in ("input_version", "record_version", "record_hash", "style"):
            rows[name] = outs[name]
        self.metrics.busy(time.perf_counter() - t0)
        return manifest_table(rows, self.layout, self.digest)

    def _one(self, key: str, out: str, size: int) -> tuple[Any, ...]:
        """One video -> its manifest row's values (in the order of `__call__`'s columns)."""
        from stylekit.video.transcode import stylize_video

        t0 = time.perf_counter()
        tick(self.clock, "video", 0)  # a video starts: the stage moves
        target = self.layout.output_uri(out)
        try:
            r = stylize_video(
                self.layout.input_uri(key), target, self.stylizer, self.video, self.options, self.then
            )
            written = storage.stat_keys(self.layout.output_root, [out], self.options)[out].size
        except Exception as e:
            error = describe(e)
            log.warning("video failed: %s: %s", key, error)
            tick(self.clock, "video", 1)
            return key, out, FAILED, error, 0, 0, size, 0, time.perf_counter() - t0, 0, 0.0
        log.info("video %s: %d frames in %.1f s (%.2f frames/s)", key, r.frames, r.seconds, r.frames_per_s)
        tick(self.clock, "video", 1)
        return (
            key,
            out,
            OK,
            "",
            r.width,
            r.height,
            size,
            written,
            time.perf_counter() - t0,
            r.frames,
            r.duration,
        )
