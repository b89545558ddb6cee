"""Each stage of the bulk pipeline runs at most a few batches ahead of the next one.

Ray Data's own backpressure is a budget in bytes: an operator is held back once its share of
the object store fills. Decoded pixels of small photos are far below any such budget, so with
2,000 inputs the decode tasks ran through every input before the first write (77 s to the
first output on a 2-CPU machine), and on a night of millions they pile up until spilling.
Ray Data has the right rule, `DownstreamCapacityBackpressurePolicy` (hold an operator whose
queued output exceeds `downstream_capacity_backpressure_ratio` times what the next stage holds
in its running tasks), but applies it only once the operator has used half its byte budget.
`NextStageCapacity` applies it always, and also before the next stage has started (the actors
loading the model): then an operator may hold one output, not the whole input. It holds back
the start of new tasks only, never the outputs of running ones (those would keep their CPUs
and stall a small cluster).

It is installed on the bulk dataset's own DataContext through Ray Data's config key for the
policy list (`backpressure_policies.enabled`), next to Ray's default policies, so no other
dataset of the process changes. The policy builds on Ray Data internals (written against Ray
2.60); where a Ray lacks them, the pipeline keeps Ray's own backpressure and says so.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ray.data import DataContext
    from ray.data._internal.execution.interfaces.physical_operator import PhysicalOperator

log = logging.getLogger(__name__)

RATIO = 2.0  # queued output / the next stage's in-flight input, beyond which a stage waits
HOOKS = ("_get_output_pressure", "_get_downstream_capacity_size_bytes")  # what the policy overrides and calls

try:
    from ray.data._internal.execution.backpressure_policy import (
        ENABLED_BACKPRESSURE_POLICIES,
        ENABLED_BACKPRESSURE_POLICIES_CONFIG_KEY,
        DownstreamCapacityBackpressurePolicy,
    )
except ImportError:  # an older Ray: see bound_backlogs
    DownstreamCapacityBackpressurePolicy = None


if DownstreamCapacityBackpressurePolicy is not None:

    class NextStageCapacity(DownstreamCapacityBackpressurePolicy):  # type: ignore[misc, valid-type]
        """Ray's downstream-capacity rule, whatever the object store's fill."""

        OBJECT_STORE_BUDGET_UTIL_THRESHOLD = -1.0  # always: the byte budget is no guide here

        @property
        def name(self) -> str:
            return "NextStageCapacity"

        def _get_output_pressure(self, op: PhysicalOperator) -> float:
            if self._get_downstream_capacity_size_bytes(op) == 0:
                # The next stage runs nothing yet (actors still loading): one output is enough.
                held = self._resource_manager.get_mem_op_outputs(op, include_ineligible_downstream=True)
                return self._backpressure_capacity_ratio + 1 if held > 0 else 0.0
            return super()._get_output_pressure(op)

        def max_task_output_bytes_to_read(self, op: PhysicalOperator) -> int | None:
            # Hold back new tasks only, never a running task's outputs: a task that cannot
            # hand over its output keeps its CPU, and with few CPUs the next stage never runs.
            return None


def bound_backlogs(context: DataContext, ratio: float = RATIO) -> bool:
    """Install `NextStageCapacity` on `context` (a dataset's own, see `Dataset.context`);
    False, with a warning, where this Ray lacks what it builds on."""
    policy = DownstreamCapacityBackpressurePolicy
    if policy is None or not all(hasattr(policy, hook) for hook in HOOKS):
        log.warning(
            "this Ray's Data executor lacks the hooks stylekit bounds its stage backlogs with; "
            "decoding may run ahead of stylizing (Ray 2.60 has them)"
        )
        return False
    context.downstream_capacity_backpressure_ratio = ratio
    policies = [p for p in ENABLED_BACKPRESSURE_POLICIES if p is not policy]
    context.set_config(ENABLED_BACKPRESSURE_POLICIES_CONFIG_KEY, [*policies, NextStageCapacity])
    return True
