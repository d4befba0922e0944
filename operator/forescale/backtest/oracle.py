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

from forescale.backtest.world import (
    IntArray,
    Observation,
    PolicyRun,
    World,
    required_replicas,
    simulate,
    smoothed,
)


def oracle_schedule(required: IntArray, lead_steps: int, *, min_pods: int = 1,
                    max_pods: int = 100_000) -> IntArray:
    """n_t = max(r_t … r_{t+L}), the window cut off at the end, clamped to the bounds."""
    r = np.asarray(required, dtype=np.int64)
    out = r.copy()
    for k in range(1, lead_steps + 1):
        out[:-k] = np.maximum(out[:-k], r[k:])
    clamped: IntArray = np.clip(out, min_pods, max_pods)
    return clamped


class _Scheduled:
    """Replays the :func:`oracle_schedule` of a precomputed requirement."""

    name: str

    def __init__(self, world: World, required: IntArray) -> None:
        self._schedule = oracle_schedule(required, world.startup_steps,
                                         min_pods=world.params.min_pods,
                                         max_pods=world.params.max_pods)

    def decide(self, observation: Observation) -> int:
        return int(self._schedule[observation.step])


class OraclePolicy(_Scheduled):
    name = "oracle"

    def __init__(self, world: World) -> None:
        super().__init__(world, world.required)


#: Steps of the centred mean the level reference knows in advance (15 minutes at 60 s).
LEVEL_WINDOW = 15


class LevelReference(_Scheduled):
    """The practical limit of forecasting: knows the *level* of the traffic in advance, not
    its minute-to-minute noise.

    It asks for ``min_replicas(k · m_t)`` pods, scheduled like the oracle, where ``m`` is
    the centred :data:`LEVEL_WINDOW`-step mean of the observed rate — a perfect forecast of
    the next quarter hour's mean, which no causal forecaster can beat — and ``k`` is the
    smallest multiplier, chosen in hindsight for the whole trace, whose violation rate is
    at most a given rate. Its cost is what a flawless level forecaster with a perfectly
    tuned constant margin would pay: the share of "x oracle" that is the noise inside a
    quarter hour rather than the forecast.
    """

    name = "level-reference"

    def __init__(self, world: World, multiplier: float) -> None:
        level = smoothed(world.observed, LEVEL_WINDOW) * multiplier
        super().__init__(world, required_replicas(level, world.params))


def level_reference(world: World, violation_rate: float, *, iterations: int = 14,
                    ) -> tuple[float, PolicyRun]:
    """The :class:`LevelReference` multiplier whose violation rate is at most
    ``violation_rate``, found by bisection on [1, 4], and its replay."""
    low, high = 1.0, 4.0
    best = simulate(world, LevelReference(world, high))
    for _ in range(iterations):
        middle = (low + high) / 2.0
        run = simulate(world, LevelReference(world, middle))
        if run.violation_rate <= violation_rate:
            high, best = middle, run
        else:
            low = middle
    return high, best
