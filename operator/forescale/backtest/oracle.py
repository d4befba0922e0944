"""The oracle: the cheapest policy that never violates, the physical limit of the protocol.

It knows λ* (and so r_s = ``min_replicas(λ*_s)``) in advance. A pod that must be ready at
step s has to be asked for at s − L at the latest and exists from then on, so at every step
t at least ``max(r_t … r_{t+L})`` pods must exist — for any policy that never violates.
The oracle asks for exactly that many:

* a pod is asked for L steps before it is first needed, and pays for those starting steps;
* a pod needed again within L steps of its last use is kept: a restart would have to be
  asked for before the pod was even stopped (and a dip of exactly L steps costs the same
  either way, so it is kept too);
* because the world removes the newest pods first, the pods that survive from step s − L to
  step s are the oldest ``min(n_{s−L} … n_s) ≥ r_s`` of them, all ready by s.

So it is cheapest step by step, not just in total, and a unit test checks that it never
violates on scored steps.
"""

from __future__ import annotations

import numpy as np

from forescale.backtest.world import IntArray, Observation, World


def oracle_schedule(required: IntArray, lead_steps: int, *, min_pods: int = 1,
                    max_pods: int = 100_000) -> IntArray:
    """n_t = max(r_t … r_{t+L}), the window cut off at the end, clamped to the bounds."""
    r = np.asarray(required, dtype=np.int64)
    out = r.copy()
    for k in range(1, lead_steps + 1):
        out[:-k] = np.maximum(out[:-k], r[k:])
    clamped: IntArray = np.clip(out, min_pods, max_pods)
    return clamped


class OraclePolicy:
    name = "oracle"

    def __init__(self, world: World) -> None:
        self._schedule = oracle_schedule(world.required, world.startup_steps,
                                         min_pods=world.params.min_pods,
                                         max_pods=world.params.max_pods)

    def decide(self, observation: Observation) -> int:
        return int(self._schedule[observation.step])
