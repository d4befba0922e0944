"""How many replicas an arrival rate needs: SLO mode, cost mode and the benchmark's rule.

Every replica behaves as one server of an M/M/c queue with service rate μ (req/s per
replica) fed by λ req/s. Both modes rest on one fact: P(W_q > t) falls monotonically as c
grows (Erlang C falls with c and so does exp(−(cμ − λ)t)), so "c meets the SLO" is false up
to some c and true from there on, and the smallest such c can be found by bracketing and
bisection in O(log c) Erlang evaluations instead of a walk from 1 (which at λ = 10⁶ req/s
would take 100,000 steps).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from forescale.core.errors import InvalidInputError
from forescale.core.sizing.erlang import (
    _erlang_c,
    _mean_wait_seconds,
    _prob_wait_exceeds,
    check_arrival_rate,
    check_service_rate,
    check_wait_seconds,
    prob_wait_exceeds_array,
)
from forescale.core.spec import SLO, Costs

SizingMode = Literal["slo", "cost"]

#: BENCHMARK.md §5: pods are bounded to 1..100,000.
DEFAULT_MAX_REPLICAS = 100_000

#: The largest cap any caller may ask for: it bounds every search (cost mode scans at most
#: twice the cap), so sizing takes bounded time for any input.
MAX_REPLICAS_LIMIT = 10_000_000

#: Cost mode evaluates candidate counts in vectorised blocks of at most this many.
_COST_BLOCK = 65_536

SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class CostBreakdown:
    """What one hour at the chosen replica count costs, in the user's currency."""

    replica_cost_per_hour: float
    #: Requests per hour that wait longer than the SLO's ``wait_seconds``.
    violating_requests_per_hour: float
    violation_cost_per_hour: float
    total_cost_per_hour: float

    def to_dict(self) -> dict[str, float | None]:
        """JSON-ready: a figure that overflowed (an astronomical price) becomes None."""
        return {
            "replica_cost_per_hour": _json_float(self.replica_cost_per_hour),
            "violating_requests_per_hour": _json_float(self.violating_requests_per_hour),
            "violation_cost_per_hour": _json_float(self.violation_cost_per_hour),
            "total_cost_per_hour": _json_float(self.total_cost_per_hour),
        }


@dataclass(frozen=True)
class SizingResult:
    """A replica count with the queueing figures that justify it and the reason for it.

    ``reason`` is CamelCase, as Kubernetes condition reasons are: ``SloSized``,
    ``CostMinimised``, ``NoTraffic`` (λ = 0, one replica) or ``MaxReplicasBound`` (the
    answer would be above ``max_replicas``, which is returned instead; ``capped`` says the
    same as a flag).
    """

    replicas: int
    mode: SizingMode
    reason: str
    capped: bool
    #: λ / (cμ); ≥ 1 only when capped below stability.
    utilisation: float
    #: Erlang C: the share of requests that wait at all.
    prob_wait: float
    #: P(W_q > wait_seconds): the share of requests that miss the SLO's wait.
    prob_wait_exceeds: float
    wait_seconds: float
    #: E[W_q]; +inf when the queue is unstable.
    mean_wait_seconds: float
    #: Only in cost mode.
    cost: CostBreakdown | None = None

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: non-finite figures (an unstable queue's mean wait) become None."""
        return {
            "replicas": self.replicas,
            "mode": self.mode,
            "reason": self.reason,
            "capped": self.capped,
            "utilisation": _json_float(self.utilisation),
            "prob_wait": self.prob_wait,
            "prob_wait_exceeds": self.prob_wait_exceeds,
            "wait_seconds": self.wait_seconds,
            "mean_wait_seconds": _json_float(self.mean_wait_seconds),
            "cost": None if self.cost is None else self.cost.to_dict(),
        }


def _json_float(x: float) -> float | None:
    return x if math.isfinite(x) else None


# --- validation -----------------------------------------------------------------------------


def check_max_replicas(max_replicas: int) -> int:
    if isinstance(max_replicas, bool) or not isinstance(max_replicas, int | np.integer):
        raise InvalidInputError(f"max_replicas must be an integer, got {max_replicas!r}")
    if max_replicas < 1:
        raise InvalidInputError(f"max_replicas must be at least 1, got {max_replicas!r}")
    if max_replicas > MAX_REPLICAS_LIMIT:
        raise InvalidInputError(f"max_replicas must be at most {MAX_REPLICAS_LIMIT:,}, "
                                f"got {max_replicas!r}")
    return int(max_replicas)


def _check_tail(tail: float) -> float:
    if isinstance(tail, bool) or not isinstance(tail, int | float) or not 0.0 < tail < 1.0:
        raise InvalidInputError(f"tail must be a probability in (0, 1), got {tail!r}")
    return float(tail)


def _check_max_utilisation(max_utilisation: float) -> float:
    if (isinstance(max_utilisation, bool) or not isinstance(max_utilisation, int | float)
            or not 0.0 < max_utilisation <= 1.0):
        raise InvalidInputError(
            f"max_utilisation must be in (0, 1], got {max_utilisation!r}")
    return float(max_utilisation)


# --- the search -----------------------------------------------------------------------------


def _capacity_ok(servers: int, arrival_rate: float, service_rate: float,
                 max_utilisation: float) -> bool:
    """λ < cμ (a stable queue) and λ/(cμ) ≤ the utilisation ceiling."""
    capacity = servers * service_rate
    return arrival_rate < capacity and arrival_rate / capacity <= max_utilisation


#: How far the integer answer may be from the float closed form it starts from. Within the
#: cap (≤ a few million) floats hold integers exactly and the closed form is off by at most
#: one after rounding; the margin is for safety, and the loops can never run longer.
_NUDGE_STEPS = 4


def _capacity_floor(arrival_rate: float, service_rate: float, max_utilisation: float,
                    limit: int) -> int:
    """The smallest c ≥ 1 passing :func:`_capacity_ok`, or ``limit + 1`` when it is above
    ``limit``.

    Computed in floats first: ceil(λ/(μU)). When that ratio is above the limit (or not
    finite: μ = 1e-320 makes λ/μ infinite) the answer is "above the cap" without any
    search: a ±1 walk from a ratio beyond ~1e16 would never end, because floats can no
    longer tell c from c − 1. Below the limit the closed form can be one off after
    rounding (and must move up by one when λ/μ is a whole number and U = 1, since
    stability is strict), so a few bounded steps let the predicate itself decide.
    """
    ratio = arrival_rate / service_rate / max_utilisation
    if not math.isfinite(ratio) or ratio > limit + _NUDGE_STEPS:
        return limit + 1
    c = max(1, math.ceil(ratio))
    for _ in range(_NUDGE_STEPS):
        if c > 1 and _capacity_ok(c - 1, arrival_rate, service_rate, max_utilisation):
            c -= 1
    for _ in range(_NUDGE_STEPS):
        if _capacity_ok(c, arrival_rate, service_rate, max_utilisation):
            break
        c += 1
    return c if _capacity_ok(c, arrival_rate, service_rate, max_utilisation) else limit + 1


def _first_true(start: int, predicate: Callable[[int], bool], *, step: int,
                limit: int) -> int | None:
    """Smallest c in [start, limit] with ``predicate(c)``, for a predicate monotone in c.

    Brackets the answer by doubling steps from ``start`` and bisects the bracket: O(log)
    evaluations wherever the answer is. None when even ``limit`` fails. Always bounded by
    ``limit``: a predicate that never holds (a NaN cost) must not search for ever.
    """
    if predicate(start):
        return start
    fail = start  # invariant: predicate(fail) is False, predicate(ok) is True
    while True:
        ok = fail + step
        if ok >= limit:
            if limit <= fail or not predicate(limit):
                return None
            ok = limit
            break
        if predicate(ok):
            break
        fail, step = ok, 2 * step
    while ok - fail > 1:
        mid = (fail + ok) // 2
        if predicate(mid):
            ok = mid
        else:
            fail = mid
    return ok


def _sqrt_load(arrival_rate: float, service_rate: float) -> int:
    """√a, the scale of the square-root staffing rule c ≈ a + β√a: the first bracket step.
    Only called below the cap, where a = λ/μ is finite."""
    return max(1, math.isqrt(math.ceil(arrival_rate / service_rate)))


def _smallest_meeting_slo(arrival_rate: float, service_rate: float, *, wait_seconds: float,
                          tail: float, max_utilisation: float,
                          max_replicas: int) -> tuple[int, bool]:
    """Smallest c in [1, max_replicas] meeting the SLO, and whether the cap bound instead.

    Meeting the SLO: :func:`_capacity_ok` and P(W_q > wait_seconds) ≤ tail. Both halves
    are monotone in c; the search starts at the capacity floor, above which only the tail
    needs checking.
    """
    if arrival_rate == 0.0:
        return 1, False
    floor = _capacity_floor(arrival_rate, service_rate, max_utilisation, max_replicas)
    if floor > max_replicas:
        return max_replicas, True

    def meets(c: int) -> bool:
        return _prob_wait_exceeds(c, arrival_rate, service_rate, wait_seconds) <= tail

    c = _first_true(floor, meets, step=_sqrt_load(arrival_rate, service_rate),
                    limit=max_replicas)
    return (max_replicas, True) if c is None else (c, False)


def _result(replicas: int, arrival_rate: float, service_rate: float, wait_seconds: float, *,
            mode: SizingMode, reason: str, capped: bool,
            costs: Costs | None = None) -> SizingResult:
    p_exceeds = _prob_wait_exceeds(replicas, arrival_rate, service_rate, wait_seconds)
    cost = None
    if costs is not None:
        replica_cost = replicas * costs.per_replica_hour
        violating = arrival_rate * SECONDS_PER_HOUR * p_exceeds
        violation_cost = violating * costs.per_violation
        cost = CostBreakdown(replica_cost_per_hour=replica_cost,
                             violating_requests_per_hour=violating,
                             violation_cost_per_hour=violation_cost,
                             total_cost_per_hour=replica_cost + violation_cost)
    return SizingResult(
        replicas=replicas, mode=mode, reason=reason, capped=capped,
        utilisation=arrival_rate / (replicas * service_rate),
        prob_wait=_erlang_c(replicas, arrival_rate / service_rate),
        prob_wait_exceeds=p_exceeds, wait_seconds=wait_seconds,
        mean_wait_seconds=_mean_wait_seconds(replicas, arrival_rate, service_rate),
        cost=cost)


# --- public API -----------------------------------------------------------------------------


def replicas_for_slo(arrival_rate: float, service_rate: float, slo: SLO, *,
                     max_replicas: int = DEFAULT_MAX_REPLICAS) -> SizingResult:
    """The fewest replicas that meet ``slo`` at ``arrival_rate`` req/s.

    Smallest c ≥ 1 with λ/(cμ) < 1, λ/(cμ) ≤ ``slo.max_utilisation`` and
    P(W_q > ``slo.wait_seconds``) ≤ 1 − ``slo.percentile``. ``service_rate`` is one
    replica's throughput in req/s. λ = 0 needs one replica (reason ``NoTraffic``); when no
    c ≤ ``max_replicas`` suffices, ``max_replicas`` comes back with ``MaxReplicasBound``.
    """
    lam = check_arrival_rate(arrival_rate)
    mu = check_service_rate(service_rate)
    cap = check_max_replicas(max_replicas)
    c, capped = _smallest_meeting_slo(lam, mu, wait_seconds=slo.wait_seconds,
                                      tail=1.0 - slo.percentile,
                                      max_utilisation=slo.max_utilisation, max_replicas=cap)
    reason = "MaxReplicasBound" if capped else ("NoTraffic" if lam == 0 else "SloSized")
    return _result(c, lam, mu, slo.wait_seconds, mode="slo", reason=reason, capped=capped)


def min_replicas_protocol(arrival_rate: float, service_rate: float,
                          wait_seconds: float = 0.05, tail: float = 0.05, *,
                          max_replicas: int = DEFAULT_MAX_REPLICAS) -> int:
    """``min_replicas(λ)`` exactly as BENCHMARK.md §4 scores a step.

    The smallest c ≥ 1 such that neither λ ≥ cμ nor P(W_q > ``wait_seconds``) >
    ``tail``; 1 for λ = 0. No utilisation ceiling beyond stability, and ``tail`` is compared
    as given (not as 1 − percentile, whose rounding differs from 0.05 in the last bit).
    Returns ``max_replicas`` (the protocol's pod bound) when even that violates.
    """
    lam = check_arrival_rate(arrival_rate)
    mu = check_service_rate(service_rate)
    c, _ = _smallest_meeting_slo(lam, mu, wait_seconds=check_wait_seconds(wait_seconds),
                                 tail=_check_tail(tail), max_utilisation=1.0,
                                 max_replicas=check_max_replicas(max_replicas))
    return c


def replicas_for_cost(arrival_rate: float, service_rate: float, slo: SLO, costs: Costs, *,
                      max_replicas: int = DEFAULT_MAX_REPLICAS) -> SizingResult:
    """The replica count with the lowest hourly cost of replicas plus SLO violations.

    cost(c) = c·R + λ·3600·P(W_q > t)·V with R = ``costs.per_replica_hour``,
    V = ``costs.per_violation`` and t = ``slo.wait_seconds``, over the feasible c
    (λ < cμ and λ/(cμ) ≤ ``slo.max_utilisation``; the percentile plays no part, the
    price of a violation replaces it).

    Why the search is exact without assuming cost(c) is unimodal: write K = 3600·λ·V and
    let s be the first feasible c with K·P(s) ≤ R (it exists: P → 0). For any c > s,
    cost(c) − cost(s) = R(c − s) − K(P(s) − P(c)) ≥ R − K·P(s) ≥ 0, because P is
    non-negative and falls with c. So the minimum lies in [floor, s]: s is found by
    bisection (P is monotone), and that range is scanned in vectorised blocks. Ties go to
    the fewer replicas. If the minimum over the whole range lies above ``max_replicas``,
    the best count up to the cap comes back with ``MaxReplicasBound``.
    """
    lam = check_arrival_rate(arrival_rate)
    mu = check_service_rate(service_rate)
    cap = check_max_replicas(max_replicas)
    t = slo.wait_seconds
    if lam == 0.0:
        return _result(1, lam, mu, t, mode="cost", reason="NoTraffic", capped=False,
                       costs=costs)
    floor = _capacity_floor(lam, mu, slo.max_utilisation, cap)
    if floor > cap:
        return _result(cap, lam, mu, t, mode="cost", reason="MaxReplicasBound", capped=True,
                       costs=costs)
    worst_case_cost = lam * SECONDS_PER_HOUR * costs.per_violation  # K: every request late
    replica_cost = costs.per_replica_hour

    def stops(c: int) -> bool:
        p = _prob_wait_exceeds(c, lam, mu, t)
        # p == 0 first: an infinite K times an underflowed P is NaN, not 0.
        return p == 0.0 or worst_case_cost * p <= replica_cost

    # Beyond the cap only matters to tell "the cap binds" apart; looking as far again past
    # it bounds the scan (at most 2 × cap candidates, in vectorised blocks).
    stop = _first_true(floor, stops, step=_sqrt_load(lam, mu), limit=2 * cap)
    if stop is None:
        stop = 2 * cap
    best_c, best_cost = _cheapest(floor, min(stop, cap), lam, mu, t, costs)
    capped = False
    if stop > cap:
        _, beyond_cost = _cheapest(cap + 1, stop, lam, mu, t, costs)
        capped = beyond_cost < best_cost
    return _result(best_c, lam, mu, t, mode="cost",
                   reason="MaxReplicasBound" if capped else "CostMinimised", capped=capped,
                   costs=costs)


def size(arrival_rate: float, service_rate: float, slo: SLO, costs: Costs | None = None, *,
         max_replicas: int = DEFAULT_MAX_REPLICAS) -> SizingResult:
    """Size for the SLO, or for the lowest cost when ``costs`` is given (a policy's mode)."""
    if costs is None:
        return replicas_for_slo(arrival_rate, service_rate, slo, max_replicas=max_replicas)
    return replicas_for_cost(arrival_rate, service_rate, slo, costs, max_replicas=max_replicas)


# --- cost-mode helpers ----------------------------------------------------------------------


def _cheapest(first: int, last: int, arrival_rate: float, service_rate: float,
              wait_seconds: float, costs: Costs) -> tuple[int, float]:
    """The c in [first, last] with the lowest hourly cost (the fewest on a tie)."""
    best_c, best_cost = first, math.inf
    for block_start in range(first, last + 1, _COST_BLOCK):
        c = np.arange(block_start, min(last, block_start + _COST_BLOCK - 1) + 1,
                      dtype=np.int64)
        p = prob_wait_exceeds_array(c, arrival_rate, service_rate, wait_seconds)
        violations = arrival_rate * SECONDS_PER_HOUR * costs.per_violation
        # Where P underflowed to 0 no request is late, whatever an infinite price says.
        late = np.where(p > 0.0, violations * p, 0.0) if math.isfinite(violations) else (
            np.where(p > 0.0, math.inf, 0.0))
        cost = c * costs.per_replica_hour + late
        i = int(np.argmin(cost))
        if cost[i] < best_cost:
            best_c, best_cost = int(c[i]), float(cost[i])
    return best_c, best_cost
