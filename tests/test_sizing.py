"""Sizing from the nodes that exist: every actor fits on one node, a demand no node can meet is
one line naming its flag, and a cluster whose nodes are not up yet is waited for, with a bound.
Pure functions on fake node lists; the real multi-node cases are in tests/test_cluster.py."""

from __future__ import annotations

import logging
import types

import pytest

from stylekit import ray_env
from stylekit.bulk.config import BulkConfig
from stylekit.bulk.engines.ray_photos import decode_memory
from stylekit.bulk.engines.sizing import plan_actors
from stylekit.cli import config_from_flags
from stylekit.nodes import GIB, Node, NoNodeFits, capacity, node_types_from_config, nodes_from_ray

HEAD = Node(0.0, memory=8 * GIB, name="head")  # a head started with num_cpus=0


def config(**flags: object) -> BulkConfig:
    return config_from_flags(BulkConfig, model="m", input="i", output="o", **flags)


def test_two_cpu_nodes_get_actors_that_fit_one_node_each() -> None:
    nodes = [HEAD, Node(2, memory=4 * GIB), Node(2, memory=4 * GIB), Node(2, memory=4 * GIB)]
    plan = plan_actors(config(), nodes)
    assert plan.num_cpus <= 2 and plan.task_cpus <= 2  # the sum (6) would have given 4 each
    assert plan.min_size * plan.num_cpus <= 6 - plan.task_cpus
    assert capacity(nodes, plan.num_cpus) >= plan.min_size
    assert plan.describe() == "3 actor(s) of 1 CPU each"  # one a node: each keeps a CPU to decode
    assert plan.ray_args == {"scheduling_strategy": "SPREAD"}


def test_one_cpu_nodes_get_half_cpu_actors_and_tasks() -> None:
    plan = plan_actors(config(), [HEAD, Node(1), Node(1), Node(1)])
    assert (plan.num_cpus, plan.task_cpus) == (0.5, 0.5)
    assert plan.min_size >= 1 and capacity([Node(1)] * 3, 0.5) >= plan.min_size


@pytest.mark.parametrize(
    ("flags", "nodes", "flag"),
    [
        ({"cpus_per_actor": 4}, [HEAD, Node(2), Node(2)], "--cpus-per-actor"),
        ({"gpus_per_actor": 1}, [HEAD, Node(2), Node(2)], "--gpus-per-actor"),
        ({"max_memory": "64G"}, [HEAD, Node(2, memory=4 * GIB)], "--max-memory"),
        ({"gpus_per_actor": 1, "cpus_per_actor": 8}, [Node(4, 1)], "--cpus-per-actor"),
        ({"actors": "3", "cpus_per_actor": 2}, [HEAD, Node(2), Node(2)], "--actors"),
    ],
)
def test_a_demand_no_node_meets_is_one_line_naming_its_flag(
    flags: dict[str, object], nodes: list[Node], flag: str
) -> None:
    with pytest.raises(NoNodeFits) as info:
        plan_actors(config(**flags), nodes)
    message = str(info.value)
    assert flag in message and "\n" not in message


def test_a_gpu_node_among_cpu_nodes_gets_gpu_actors_sized_to_it() -> None:
    plan = plan_actors(config(), [HEAD, Node(2), Node(8, 2, memory=16 * GIB)])
    assert (plan.num_gpus, plan.num_cpus, plan.min_size, plan.max_size) == (1.0, 1.0, 1, 2)


def test_the_head_takes_no_work_and_a_cluster_of_only_a_head_is_no_node_fits() -> None:
    assert not HEAD.takes_work
    with pytest.raises(NoNodeFits, match="num_cpus=0"):
        plan_actors(config(), [HEAD])
    # The head's memory never sizes a worker's tasks.
    plan = plan_actors(config(max_memory="2G"), [HEAD, Node(2, memory=3 * GIB)])
    assert plan.memory == 2 * GIB and plan.ray_args == {"memory": 2 * GIB}  # one node: no SPREAD
    assert decode_memory(config(), plan.node_memory) <= 1.5 * GIB


def test_nodes_from_ray_keeps_the_alive_ones() -> None:
    entries = [
        {"Alive": True, "NodeManagerAddress": "10.0.0.1", "Resources": {"CPU": 2.0, "memory": 1e9}},
        {"Alive": False, "Resources": {"CPU": 64.0}},
        {"Alive": True, "Resources": {"CPU": 4.0, "GPU": 1.0}},
    ]
    assert nodes_from_ray(entries) == [Node(2.0, 0.0, 1e9, "10.0.0.1"), Node(4.0, 1.0, 0.0, "")]


def _autoscaler(*groups: tuple[dict[str, float], int]) -> object:
    return types.SimpleNamespace(
        node_group_configs=[
            types.SimpleNamespace(resources=res, max_count=count, min_count=0, name=f"g{i}")
            for i, (res, count) in enumerate(groups)
        ]
    )


def test_waits_for_the_autoscaler_then_plans_on_the_new_node(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    config_proto = _autoscaler(({"CPU": 4.0}, 3))
    monkeypatch.setattr(ray_env, "autoscaler_node_types", lambda: node_types_from_config(config_proto))
    views = iter([[HEAD], [HEAD], [HEAD, Node(4), Node(4)]])
    caplog.set_level(logging.INFO, logger="stylekit.ray_env")
    plan = ray_env.plan_on_nodes(
        lambda nodes: plan_actors(config(cpus_per_actor=4), nodes), 60, poll=0.01, nodes=lambda: next(views)
    )
    assert plan.num_cpus == 4
    assert [r.getMessage() for r in caplog.records if "waiting for the cluster" in r.getMessage()]


def test_gives_up_after_the_bound_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ray_env, "autoscaler_node_types", lambda: None)  # unknown: a bare head
    with pytest.raises(NoNodeFits, match=r"--wait-for-nodes 0\.2 s") as info:
        ray_env.plan_on_nodes(
            lambda nodes: plan_actors(config(), nodes), 0.2, poll=0.05, nodes=lambda: [HEAD]
        )
    assert "\n" not in str(info.value)


def test_no_wait_when_no_node_type_could_ever_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    config_proto = _autoscaler(({"CPU": 2.0}, 10))
    monkeypatch.setattr(ray_env, "autoscaler_node_types", lambda: node_types_from_config(config_proto))
    with pytest.raises(NoNodeFits, match="--cpus-per-actor"):  # at once, not after 600 s
        ray_env.plan_on_nodes(
            lambda nodes: plan_actors(config(cpus_per_actor=4), nodes), 600, nodes=lambda: [HEAD, Node(2)]
        )
    # Fixed nodes (no autoscaler config) that take work: no wait either.
    monkeypatch.setattr(ray_env, "autoscaler_node_types", lambda: None)
    with pytest.raises(NoNodeFits, match="--cpus-per-actor"):
        ray_env.plan_on_nodes(
            lambda nodes: plan_actors(config(cpus_per_actor=4), nodes), 600, nodes=lambda: [HEAD, Node(2)]
        )


# --- training workers --------------------------------------------------------------------------


def train_config(**flags: object) -> object:
    from stylekit.train.config import TrainConfig

    return TrainConfig(vgg_weights="random", **flags)  # type: ignore[arg-type]


def test_training_workers_fit_one_node_each() -> None:
    from stylekit.train.sizing import plan_workers

    plan = plan_workers(train_config(num_workers=1), [HEAD, Node(2), Node(2), Node(2)])
    assert plan.cpus == 2 and plan.num_workers == 1  # the sum's share (5) fits no node
    two = plan_workers(train_config(num_workers=2), [Node(2)])
    assert (two.cpus, two.use_gpu) == (0.5, False)  # one machine: a CPU kept for data
    elastic = plan_workers(train_config(num_workers="1-3"), [HEAD, Node(2), Node(2)])
    assert elastic.num_workers == (1, 3) and elastic.cpus == 1
    gpu = plan_workers(train_config(num_workers="2"), [HEAD, Node(4, 1), Node(4, 1)])
    assert gpu.use_gpu and gpu.resources == {"CPU": 1.0, "GPU": 1.0}


@pytest.mark.parametrize(
    ("flags", "nodes", "flag"),
    [
        ({"cpus_per_worker": 4}, [HEAD, Node(2), Node(2)], "--cpus-per-worker"),
        ({"use_gpu": True}, [HEAD, Node(2)], "--gpu"),
        ({"num_workers": "3", "use_gpu": True}, [Node(4, 1), Node(4, 1)], "--num-workers"),
        ({}, [HEAD], "num_cpus=0"),
    ],
)
def test_training_demands_no_node_meets_are_one_line(
    flags: dict[str, object], nodes: list[Node], flag: str
) -> None:
    from stylekit.train.sizing import plan_workers

    with pytest.raises(NoNodeFits) as info:
        plan_workers(train_config(**flags), nodes)
    assert flag in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("value", ["0", "3-2", "a-b", "2-"])
def test_bad_worker_ranges_are_config_errors(value: str) -> None:
    from stylekit.errors import ConfigError

    with pytest.raises(ConfigError, match="--num-workers"):
        train_config(num_workers=value)


def test_a_half_written_checkpoint_is_never_the_one_resumed_from(tmp_path: object) -> None:
    """A node that dies while copying a checkpoint leaves files short or state.json missing:
    the newest complete checkpoint is chosen."""
    import json
    from pathlib import Path

    from stylekit.files.storage import StorageOptions
    from stylekit.train.checkpoint import find_latest_checkpoint

    run = Path(str(tmp_path)) / "run"

    def checkpoint(name: str, step: int, sizes: dict[str, int], state: bool = True) -> None:
        folder = run / name
        folder.mkdir(parents=True)
        for file, size in sizes.items():
            (folder / file).write_bytes(b"x" * size)
        if state:
            files = {"model.safetensors": 10, "optimizer.safetensors": 20}
            (folder / "state.json").write_text(json.dumps({"step": step, "files": files}))

    checkpoint("checkpoint_000001", 2, {"model.safetensors": 10, "optimizer.safetensors": 20})
    checkpoint("checkpoint_000002", 4, {"model.safetensors": 10, "optimizer.safetensors": 7})  # cut short
    checkpoint("checkpoint_000003", 6, {"model.safetensors": 10}, state=False)  # state.json not yet
    assert find_latest_checkpoint(str(run), StorageOptions()) == str(run / "checkpoint_000001")
