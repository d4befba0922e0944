"""A chaos buffer: extra replicas so that declared failures do not break the SLO.

A ScalingPolicy declares failure scenarios (a node of 6, a zone of 3, each with the
fraction of capacity it takes and a probability) and one rule for turning them into spare
replicas:

- ``none``: no buffer.
- ``proportional``: cheap and predictable; add the riskiest scenario's share of the base
  count plus 20 % headroom, extra = ceil(base × fraction × 1.2). Risk = probability ×
  fraction lost. Not a guarantee: the scenario takes its share of the buffer too, so the
  survivors keep the base count only while (1 + 1.2f)(1 − f) ≥ 1, i.e. f ≤ 1/6 (a zone
  of three leaves ~93 % of the base); ``survive`` is the rule that keeps the SLO.
- ``survive``: exact; the smallest total N ≥ base such that after losing ceil(N × fraction)
  replicas in any scenario at least as likely as ``probability_floor`` the survivors still
  meet the SLO at the current arrival rate (the same criterion as
  :func:`~forescale.core.sizing.replicas.replicas_for_slo`) and, in cost mode, number at
  least what the cost sizing asks for (the survivors are still worth what the base was).

A scenario with probability 0 is treated as declared impossible and never sizes anything.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from forescale.core.errors import InvalidInputError
from forescale.core.sizing.erlang import check_arrival_rate, check_service_rate
from forescale.core.sizing.replicas import (
    DEFAULT_MAX_REPLICAS,
    check_max_replicas,
    replicas_for_slo,
    size,
)
from forescale.core.spec import SLO, Chaos, ChaosRule, ChaosScenario, Costs

#: ``proportional``'s headroom on top of the capacity a scenario takes.
PROPORTIONAL_HEADROOM = 1.2


@dataclass(frozen=True)
class ChaosResult:
    """How many replicas to add to ``base_replicas``, which scenario decided it, and why.

    ``reason`` is CamelCase: ``ChaosDisabled`` (rule none), ``NoChaosScenarios`` (nothing
    applicable declared), ``ProportionalBuffer``, ``SurviveScenario`` (``scenario`` needed
    the extra replicas), ``BaseSurvivesScenarios`` (the base count already survives every
    scenario) or ``MaxReplicasBound`` (surviving would need more than ``max_replicas``).
    """

    base_replicas: int
    extra_replicas: int
    rule: ChaosRule
    #: The scenario that decided the buffer; None when none did.
    scenario: str | None
    reason: str

    @property
    def total_replicas(self) -> int:
        return self.base_replicas + self.extra_replicas

    def to_dict(self) -> dict[str, object]:
        return {
            "base_replicas": self.base_replicas,
            "extra_replicas": self.extra_replicas,
            "total_replicas": self.total_replicas,
            "rule": self.rule,
            "scenario": self.scenario,
            "reason": self.reason,
        }


def _ceil(x: float) -> int:
    """ceil that ignores float noise: 10 × 0.3 is 3.0000000000000004, and losing "30 % of
    10 replicas" must cost 3 of them, not 4. Rounding to 1e-9 first is far below one
    replica and far above the noise."""
    return math.ceil(round(x, 9))


def _lost(total: int, scenario: ChaosScenario) -> int:
    """Replicas a scenario takes out of ``total``: a partial replica is a whole one lost."""
    return _ceil(total * scenario.capacity_fraction_lost)


#: The answer lies within a few steps of the float estimate; never walk further.
_MAX_STEPS = 16


def _survivors_needed_total(needed: int, scenario: ChaosScenario, limit: int) -> int:
    """Smallest N with N − ceil(N·f) ≥ ``needed``, or ``limit + 1`` when it is above
    ``limit``.

    N − ceil(N·f) never decreases as N grows (ceil((N+1)f) ≤ ceil(Nf) + 1 for f < 1), and
    it lies in (N(1−f) − 1, N(1−f)], so the answer is within a few steps of needed/(1−f).
    That estimate is computed in floats and checked against the limit first: with f a hair
    below 1 it is astronomically large, and a walk there would not end.
    """
    keep = 1.0 - scenario.capacity_fraction_lost
    estimate = needed / keep if keep > 0 else math.inf
    if not math.isfinite(estimate) or estimate > limit + _MAX_STEPS:
        return limit + 1
    n = max(needed, math.floor(estimate) - 2)
    for _ in range(_MAX_STEPS):
        if n - _lost(n, scenario) >= needed:
            return n
        n += 1
    return limit + 1


def chaos_buffer(base_replicas: int, arrival_rate: float, service_rate: float, slo: SLO,
                 chaos: Chaos, *, max_replicas: int = DEFAULT_MAX_REPLICAS,
                 costs: Costs | None = None) -> ChaosResult:
    """Extra replicas to run on top of ``base_replicas`` under ``chaos``'s rule.

    ``arrival_rate`` (req/s) and ``service_rate`` (req/s per replica) matter only to
    ``survive``, which re-sizes the survivors against ``slo`` and, with ``costs`` (a
    policy in cost mode), against the cost sizing too: the survivors number at least the
    larger. The total is kept at or below ``max_replicas`` (the buffer is never negative).
    """
    if (isinstance(base_replicas, bool) or not isinstance(base_replicas, numbers.Integral)
            or base_replicas < 0):
        raise InvalidInputError(
            f"base_replicas must be a non-negative integer, got {base_replicas!r}")
    base = int(base_replicas)
    lam = check_arrival_rate(arrival_rate)
    mu = check_service_rate(service_rate)
    max_replicas = check_max_replicas(max_replicas)
    if chaos.rule == "none":
        return ChaosResult(base, 0, chaos.rule, None, "ChaosDisabled")
    if chaos.rule == "proportional":
        return _proportional(base, chaos, max_replicas=max_replicas)
    return _survive(base, lam, mu, slo, chaos, max_replicas=max_replicas, costs=costs)


def _proportional(base: int, chaos: Chaos, *, max_replicas: int) -> ChaosResult:
    possible = [s for s in chaos.scenarios if s.probability > 0]
    if not possible:
        return ChaosResult(base, 0, chaos.rule, None, "NoChaosScenarios")
    # max() keeps the first of equals: declaration order breaks ties, deterministically.
    riskiest = max(possible, key=lambda s: s.probability * s.capacity_fraction_lost)
    extra = _ceil(base * riskiest.capacity_fraction_lost * PROPORTIONAL_HEADROOM)
    allowed = max(0, max_replicas - base)
    if extra > allowed:
        return ChaosResult(base, allowed, chaos.rule, riskiest.name, "MaxReplicasBound")
    return ChaosResult(base, extra, chaos.rule, riskiest.name, "ProportionalBuffer")


def _survive(base: int, arrival_rate: float, service_rate: float, slo: SLO, chaos: Chaos, *,
             max_replicas: int, costs: Costs | None) -> ChaosResult:
    applicable = [s for s in chaos.scenarios
                  if s.probability > 0 and s.probability >= chaos.probability_floor]
    if not applicable:
        return ChaosResult(base, 0, chaos.rule, None, "NoChaosScenarios")
    # What the survivors must number: the SLO-sized count at this rate and, in cost mode,
    # the cost-sized one (cost mode picks more than the SLO when violations are dear: SLO-
    # sized survivors then cost many times what the base saved). If that is above the
    # cap, no total can survive; the cap check below reports it.
    needed = replicas_for_slo(arrival_rate, service_rate, slo,
                              max_replicas=max_replicas).replicas
    if costs is not None:
        needed = max(needed, size(arrival_rate, service_rate, slo, costs,
                                  max_replicas=max_replicas).replicas)
    totals = [(_survivors_needed_total(needed, s, max_replicas), s) for s in applicable]
    # First of equals wins again; a scenario only "decides" if it needed more than base.
    total, decider = max(totals, key=lambda pair: pair[0])
    # The cap first: above it ``total`` is only a marker (max_replicas + 1), not the count
    # that survives, and a base above the cap must not be compared with it.
    if total > max_replicas:
        return ChaosResult(base, max(0, max_replicas - base), chaos.rule, decider.name,
                           "MaxReplicasBound")
    if total <= base:
        return ChaosResult(base, 0, chaos.rule, None, "BaseSurvivesScenarios")
    return ChaosResult(base, total - base, chaos.rule, decider.name, "SurviveScenario")
