"""Replica sizing: SLO mode is the smallest count meeting the SLO, cost mode the cheapest.

The oracles here are brute force over the public Erlang functions (which test_erlang.py
checks against independent references): a linear scan from c = 1 for the SLO, and the cost
of every count in a wide range for cost mode.
"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forescale.core.errors import InvalidInputError
from forescale.core.sizing import (
    SizingResult,
    min_replicas_protocol,
    prob_wait_exceeds,
    replicas_for_cost,
    replicas_for_slo,
    size,
)
from forescale.core.spec import SLO, Costs


def meets_slo(c: int, lam: float, mu: float, slo: SLO) -> bool:
    """The criterion as the brief states it, written out independently of the search."""
    return (lam / (c * mu) < 1 and lam / (c * mu) <= slo.max_utilisation
            and prob_wait_exceeds(c, lam, mu, slo.wait_seconds) <= 1 - slo.percentile)


def protocol_violates(c: int, lam: float, mu: float, t: float = 0.05,
                      tail: float = 0.05) -> bool:
    """BENCHMARK.md §4 verbatim."""
    return lam >= c * mu or prob_wait_exceeds(c, lam, mu, t) > tail


def hourly_cost(c: int, lam: float, mu: float, slo: SLO, costs: Costs) -> float:
    return (c * costs.per_replica_hour
            + lam * 3600 * prob_wait_exceeds(c, lam, mu, slo.wait_seconds)
            * costs.per_violation)


def cost_feasible(c: int, lam: float, mu: float, slo: SLO) -> bool:
    return lam < c * mu and lam / (c * mu) <= slo.max_utilisation


slos = st.builds(SLO, wait_seconds=st.floats(0.0, 2.0),
                 percentile=st.floats(0.5, 0.9999),
                 max_utilisation=st.floats(0.3, 1.0))


# --- SLO mode ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("lam", "expected"), [(10.0, 3), (80.0, 12), (110.0, 15)])
def test_known_counts(lam: float, expected: int) -> None:
    # By hand with the public functions: at λ = 80, μ = 10, c = 12 gives P(W_q > 50 ms)
    # ≈ 0.019 ≤ 0.05 while c = 11 gives ≈ 0.056.
    result = replicas_for_slo(lam, 10.0, SLO())
    assert result.replicas == expected
    assert result.reason == "SloSized"
    assert meets_slo(expected, lam, 10.0, SLO())
    assert not meets_slo(expected - 1, lam, 10.0, SLO())


@settings(max_examples=120, deadline=None)
@given(lam=st.floats(0.0, 5_000.0), mu=st.floats(0.5, 50.0), slo=slos)
def test_slo_mode_equals_linear_scan(lam: float, mu: float, slo: SLO) -> None:
    result = replicas_for_slo(lam, mu, slo)
    scan = next(c for c in range(1, 1_000_000) if lam == 0 or meets_slo(c, lam, mu, slo))
    assert result.replicas == scan
    assert not result.capped


@settings(max_examples=60, deadline=None)
@given(lam=st.floats(1.0, 2e6), mu=st.floats(1.0, 100.0), slo=slos)
def test_slo_mode_is_smallest_at_any_scale(lam: float, mu: float, slo: SLO) -> None:
    result = replicas_for_slo(lam, mu, slo, max_replicas=10_000_000)
    c = result.replicas
    assert meets_slo(c, lam, mu, slo)
    assert c == 1 or not meets_slo(c - 1, lam, mu, slo)
    assert result.utilisation == pytest.approx(lam / (c * mu))
    assert result.prob_wait_exceeds <= 1 - slo.percentile


def test_no_traffic_needs_one_replica() -> None:
    result = replicas_for_slo(0.0, 10.0, SLO())
    assert (result.replicas, result.reason, result.capped) == (1, "NoTraffic", False)
    assert result.prob_wait == 0.0
    assert result.mean_wait_seconds == 0.0
    assert min_replicas_protocol(0.0, 10.0) == 1


def test_max_utilisation_binds_before_the_tail() -> None:
    # λ = 80, μ = 10: the tail needs 12, but at most 50 % utilisation needs 80/5 = 16.
    result = replicas_for_slo(80.0, 10.0, SLO(max_utilisation=0.5))
    assert result.replicas == 16
    assert result.utilisation == 0.5


def test_stability_is_strict() -> None:
    # λ = cμ exactly is unstable even with no wait tolerance to speak of.
    result = replicas_for_slo(30.0, 10.0, SLO(wait_seconds=100.0, percentile=0.5,
                                              max_utilisation=1.0))
    assert result.replicas == 4


def test_max_replicas_bound() -> None:
    slo = SLO(max_utilisation=1.0)
    capped = replicas_for_slo(1e6, 10.0, slo)  # a = 100,000: no c ≤ 100,000 is stable
    assert (capped.replicas, capped.reason, capped.capped) == (100_000, "MaxReplicasBound",
                                                                True)
    assert capped.mean_wait_seconds == math.inf
    assert capped.to_dict()["mean_wait_seconds"] is None
    free = replicas_for_slo(1e6, 10.0, slo, max_replicas=200_000)
    assert free.reason == "SloSized"
    assert 100_000 < free.replicas < 101_000
    assert meets_slo(free.replicas, 1e6, 10.0, slo)
    assert not meets_slo(free.replicas - 1, 1e6, 10.0, slo)
    # Bound exactly at the answer: not capped; one below: capped.
    assert not replicas_for_slo(1e6, 10.0, slo, max_replicas=free.replicas).capped
    assert replicas_for_slo(1e6, 10.0, slo, max_replicas=free.replicas - 1).capped


# --- the benchmark's min_replicas -------------------------------------------------------------


@settings(max_examples=120, deadline=None)
@given(lam=st.floats(0.0, 3_000.0))
def test_protocol_min_replicas_is_smallest_non_violating(lam: float) -> None:
    c = min_replicas_protocol(lam, 10.0)
    assert c >= 1
    assert lam == 0 or not protocol_violates(c, lam, 10.0)
    assert c == 1 or protocol_violates(c - 1, lam, 10.0)


def test_protocol_takes_its_parameters() -> None:
    assert min_replicas_protocol(80.0, 10.0) == 12
    # A looser tail and a longer wait need fewer pods; λ/μ = 8 still needs 9 for stability.
    assert min_replicas_protocol(80.0, 10.0, wait_seconds=10.0, tail=0.5) == 9
    assert min_replicas_protocol(1e9, 10.0, max_replicas=100_001) == 100_001


# --- cost mode --------------------------------------------------------------------------------


costs_st = st.builds(Costs, per_replica_hour=st.floats(0.0, 10.0),
                     per_violation=st.floats(0.0, 1.0))


@settings(max_examples=80, deadline=None)
@given(lam=st.floats(0.0, 2_000.0), mu=st.floats(1.0, 50.0), slo=slos, costs=costs_st)
def test_cost_mode_is_feasible_and_locally_optimal(lam: float, mu: float, slo: SLO,
                                                   costs: Costs) -> None:
    result = replicas_for_cost(lam, mu, slo, costs)
    c = result.replicas
    assert result.mode == "cost"
    assert result.cost is not None
    assert lam == 0 or cost_feasible(c, lam, mu, slo)
    here = hourly_cost(c, lam, mu, slo, costs)
    tol = 1e-12 * max(1.0, here)
    assert result.cost.total_cost_per_hour == pytest.approx(here, rel=1e-12, abs=1e-300)
    for neighbour in (c - 1, c + 1):
        if neighbour >= 1 and cost_feasible(neighbour, lam, mu, slo):
            assert here <= hourly_cost(neighbour, lam, mu, slo, costs) + tol
    slo_sized = replicas_for_slo(lam, mu, slo).replicas
    assert here <= hourly_cost(slo_sized, lam, mu, slo, costs) + tol


@settings(max_examples=40, deadline=None)
@given(lam=st.floats(1.0, 500.0), slo=slos, costs=costs_st)
def test_cost_mode_is_the_global_minimum(lam: float, slo: SLO, costs: Costs) -> None:
    mu = 10.0
    result = replicas_for_cost(lam, mu, slo, costs)
    # a ≤ 50 Erlang: P(W_q > t) underflows to 0 long before c = 800 (a + 100√a).
    candidates = [c for c in range(1, 800) if cost_feasible(c, lam, mu, slo)]
    cheapest = min(hourly_cost(c, lam, mu, slo, costs) for c in candidates)
    got = hourly_cost(result.replicas, lam, mu, slo, costs)
    assert got <= cheapest + 1e-12 * max(1.0, cheapest)


def test_cost_mode_by_hand() -> None:
    # λ = 80, μ = 10, t = 50 ms, max utilisation 1. Cheap replicas and dear violations buy
    # more replicas than the SLO; dear replicas and cheap violations buy fewer.
    slo = SLO(max_utilisation=1.0)
    generous = replicas_for_cost(80.0, 10.0, slo, Costs(per_replica_hour=0.01,
                                                        per_violation=1.0))
    stingy = replicas_for_cost(80.0, 10.0, slo, Costs(per_replica_hour=100.0,
                                                      per_violation=1e-6))
    assert generous.replicas > 12 > stingy.replicas
    assert stingy.replicas == 9  # the stable minimum λ/μ + 1
    assert generous.reason == stingy.reason == "CostMinimised"
    assert stingy.cost is not None
    assert stingy.cost.replica_cost_per_hour == 900.0
    assert stingy.cost.violating_requests_per_hour == pytest.approx(
        80 * 3600 * prob_wait_exceeds(9, 80.0, 10.0, 0.05))
    assert stingy.cost.total_cost_per_hour == pytest.approx(
        900.0 + stingy.cost.violation_cost_per_hour)


def test_cost_mode_free_violations_means_fewest_replicas() -> None:
    result = replicas_for_cost(80.0, 10.0, SLO(), Costs(per_replica_hour=1.0,
                                                        per_violation=0.0))
    assert result.replicas == 9  # 80/(9·10) = 0.89 ≤ 0.95; 8 would be unstable


def test_cost_mode_free_replicas_stop_where_violations_vanish() -> None:
    result = replicas_for_cost(80.0, 10.0, SLO(), Costs(per_replica_hour=0.0,
                                                        per_violation=1.0))
    assert result.prob_wait_exceeds == 0.0
    assert prob_wait_exceeds(result.replicas - 1, 80.0, 10.0, 0.05) > 0.0


def test_cost_mode_no_traffic() -> None:
    result = replicas_for_cost(0.0, 10.0, SLO(), Costs(1.0, 1.0))
    assert (result.replicas, result.reason) == (1, "NoTraffic")


def test_cost_mode_max_replicas_bound() -> None:
    slo = SLO(max_utilisation=1.0)
    costs = Costs(per_replica_hour=0.01, per_violation=1.0)
    free = replicas_for_cost(80.0, 10.0, slo, costs)
    capped = replicas_for_cost(80.0, 10.0, slo, costs, max_replicas=free.replicas - 1)
    assert capped.capped
    assert capped.reason == "MaxReplicasBound"
    assert capped.replicas == free.replicas - 1
    exact = replicas_for_cost(80.0, 10.0, slo, costs, max_replicas=free.replicas)
    assert not exact.capped
    assert exact.replicas == free.replicas
    unstable = replicas_for_cost(80.0, 10.0, slo, costs, max_replicas=8)
    assert (unstable.replicas, unstable.capped, unstable.prob_wait_exceeds) == (8, True, 1.0)


# --- dispatch and output ----------------------------------------------------------------------


def test_size_dispatches_on_costs() -> None:
    assert size(80.0, 10.0, SLO()) == replicas_for_slo(80.0, 10.0, SLO())
    costs = Costs(per_replica_hour=1.0, per_violation=0.01)
    assert size(80.0, 10.0, SLO(), costs) == replicas_for_cost(80.0, 10.0, SLO(), costs)
    assert size(80.0, 10.0, SLO()).mode == "slo"
    assert size(80.0, 10.0, SLO(), costs).mode == "cost"


def test_result_is_frozen_and_serialisable() -> None:
    result = size(80.0, 10.0, SLO(), Costs(per_replica_hour=1.0, per_violation=0.01))
    assert isinstance(result, SizingResult)
    with pytest.raises(AttributeError):
        result.replicas = 3  # type: ignore[misc]
    document = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert document["replicas"] == result.replicas
    assert document["mode"] == "cost"
    assert set(document["cost"]) == {"replica_cost_per_hour", "violating_requests_per_hour",
                                     "violation_cost_per_hour", "total_cost_per_hour"}
    assert size(80.0, 10.0, SLO()).to_dict()["cost"] is None


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(("call", "needle"), [
    (lambda: replicas_for_slo(-1.0, 10.0, SLO()), "arrival_rate must be non-negative"),
    (lambda: replicas_for_slo(math.nan, 10.0, SLO()), "arrival_rate must be a number"),
    (lambda: replicas_for_slo(1.0, 0.0, SLO()), "service_rate must be positive"),
    (lambda: replicas_for_slo(1.0, math.inf, SLO()), "service_rate must be finite"),
    (lambda: replicas_for_slo(1.0, 1.0, SLO(), max_replicas=0),
     "max_replicas must be at least 1"),
    (lambda: replicas_for_cost(1.0, -1.0, SLO(), Costs(1, 1)), "service_rate must be"),
    (lambda: min_replicas_protocol(1.0, 1.0, tail=0.0), "tail must be a probability"),
    (lambda: min_replicas_protocol(1.0, 1.0, wait_seconds=-1.0), "wait_seconds must be"),
    (lambda: SLO(percentile=1.0), "slo.percentile must be in (0, 1)"),
])
def test_bad_input_raises_one_line(call: object, needle: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        call()  # type: ignore[operator]
    assert needle in str(info.value)
    assert "\n" not in str(info.value)
