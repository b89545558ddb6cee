"""Sizing the bulk job's actor pool from the cluster's resources (no Ray calls: the driver
passes `ray.cluster_resources()`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from stylekit.bulk.config import BulkConfig
from stylekit.errors import ConfigError

MAX_CPU_THREADS = 4  # torch scales poorly past this on CPU; more actors do better


@dataclass(frozen=True)
class ActorPlan:
    """How many stylizing actors, and what each reserves."""

    min_size: int
    max_size: int
    num_cpus: float
    num_gpus: float
    task_cpus: float  # per decode / encode task
    threads_each: int = 0  # torch threads per CPU actor (its CPUs and its codec share); 0: its CPUs

    @property
    def writes_in_flight(self) -> int:
        """Write tasks at once: enough to keep up with each actor's batches (an encode of a
        batch can take longer than a GPU's model call)."""
        return max(2, 4 * self.max_size)

    @property
    def threads(self) -> int:
        return self.threads_each or max(1, int(self.num_cpus))

    @property
    def codecs_inside(self) -> bool:
        """CPU actors decode and encode in their own threads (stylekit/bulk/blocks.py); GPU
        actors leave the codecs to CPU tasks, so the GPU never waits for them."""
        return self.num_gpus == 0

    def describe(self) -> str:
        size = f"{self.min_size}" if self.min_size == self.max_size else f"{self.min_size}-{self.max_size}"
        device = (
            f"{self.num_gpus:g} GPU + {self.num_cpus:g} CPU" if self.num_gpus else f"{self.num_cpus:g} CPU"
        )
        return f"{size} actor(s) of {device} each"


def plan_actors(config: BulkConfig, resources: dict[str, float]) -> ActorPlan:
    """Size the pool from the cluster: GPUs when there are any (unless --gpus-per-actor 0),
    else CPUs, always leaving CPUs to the decode and encode tasks so nothing deadlocks."""
    cpus, gpus = float(resources.get("CPU", 1)), float(resources.get("GPU", 0))
    per_gpu = config.gpus_per_actor if config.gpus_per_actor is not None else (1.0 if gpus >= 1 else 0.0)
    task_cpus = 1.0 if cpus >= 2 else 0.5
    if per_gpu > 0:
        if gpus < per_gpu:
            raise ConfigError(
                f"--gpus-per-actor {per_gpu:g} asked for, but the Ray cluster has {gpus:g} GPUs; "
                "use --gpus-per-actor 0 to run on CPUs"
            )
        per_cpu = config.cpus_per_actor or 1.0
        most = math.floor(gpus / per_gpu + 1e-9)
        low, high = config.actor_range or (1, most)
        _check_fits(low, per_gpu, gpus, "GPUs")
        _check_fits(low, per_cpu, cpus - task_cpus, "CPUs (one kept for decoding)")
        return ActorPlan(low, high, per_cpu, per_gpu, task_cpus)
    spare = max(cpus - _codec_cpus(cpus), task_cpus)
    per_cpu = config.cpus_per_actor or max(min(float(MAX_CPU_THREADS), spare), task_cpus)
    low, high = config.actor_range or (max(1, math.floor(spare / per_cpu)),) * 2
    _check_fits(low, per_cpu, cpus - task_cpus, "CPUs (one kept for decoding)")
    # The actors' codec threads run on the CPUs the actors leave (stylekit/bulk/blocks.py):
    # each actor's torch threads are its share of all the CPUs (--cpus-per-actor: its own).
    threads = 0 if config.cpus_per_actor else max(1, math.floor(cpus / max(high, 1) + 1e-9))
    return ActorPlan(low, high, per_cpu, 0.0, task_cpus, threads)


def _codec_cpus(cpus: float) -> float:
    """CPUs a CPU-only node keeps outside the stylizing actors: one for the tasks that read
    the key shards (half of a 1-CPU node). The actors decode and encode in their own threads
    (stylekit/bulk/blocks.py), as `python -m stylekit stylize` does, so no codec tasks need
    CPUs of their own: on this 2-CPU machine a separate quarter (at least one CPU) left the
    network one core of two, and the job at 0.43x the plain command (benchmarks/RESULTS.md,
    "One node")."""
    return 1.0 if cpus >= 2 else cpus / 2


def _check_fits(actors: int, each: float, available: float, what: str) -> None:
    if actors * each > available + 1e-9:
        raise ConfigError(
            f"{actors} actor(s) x {each:g} need more than the {max(available, 0):g} {what} of "
            "this Ray cluster; lower --actors or the per-actor resources"
        )
