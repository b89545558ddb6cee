"""Sizing the bulk job's actor pool from the nodes that exist (no Ray calls: the driver passes
the alive nodes, stylekit/ray_env.py `plan_on_nodes`).

Each actor and each decode/encode task runs on one node, so every size comes from one node's
CPUs, GPUs and memory, never from the cluster's sum: 4 CPUs per actor on 2-CPU nodes would wait
forever. A demand no node can meet raises `NoNodeFits`, whose message names the flag to change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from stylekit.bulk.config import BulkConfig
from stylekit.nodes import Node, NoNodeFits, capacity, describe_nodes, largest, size_text

MAX_CPU_THREADS = 4  # torch scales poorly past this on CPU; more actors do better


@dataclass(frozen=True)
class ActorPlan:
    """How many stylizing actors, and what each reserves."""

    min_size: int
    max_size: int
    num_cpus: float
    num_gpus: float
    task_cpus: float  # per decode / encode task
    memory: int = 0  # bytes each actor reserves with Ray (--max-memory), 0: none
    node_memory: float = 0.0  # the largest working node's schedulable memory (0: unknown)
    spread: bool = False  # CPU actors over several nodes: Ray places them one node each first
    threads_each: int = 0  # torch threads per CPU actor (its CPUs and its codec share); 0: its CPUs

    @property
    def writes_in_flight(self) -> int:
        """Write tasks at once: enough to keep up with each actor's batches (an encode of a
        batch can take longer than a GPU's model call)."""
        return max(2, 4 * self.max_size)

    @property
    def reads_in_flight(self) -> int:
        """Key-shard reads at once (bulk/engines/key_blocks.py): a few, one per actor."""
        return max(2, self.max_size)

    @property
    def ray_args(self) -> dict[str, int]:
        """The memory an actor reserves with Ray: --max-memory when given (a node has it,
        plan_actors checked), else nothing (the actor sizes itself from its node's free memory);
        with it, SPREAD scheduling for CPU actors on several nodes, so no node's actors take
        the CPUs its decode tasks need."""
        return {
            **({"memory": self.memory} if self.memory else {}),
            **({"scheduling_strategy": "SPREAD"} if self.spread else {}),
        }

    @property
    def threads(self) -> int:
        return self.threads_each or max(1, int(self.num_cpus))

    @property
    def codecs_inside(self) -> bool:
        """CPU actors decode and encode in their own threads (stylekit/bulk/engines/blocks.py); GPU
        actors leave the codecs to CPU tasks, so the GPU never waits for them."""
        return self.num_gpus == 0

    def describe(self) -> str:
        size = f"{self.min_size}" if self.min_size == self.max_size else f"{self.min_size}-{self.max_size}"
        device = (
            f"{self.num_gpus:g} GPU + {self.num_cpus:g} CPU" if self.num_gpus else f"{self.num_cpus:g} CPU"
        )
        return f"{size} actor(s) of {device} each"


def plan_actors(config: BulkConfig, nodes: list[Node]) -> ActorPlan:
    """Size the pool from the alive nodes: GPUs when a node has any (unless --gpus-per-actor
    0), else CPUs, each actor fitting on one node, always leaving CPUs to the decode and encode
    tasks so nothing deadlocks. A head with no CPUs takes no work."""
    work = [n for n in nodes if n.takes_work]
    if not work:
        raise NoNodeFits(
            "no node of this Ray cluster has CPUs or GPUs (a head started with num_cpus=0 takes no "
            "work): add worker nodes, or raise --wait-for-nodes to wait for the autoscaler"
        )
    total_cpus, most_cpus, most_gpus = sum(n.cpus for n in work), largest(work, "cpus"), largest(work, "gpus")
    node_memory = largest(work, "memory")
    mem = config.memory_options.budget or 0
    if mem and node_memory and mem > node_memory:
        raise NoNodeFits(
            f"--max-memory {config.memory_options.max_memory} is more than any node offers Ray (the largest: "
            f"{size_text(node_memory)}); lower --max-memory"
        )
    if most_cpus <= 0:
        raise NoNodeFits(f"no node has a CPU for decoding ({describe_nodes(work)}); add a CPU node")
    task_cpus = 1.0 if most_cpus >= 2 else 0.5
    per_gpu = config.gpus_per_actor if config.gpus_per_actor is not None else (1.0 if most_gpus >= 1 else 0.0)
    if per_gpu > 0:
        if most_gpus < per_gpu:
            raise NoNodeFits(
                f"--gpus-per-actor {per_gpu:g} asked for, but the largest node has {most_gpus:g} GPUs "
                f"({describe_nodes(work)}); use --gpus-per-actor 0 to run on CPUs"
            )
        per_cpu = config.cpus_per_actor or 1.0
        gpu_cpus = largest([n for n in work if n.gpus >= per_gpu], "cpus")
        if per_cpu > gpu_cpus:
            raise NoNodeFits(
                f"--cpus-per-actor {per_cpu:g}: the GPU nodes have at most {gpu_cpus:g} CPUs; "
                "lower --cpus-per-actor"
            )
        most = capacity(work, per_cpu, per_gpu, mem)
        low, high = config.actor_range or (1, max(1, most))
        _check_count(low, most, f"{per_gpu:g} GPU + {per_cpu:g} CPU", work)
        _check_fits(low, per_cpu, total_cpus - task_cpus, "CPUs (one kept for decoding)")
        return ActorPlan(low, high, per_cpu, per_gpu, task_cpus, mem, node_memory)
    if config.cpus_per_actor and config.cpus_per_actor > most_cpus:
        raise NoNodeFits(
            f"--cpus-per-actor {config.cpus_per_actor:g}: the largest node has {most_cpus:g} CPUs "
            f"({describe_nodes(work)}); lower --cpus-per-actor"
        )
    spare = max(most_cpus - _codec_cpus(most_cpus), task_cpus)
    per_cpu = config.cpus_per_actor or max(min(float(MAX_CPU_THREADS), spare), task_cpus)
    fits = capacity(work, per_cpu, 0.0, mem)
    # Each node keeps its own codec share (the actors spread over the nodes, ActorPlan.spread):
    # a cluster that loses a node still has CPUs to decode on where its actors are left.
    count = max(1, min(fits, sum(math.floor((n.cpus - _codec_cpus(n.cpus)) / per_cpu + 1e-9) for n in work)))
    low, high = config.actor_range or (count, count)
    _check_count(low, fits, f"{per_cpu:g} CPU", work)
    _check_fits(low, per_cpu, total_cpus - task_cpus, "CPUs (one kept for decoding)")
    # The actors' codec threads run on the CPUs the actors leave (stylekit/bulk/engines/blocks.py):
    # each actor's torch threads are its share of its node's CPUs (--cpus-per-actor: its own).
    on_largest = max(1, math.floor((most_cpus - _codec_cpus(most_cpus)) / per_cpu + 1e-9))
    threads = 0 if config.cpus_per_actor else max(1, math.floor(most_cpus / on_largest + 1e-9))
    return ActorPlan(
        low, high, per_cpu, 0.0, task_cpus, mem, node_memory, spread=len(work) > 1, threads_each=threads
    )


def _codec_cpus(cpus: float) -> float:
    """CPUs a CPU-only node keeps outside the stylizing actors' reservations: one (half of a
    1-CPU node), which their codec threads use (`ActorPlan.threads_each`). The actors decode
    and encode in their own threads (stylekit/bulk/engines/blocks.py), as `python -m stylekit
    stylize` does, so no codec tasks need CPUs of their own, and the key-shard reads reserve
    none: on a 2-CPU node a separate codec quarter (at least one CPU) left the network one
    core of two, and the job at 0.43x the plain command (RESULTS.md, "One node")."""
    return 1.0 if cpus >= 2 else cpus / 2


def _check_count(actors: int, fits: int, each: str, nodes: list[Node]) -> None:
    if fits < 1:
        raise NoNodeFits(
            f"no node can hold an actor of {each} ({describe_nodes(nodes)}); lower --cpus-per-actor, "
            "--gpus-per-actor or --max-memory"
        )
    if actors > fits:
        raise NoNodeFits(
            f"--actors {actors}: only {fits} actor(s) of {each} fit on the nodes "
            f"({describe_nodes(nodes)}); lower --actors or the per-actor resources"
        )


def _check_fits(actors: int, each: float, available: float, what: str) -> None:
    if actors * each > available + 1e-9:
        raise NoNodeFits(
            f"{actors} actor(s) x {each:g} need more than the {max(available, 0):g} {what} of "
            "this Ray cluster; lower --actors or the per-actor resources"
        )
