"""--engine ray: a run's photos, then its videos, on a Ray cluster.

The pool is set up once (bulk/engines/pool.py): the actors sized on the nodes there are, the
models put in the object store, the stall watchdog's clock. Photos go through the pipeline that
fits the pool's actors (bulk/engines/ray_photos.py: CPU blocks or GPU stages), then videos one
per actor call (bulk/engines/ray_videos.py). A Ray head that stops answering ends the run with
one line, not Ray's exit 1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stylekit.bulk.engines.pool import RayPool
from stylekit.bulk.engines.ray_photos import StylizeActor, photo_engine
from stylekit.bulk.engines.ray_videos import RayVideos
from stylekit.ray_env import ClusterWatch, init_ray

if TYPE_CHECKING:
    from stylekit.bulk.engines.engine import RowSink
    from stylekit.bulk.run import BulkRun


class RayEngine:
    """Photos through a pool of `actor`s (`StylizeActor`, or a subclass a benchmark times),
    then videos."""

    def __init__(self, actor: type[StylizeActor] = StylizeActor):
        self.actor = actor

    def start(self) -> None:
        init_ray()  # joins the cluster there is, or starts a local one

    def run(self, run: BulkRun, rows: RowSink) -> None:
        with ClusterWatch(rows.stop):
            pool = RayPool.start(run)
            if run.plan.photos:
                photo_engine(pool, self.actor).run(run, rows)
            if run.plan.videos:  # one video per task, after the photos
                RayVideos(pool).run(run, rows)
