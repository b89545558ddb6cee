"""What the Ray engines of one run share: the stylizing actors sized once from the nodes that
exist, the models in the object store, and the stall watchdog's clock."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ray

from stylekit.bulk.engines.sizing import ActorPlan, plan_actors
from stylekit.bulk.engines.watch import start_clock
from stylekit.ray_env import plan_on_nodes

if TYPE_CHECKING:
    from stylekit.bulk.run import BulkRun

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RayPool:
    actors: ActorPlan  # how many stylizing actors, and what each reserves
    models: list[ray.ObjectRef]  # the model file's bytes (and the --then model's)
    clock: Any = None  # the stall watchdog's StageClock actor (bulk/engines/watch.py); None: none

    @classmethod
    def start(cls, run: BulkRun) -> RayPool:
        """Size the actors on the nodes there are (waiting up to --wait-for-nodes for an
        autoscaler's), put the models, start the watchdog's clock."""
        actors = plan_on_nodes(lambda nodes: plan_actors(run.config, nodes), run.config.wait_for_nodes)
        log.info("stylizing with %s", actors.describe())
        # The actors get the very bytes checked on the driver, through the object store: the
        # same model everywhere, and a local model file works on a multi-node cluster too.
        return cls(actors, [ray.put(m) for m in run.models], start_clock())
