"""The reference HPA: request-based utilisation with one step of metric lag (BENCHMARK.md).

At the decision before step t it sees λ_{t−1} and the c pods that were ready during t−1:

* util = λ_{t−1} / (c·μ); inside the tolerance |util/target − 1| ≤ 0.1 the raw
  recommendation is the current count (ready plus starting);
* otherwise raw = ceil(c · util/target), computed in the controller's order
  (``ceil(usageRatio · readyPods)``, which matters at exact integer boundaries);
* the desired count is the highest raw recommendation of the last 300 s, this one included
  (scale-down stabilisation); scale-up is not limited beyond that.

With scale-ups unlimited, "highest of the window" is the controller's whole rule: the
count it applied at each earlier decision was already at least every recommendation still
in the window, so the window's maximum never lifts it above what the controller would do.
"""

from __future__ import annotations

import math
from collections import deque

from forescale.backtest.world import Observation

#: The protocol's sweep: 0.30 to 0.90 in steps of 0.05 (written out, not float-stepped).
HPA_TARGETS: tuple[float, ...] = tuple(round(0.30 + 0.05 * i, 2) for i in range(13))
TOLERANCE = 0.1
STABILIZATION_SECONDS = 300.0


class HPAPolicy:
    name = "hpa"

    def __init__(self, target: float, *, service_rate: float, step_seconds: float,
                 stabilization_seconds: float = STABILIZATION_SECONDS,
                 tolerance: float = TOLERANCE) -> None:
        if not 0 < target <= 1:
            raise ValueError(f"HPA target utilisation must be in (0, 1], got {target!r}")
        self.target = target
        self.service_rate = service_rate
        self.tolerance = tolerance
        # Recommendations made at most ``stabilization_seconds`` ago, inclusive: at 60 s
        # steps and 300 s that is this one and the five before it.
        window = math.floor(stabilization_seconds / step_seconds + 1e-9) + 1
        self._recent: deque[int] = deque(maxlen=window)

    def raw_recommendation(self, observation: Observation) -> int:
        current = observation.current
        if observation.step == 0:  # no finished step yet: nothing to measure
            return current
        arrival_rate = float(observation.observed[-1])
        ready = observation.ready_last_step
        utilisation = arrival_rate / (ready * self.service_rate)
        usage_ratio = utilisation / self.target
        if abs(usage_ratio - 1.0) <= self.tolerance:
            return current
        return math.ceil(usage_ratio * ready)

    def decide(self, observation: Observation) -> int:
        self._recent.append(self.raw_recommendation(observation))
        return max(self._recent)
