"""Sizing takes bounded time for any input: computed in floats, capped, never an unbounded
search. Each case here once hung or raised (issue 12's adversarial review)."""

from __future__ import annotations

import time

import pytest

from forescale.core.errors import InvalidInputError
from forescale.core.sizing import chaos_buffer, replicas_for_cost, replicas_for_slo, size
from forescale.core.sizing.replicas import MAX_REPLICAS_LIMIT
from forescale.core.spec import SLO, Chaos, ChaosScenario, Costs


def _fast(call: object) -> object:
    began = time.perf_counter()
    result = call()  # type: ignore[operator]
    assert time.perf_counter() - began < 1.0
    return result


@pytest.mark.parametrize("service_rate", [1e-30, 1e-300, 1e-320, 5e-324])
@pytest.mark.parametrize("arrival_rate", [1.0, 1e6, 1e300])
def test_tiny_service_rate_is_capped_not_searched(arrival_rate: float,
                                                  service_rate: float) -> None:
    result = _fast(lambda: replicas_for_slo(arrival_rate, service_rate, SLO(),
                                            max_replicas=100))
    assert result.replicas == 100  # type: ignore[attr-defined]
    assert result.capped and result.reason == "MaxReplicasBound"  # type: ignore[attr-defined]
    assert result.to_dict()["utilisation"] is None or result.utilisation >= 1  # type: ignore[attr-defined]


@pytest.mark.parametrize("service_rate", [1e-30, 1e-320])
def test_cost_mode_is_capped_too(service_rate: float) -> None:
    result = _fast(lambda: replicas_for_cost(1.0, service_rate, SLO(), Costs(1.0, 1.0),
                                             max_replicas=50))
    assert result.replicas == 50 and result.capped  # type: ignore[attr-defined]


def test_cost_mode_with_an_infinite_price_stops() -> None:
    # K = λ·3600·V overflows to inf: inf × an underflowed P is NaN, which once made the
    # stopping rule never hold.
    result = _fast(lambda: replicas_for_cost(1e3, 10.0, SLO(), Costs(1.0, 1e308),
                                             max_replicas=10_000))
    assert 100 < result.replicas <= 10_000  # type: ignore[attr-defined]


def test_cost_mode_with_free_replicas_is_bounded() -> None:
    result = _fast(lambda: replicas_for_cost(1e5, 1.0, SLO(wait_seconds=0.0), Costs(0.0, 1.0),
                                             max_replicas=MAX_REPLICAS_LIMIT // 10))
    assert result.replicas > 100_000  # type: ignore[attr-defined]


def test_the_answer_is_still_exact_below_the_cap() -> None:
    # The closed form is only the start: λ/μ a whole number with U = 1 needs one more.
    slo = SLO(wait_seconds=1e9, percentile=0.5, max_utilisation=1.0)
    assert replicas_for_slo(10.0, 1.0, slo).replicas == 11
    assert replicas_for_slo(9.5, 1.0, slo).replicas == 10


def test_max_replicas_is_bounded() -> None:
    with pytest.raises(InvalidInputError, match="max_replicas must be at most"):
        size(1.0, 1.0, SLO(), max_replicas=10**18)


def test_survive_with_a_fraction_a_hair_below_one_is_capped() -> None:
    chaos = Chaos(rule="survive", scenarios=(ChaosScenario("all", 0.5, 1 - 1e-16),))
    result = _fast(lambda: chaos_buffer(3, 10.0, 1.0, SLO(), chaos, max_replicas=1000))
    assert result.reason == "MaxReplicasBound"  # type: ignore[attr-defined]
    assert result.total_replicas == 1000  # type: ignore[attr-defined]
