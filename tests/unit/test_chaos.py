"""The chaos buffer on hand-computed cases, plus the survive rule's guarantee as a property."""

from __future__ import annotations

import json
import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forescale.core.errors import InvalidInputError
from forescale.core.sizing import ChaosResult, chaos_buffer, prob_wait_exceeds, replicas_for_slo
from forescale.core.sizing.chaos import _lost
from forescale.core.spec import SLO, Chaos, ChaosScenario
from forescale.policy import SPEC_SCHEMA

NODE = ChaosScenario("node", probability=0.1, capacity_fraction_lost=1 / 6)  # risk 0.0167
ZONE = ChaosScenario("zone", probability=0.01, capacity_fraction_lost=1 / 3)  # risk 0.0033


def survives(total: int, scenario: ChaosScenario, lam: float, mu: float, slo: SLO) -> bool:
    """Written out from the rule: lose ceil(N·f) replicas, the rest must meet the SLO."""
    # ceil to 1e-9: 25 × 0.28 = 7.000000000000001 is 7 replicas lost, not 8.
    left = total - math.ceil(round(total * scenario.capacity_fraction_lost, 9))
    if left < 1:
        return False
    if lam == 0:
        return True
    return (lam < left * mu and lam / (left * mu) <= slo.max_utilisation
            and prob_wait_exceeds(left, lam, mu, slo.wait_seconds) <= 1 - slo.percentile)


def test_rule_none_adds_nothing() -> None:
    result = chaos_buffer(12, 80.0, 10.0, SLO(), Chaos(rule="none", scenarios=(NODE,)))
    assert (result.extra_replicas, result.scenario, result.reason) == (0, None,
                                                                      "ChaosDisabled")


@pytest.mark.parametrize("rule", ["proportional", "survive"])
def test_no_scenarios(rule: str) -> None:
    result = chaos_buffer(12, 80.0, 10.0, SLO(), Chaos(rule=rule))  # type: ignore[arg-type]
    assert (result.extra_replicas, result.reason) == (0, "NoChaosScenarios")


# --- proportional -----------------------------------------------------------------------------


def test_proportional_takes_the_riskiest_scenario() -> None:
    # node: 0.1 × 1/6 = 0.0167 beats zone: 0.01 × 1/3 = 0.0033, although a zone takes more.
    # extra = ceil(12 × 1/6 × 1.2) = ceil(2.4) = 3.
    result = chaos_buffer(12, 80.0, 10.0, SLO(), Chaos(rule="proportional",
                                                       scenarios=(ZONE, NODE)))
    assert (result.extra_replicas, result.scenario, result.reason) == (3, "node",
                                                                      "ProportionalBuffer")
    assert result.total_replicas == 15


def test_proportional_when_the_zone_is_likelier() -> None:
    # zone at 0.1 × 1/3 = 0.033 now leads: ceil(12 × 1/3 × 1.2) = ceil(4.8) = 5.
    zone = ChaosScenario("zone", probability=0.1, capacity_fraction_lost=1 / 3)
    result = chaos_buffer(12, 80.0, 10.0, SLO(), Chaos(rule="proportional",
                                                       scenarios=(NODE, zone)))
    assert (result.extra_replicas, result.scenario) == (5, "zone")


def test_proportional_ignores_float_noise() -> None:
    # 375 × 0.14 × 1.2 is 63.00000000000001 in floating point; the buffer is 63, not 64.
    scenario = ChaosScenario("rack", probability=0.5, capacity_fraction_lost=0.14)
    result = chaos_buffer(375, 0.0, 10.0, SLO(), Chaos(rule="proportional",
                                                       scenarios=(scenario,)))
    assert result.extra_replicas == 63


def test_proportional_ignores_impossible_scenarios_and_the_cap() -> None:
    never = ChaosScenario("meteor", probability=0.0, capacity_fraction_lost=0.9)
    assert chaos_buffer(12, 80.0, 10.0, SLO(),
                        Chaos(rule="proportional", scenarios=(never,))).reason == \
        "NoChaosScenarios"
    capped = chaos_buffer(12, 80.0, 10.0, SLO(),
                          Chaos(rule="proportional", scenarios=(NODE,)), max_replicas=13)
    assert (capped.extra_replicas, capped.reason) == (1, "MaxReplicasBound")


# --- survive ----------------------------------------------------------------------------------


def test_survive_by_hand() -> None:
    # λ = 80, μ = 10, 50 ms at 95 %: 12 replicas needed (test_sizing checks it).
    # zone (1/3): N − ceil(N/3) ≥ 12 first at N = 18 (17 − 6 = 11). node (1/6): first at
    # N = 15 (14 − 3 = 11, 15 − 3 = 12). The zone decides: 18 − 12 = 6 extra.
    assert replicas_for_slo(80.0, 10.0, SLO()).replicas == 12
    both = Chaos(rule="survive", scenarios=(NODE, ZONE))
    result = chaos_buffer(12, 80.0, 10.0, SLO(), both)
    assert (result.extra_replicas, result.scenario, result.reason) == (6, "zone",
                                                                      "SurviveScenario")
    # With a floor above the zone's probability only the node counts: 15 − 12 = 3.
    floored = Chaos(rule="survive", scenarios=(NODE, ZONE), probability_floor=0.05)
    result = chaos_buffer(12, 80.0, 10.0, SLO(), floored)
    assert (result.extra_replicas, result.scenario) == (3, "node")
    # Every scenario below the floor: nothing to survive.
    above_all = Chaos(rule="survive", scenarios=(NODE, ZONE), probability_floor=0.5)
    assert chaos_buffer(12, 80.0, 10.0, SLO(), above_all).reason == "NoChaosScenarios"


def test_survive_in_cost_mode_keeps_the_cost_sized_count() -> None:
    """In cost mode the survivors were sized for the SLO alone: with violations dear, cost
    mode runs 136 where the SLO needs 115, and the buffer left 115 after losing the zone,
    P(wait > 50 ms) 4.4 % where the policy had priced that at 1.7 M an hour."""
    from forescale.core.sizing import size
    from forescale.core.spec import Costs

    slo, zone = SLO(max_utilisation=1.0), ChaosScenario("zone-a", 0.1, 0.34)
    dear, cheap = Costs(1.0, 10.0), Costs(1.0, 0.00001)
    survive = Chaos(rule="survive", scenarios=(zone,))
    for costs in (dear, cheap):
        base = size(1100.0, 10.0, slo, costs).replicas
        result = chaos_buffer(base, 1100.0, 10.0, slo, survive, costs=costs)
        total = base + result.extra_replicas
        needed = max(base, replicas_for_slo(1100.0, 10.0, slo).replicas)
        assert total - _lost(total, zone) >= needed
        assert total - 1 - _lost(total - 1, zone) < needed  # and no more than that
    assert size(1100.0, 10.0, slo, dear).replicas == 136


def test_survive_when_base_is_already_enough() -> None:
    result = chaos_buffer(20, 80.0, 10.0, SLO(), Chaos(rule="survive", scenarios=(ZONE,)))
    assert (result.extra_replicas, result.scenario, result.reason) == (
        0, None, "BaseSurvivesScenarios")


def test_survive_ignores_float_noise() -> None:
    # λ = 140 needs 18. Losing 28 % of 25 is exactly 7 (25 × 0.28 = 7.000000000000001 in
    # floating point), leaving 18: N = 25. A naive ceil would lose 8 and ask for 26.
    assert replicas_for_slo(140.0, 10.0, SLO()).replicas == 18
    rack = ChaosScenario("rack", probability=0.2, capacity_fraction_lost=0.28)
    result = chaos_buffer(18, 140.0, 10.0, SLO(), Chaos(rule="survive", scenarios=(rack,)))
    assert result.total_replicas == 25


def test_survive_with_no_traffic_keeps_one_survivor() -> None:
    # One replica must be left: N − ceil(N/3) ≥ 1 first at N = 2.
    result = chaos_buffer(1, 0.0, 10.0, SLO(), Chaos(rule="survive", scenarios=(ZONE,)))
    assert result.total_replicas == 2


def test_survive_cap() -> None:
    result = chaos_buffer(12, 80.0, 10.0, SLO(), Chaos(rule="survive", scenarios=(ZONE,)),
                          max_replicas=16)
    assert (result.extra_replicas, result.scenario, result.reason) == (4, "zone",
                                                                      "MaxReplicasBound")


def test_the_documented_zone_fraction_covers_the_largest_zone() -> None:
    # kubectl explain's example for "one zone of three" must survive losing a zone of
    # replicas spread evenly (topology spread, maxSkew 1: the largest zone holds ceil(N/3)).
    # 0.333 did not: ceil(1000 × 0.333) = 333 lost where a zone holds 334, so from 1,000
    # replicas on the survive rule counted one zone short and sized one survivor too few.
    chaos = SPEC_SCHEMA["properties"]["chaos"]["properties"]
    text = chaos["scenarios"]["items"]["properties"]["capacityFractionLost"]["description"]
    match = re.search(r"e\.g\. ([0-9.]+) for one zone of\s+three", text)
    assert match, text
    zone = ChaosScenario("zone", probability=0.01, capacity_fraction_lost=float(match[1]))
    short = [n for n in range(1, 100_001) if _lost(n, zone) < math.ceil(n / 3)]
    assert not short, f"{zone.capacity_fraction_lost} loses too few from N = {short[0]}"


def test_survive_above_the_cap_is_not_called_survivable() -> None:
    # 12 needed; losing 90 % takes 120 replicas to survive, far above a cap of 16, so the
    # search stops early with "above the cap" (17). A base of 40, itself above the cap, was
    # compared with that marker and reported as surviving, although 40 − 36 = 4 < 12.
    rack = ChaosScenario("most", probability=0.5, capacity_fraction_lost=0.9)
    result = chaos_buffer(40, 80.0, 10.0, SLO(), Chaos(rule="survive", scenarios=(rack,)),
                          max_replicas=16)
    assert not survives(40, rack, 80.0, 10.0, SLO())
    assert (result.extra_replicas, result.scenario, result.reason) == (0, "most",
                                                                      "MaxReplicasBound")


scenarios_st = st.lists(
    st.builds(ChaosScenario, name=st.sampled_from(["a", "b", "c", "d"]),
              probability=st.floats(0.0, 1.0),
              capacity_fraction_lost=st.floats(0.01, 0.9)),
    min_size=1, max_size=4, unique_by=lambda s: s.name)


@settings(max_examples=100, deadline=None)
@given(base=st.integers(0, 400), lam=st.floats(0.0, 2_000.0),
       scenarios=scenarios_st, floor=st.floats(0.0, 1.0))
def test_survive_guarantee(base: int, lam: float, scenarios: list[ChaosScenario],
                           floor: float) -> None:
    mu, slo = 10.0, SLO()
    chaos = Chaos(rule="survive", scenarios=tuple(scenarios), probability_floor=floor)
    result = chaos_buffer(base, lam, mu, slo, chaos)
    applicable = [s for s in scenarios if s.probability > 0 and s.probability >= floor]
    total = result.total_replicas
    assert result.extra_replicas >= 0
    for s in applicable:
        assert survives(total, s, lam, mu, slo), s
    if result.extra_replicas > 0:
        # Minimal: one fewer fails the scenario that decided it.
        decider = next(s for s in applicable if s.name == result.scenario)
        assert not survives(total - 1, decider, lam, mu, slo)


def test_result_to_dict() -> None:
    result = chaos_buffer(12, 80.0, 10.0, SLO(), Chaos(rule="survive", scenarios=(ZONE,)))
    assert isinstance(result, ChaosResult)
    assert json.loads(json.dumps(result.to_dict())) == {
        "base_replicas": 12, "extra_replicas": 6, "total_replicas": 18, "rule": "survive",
        "scenario": "zone", "reason": "SurviveScenario"}


@pytest.mark.parametrize(("call", "needle"), [
    (lambda: chaos_buffer(-1, 1.0, 1.0, SLO(), Chaos()), "base_replicas must be"),
    (lambda: chaos_buffer(1.5, 1.0, 1.0, SLO(), Chaos()),  # type: ignore[arg-type]
     "base_replicas must be"),
    (lambda: chaos_buffer(1, -1.0, 1.0, SLO(), Chaos()), "arrival_rate must be"),
    (lambda: chaos_buffer(1, 1.0, 0.0, SLO(), Chaos()), "service_rate must be"),
    (lambda: chaos_buffer(1, 1.0, 1.0, SLO(), Chaos(), max_replicas=0), "max_replicas"),
])
def test_bad_input(call: object, needle: str) -> None:
    with pytest.raises(InvalidInputError, match=needle):
        call()  # type: ignore[operator]
