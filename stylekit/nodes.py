"""The nodes of a Ray cluster as plain data, and whether a demand fits on them (no Ray calls:
stylekit/ray_env.py reads the nodes; bulk/engines/sizing.py and train/ray_job.py size their work from them).

A Ray actor or task is placed on one node: its CPUs, GPUs and memory must all fit there. Work
sized from the cluster's sum (4 CPUs per actor on three 2-CPU nodes) waits forever, so every
size is taken from the nodes that exist, and a demand no node can meet is a one-line error.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from stylekit.errors import ConfigError

GIB = 1024**3


@dataclass(frozen=True)
class Node:
    """What one node offers Ray's scheduler: CPUs, GPUs, schedulable memory (bytes)."""

    cpus: float
    gpus: float = 0.0
    memory: float = 0.0
    name: str = ""

    @property
    def takes_work(self) -> bool:
        """A node with no CPU and no GPU (a head started with num_cpus=0) runs nothing of ours."""
        return self.cpus > 0 or self.gpus > 0


class NoNodeFits(ConfigError):
    """A demand that no node of the cluster can meet; the message names the flag to change."""


def nodes_from_ray(entries: Iterable[dict[str, Any]]) -> list[Node]:
    """The alive nodes of `ray.nodes()` (each a dict with "Alive" and "Resources")."""
    out = []
    for entry in entries:
        if not entry.get("Alive", False):
            continue
        res = entry.get("Resources") or {}
        out.append(
            Node(
                cpus=float(res.get("CPU", 0)),
                gpus=float(res.get("GPU", 0)),
                memory=float(res.get("memory", 0)),
                name=str(entry.get("NodeManagerAddress") or entry.get("NodeID", ""))[:40],
            )
        )
    return out


def node_types_from_config(config: Any, most_each: int = 16) -> list[list[Node]] | None:
    """What an autoscaler may add, from its cluster config (Ray's `ClusterConfig`:
    node_group_configs with resources and max_count): per node type that can still scale
    up, the nodes of its largest count (at most `most_each`). None when there is no
    autoscaler config (a cluster of fixed nodes, or an autoscaler that publishes none)."""
    if config is None or not getattr(config, "node_group_configs", None):
        return None
    groups = []
    for group in config.node_group_configs:
        res = dict(group.resources)
        count = most_each if group.max_count == -1 else min(int(group.max_count), most_each)
        if count <= 0 or not res:
            continue
        node = Node(
            cpus=float(res.get("CPU", 0)),
            gpus=float(res.get("GPU", 0)),
            memory=float(res.get("memory", 0)),
            name=str(group.name),
        )
        groups.append([node] * count)
    return groups


def describe_nodes(nodes: Iterable[Node]) -> str:
    """ "2 nodes of 2 CPU, 1 node of 4 CPU + 1 GPU" (working nodes only), or "no working node"."""
    counts: dict[str, int] = {}
    for n in nodes:
        if not n.takes_work:
            continue
        what = f"{n.cpus:g} CPU" + (f" + {n.gpus:g} GPU" if n.gpus else "")
        counts[what] = counts.get(what, 0) + 1
    if not counts:
        return "no node with CPUs or GPUs"
    return ", ".join(f"{c} node{'s' if c > 1 else ''} of {what}" for what, c in counts.items())


def capacity(nodes: Iterable[Node], cpus: float, gpus: float = 0.0, memory: float = 0.0) -> int:
    """How many bundles of (cpus, gpus, memory) the nodes hold, each bundle on one node."""
    total = 0
    for n in nodes:
        counts = []
        for want, have in ((cpus, n.cpus), (gpus, n.gpus), (memory, n.memory)):
            if want > 0:
                counts.append(math.floor(have / want + 1e-9))
        total += min(counts) if counts else 0
    return total


def largest(nodes: Iterable[Node], key: str) -> float:
    """The most of `key` ("cpus", "gpus", "memory") any one node has."""
    return max((float(getattr(n, key)) for n in nodes if n.takes_work), default=0.0)


def size_text(nbytes: float) -> str:
    return f"{nbytes / GIB:.1f} GiB"
