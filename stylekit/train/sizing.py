"""Sizing the Ray Train workers from the nodes that exist (no Ray calls: train/ray_job.py passes
the alive nodes through stylekit/ray_env.py `plan_on_nodes`).

Each worker is one actor on one node, so its CPUs (and GPU) must fit on one node; the CPU share
is taken from the cluster's CPUs but never more than a node holds, and always leaves a CPU to
Ray Data's decode tasks so a small cluster cannot deadlock. A demand no node can meet raises
`NoNodeFits`, naming the flag to change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from stylekit.nodes import Node, NoNodeFits, capacity, describe_nodes, largest
from stylekit.train.config import TrainConfig


@dataclass(frozen=True)
class WorkerPlan:
    """What Ray Train is asked for: MIN-MAX workers (equal: a fixed group), each reserving
    `cpus` CPUs and, with `use_gpu`, one GPU."""

    min_workers: int
    max_workers: int
    cpus: float
    use_gpu: bool

    @property
    def resources(self) -> dict[str, float]:
        return {"CPU": self.cpus, **({"GPU": 1.0} if self.use_gpu else {})}

    @property
    def num_workers(self) -> int | tuple[int, int]:
        """Ray Train's ScalingConfig(num_workers=...): an int, or (min, max) for an elastic run."""
        return (
            self.max_workers if self.min_workers == self.max_workers else (self.min_workers, self.max_workers)
        )


def plan_workers(config: TrainConfig, nodes: list[Node]) -> WorkerPlan:
    """GPUs when a node has one (unless --cpu), else CPUs; every worker fits on one node and
    at least --num-workers MIN fit on the nodes now up."""
    work = [n for n in nodes if n.takes_work]
    low, high = config.min_workers, config.max_workers
    if not work:
        raise NoNodeFits(
            "no node of this Ray cluster has CPUs or GPUs (a head started with num_cpus=0 takes no "
            "work): add worker nodes, or raise --wait-for-nodes to wait for the autoscaler"
        )
    has_gpu = largest(work, "gpus") >= 1
    use_gpu = config.use_gpu if config.use_gpu is not None else has_gpu
    if use_gpu:
        if not has_gpu:
            raise NoNodeFits(
                f"--gpu asked for, but no node has a GPU ({describe_nodes(work)}); drop --gpu or use --cpu"
            )
        cpus = config.cpus_per_worker or 1.0
        _check(config, work, cpus, 1.0, low)
        return WorkerPlan(low, high, cpus, True)
    if config.cpus_per_worker is not None:
        cpus = config.cpus_per_worker
    else:
        cpus = cpu_share(sum(n.cpus for n in work), high)
        while capacity(work, cpus) < high and cpus > 0.01:  # smaller, until each fits a node
            cpus = cpus - 1 if cpus > 1 else max(0.01, math.floor(cpus * 50) / 100)
    _check(config, work, cpus, 0.0, low)
    return WorkerPlan(low, high, cpus, False)


def cpu_share(total_cpus: float, workers: int) -> float:
    """CPUs per worker leaving at least one CPU to Ray Data's decode tasks (so a 2-core
    machine with two workers cannot deadlock). Ray wants whole numbers above 1."""
    share = max(total_cpus - 1, 0.5) / workers
    return float(math.floor(share)) if share >= 1 else math.floor(share * 100) / 100 or 0.01


def _check(config: TrainConfig, work: list[Node], cpus: float, gpus: float, low: int) -> None:
    most_cpus = largest([n for n in work if n.gpus >= gpus], "cpus")
    if cpus > most_cpus:
        raise NoNodeFits(
            f"--cpus-per-worker {cpus:g}: the largest {'GPU ' if gpus else ''}node has {most_cpus:g} "
            f"CPUs ({describe_nodes(work)}); lower --cpus-per-worker"
        )
    fits = capacity(work, cpus, gpus)
    if fits < low:
        each = f"{cpus:g} CPU" + (" + 1 GPU" if gpus else "")
        raise NoNodeFits(
            f"--num-workers {config.num_workers}: only {fits} worker(s) of {each} fit on the nodes "
            f"({describe_nodes(work)}); lower --num-workers (or give MIN-MAX)"
        )
