"""Guardrail metrics: HPA-style max-of that can only raise replicas, and the case it exists
for: a release that makes each pod slower than serviceRatePerReplica says."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forescale.core.errors import InvalidInputError
from forescale.core.guardrail import (
    MOST_REPLICAS,
    Guardrail,
    GuardrailReading,
    recommend,
    replicas_for,
)
from forescale.core.plan import MAX_CHANGES, PlanState, changed, plan, serving_replicas
from forescale.core.series import Series
from forescale.core.spec import ForecastSettings, PolicySpec, RateLimit

CPU = Guardrail("cpu", 'avg(rate(container_cpu_usage_seconds_total{pod=~"web-.*"}[2m]))', 0.7)
LATENCY = Guardrail("p99", "histogram_quantile(0.99, ...)", 0.25)


@pytest.mark.parametrize(("kw", "message"), [
    ({"name": ""}, "needs a name"), ({"query": " "}, "query must not be empty"),
    ({"target": 0.0}, "target must be a positive number"),
    ({"target": math.inf}, "target must be a positive number"),
    ({"tolerance": 1.0}, "tolerance must be in"),
])
def test_bad_guardrails(kw: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"name": "cpu", "query": "up", "target": 0.7, **kw}
    with pytest.raises(InvalidInputError, match=message):
        Guardrail(**args)  # type: ignore[arg-type]


def test_like_the_hpa() -> None:
    # 10 pods at 91 % CPU against 70 %: ceil(10 × 1.3) = 13.
    assert replicas_for(GuardrailReading(CPU, 0.91), 10) == 13
    # Within the 10 % tolerance: the current replicas (hold what the pods need).
    assert replicas_for(GuardrailReading(CPU, 0.76), 10) == 10
    assert replicas_for(GuardrailReading(CPU, 0.64), 10) == 10
    # Well below target: the proportional answer (max-of with sizing ignores it).
    assert replicas_for(GuardrailReading(CPU, 0.14), 10) == 2
    # No value, garbage, or no pods to scale from: nothing.
    for value in (None, math.nan, -1.0):
        assert replicas_for(GuardrailReading(CPU, value), 10) is None
    assert replicas_for(GuardrailReading(CPU, 0.95), 0) is None


def test_max_of_and_who_decided() -> None:
    result = recommend([GuardrailReading(CPU, 0.91), GuardrailReading(LATENCY, 0.5)], 10)
    assert (result.replicas, result.decided_by) == (20, "p99")
    assert dict(result.per_guardrail) == {"cpu": 13, "p99": 20}
    assert "p99" in result.message and "0.5" in result.message
    quiet = recommend([GuardrailReading(CPU, 0.7), GuardrailReading(LATENCY, None)], 10)
    assert (quiet.replicas, quiet.decided_by) == (10, "cpu")
    assert "no value from p99" in quiet.message
    nothing = recommend([GuardrailReading(LATENCY, None)], 10)
    assert (nothing.replicas, nothing.decided_by) == (None, None)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 500), st.floats(0, 10, allow_nan=False), st.floats(0.01, 5))
def test_asks_for_more_exactly_when_hotter_than_tolerated(current: int, value: float,
                                                          target: float) -> None:
    g = Guardrail("g", "x", target)
    n = replicas_for(GuardrailReading(g, value), current)
    assert n is not None and n >= 1
    assert (n > current) == (value / target > 1 + g.tolerance)


# --- in plan() ----------------------------------------------------------------------------

STEP = 60.0
NOW = 1_800_000_000.0


def spec(**kw: object) -> PolicySpec:
    base = PolicySpec(service_rate_per_replica=10.0, max_replicas=500,
                      forecast=ForecastSettings(models=("ma",)))
    return replace(base, **kw)  # type: ignore[arg-type]


def steady(rate: float, now: float, n: int = 120) -> Series:
    return Series(now - n * STEP, STEP, np.full(n, rate))


def test_plan_takes_the_guardrail_when_it_asks_for_more() -> None:
    s = spec(guardrails=(CPU,))
    alone = plan(steady(100.0, NOW), s, PlanState.initial(), NOW, current_replicas=12)
    raised = plan(steady(100.0, NOW), s, PlanState.initial(), NOW, current_replicas=12,
                  guardrails=[GuardrailReading(CPU, 1.0)])
    assert alone.recommended_replicas is not None
    assert raised.recommended_replicas == max(alone.recommended_replicas, math.ceil(12 / 0.7))
    assert raised.desired_replicas > alone.desired_replicas
    assert "GuardrailRaised" in raised.reasons
    assert raised.guardrail is not None and raised.guardrail.decided_by == "cpu"
    # Below its target it changes nothing.
    calm = plan(steady(100.0, NOW), s, PlanState.initial(), NOW, current_replicas=12,
                guardrails=[GuardrailReading(CPU, 0.3)])
    assert calm.desired_replicas == alone.desired_replicas
    assert "GuardrailRaised" not in calm.reasons


@pytest.mark.parametrize("history", ["missing", "stale"])
def test_a_guardrail_still_raises_while_the_rate_is_unusable(history: str) -> None:
    """As the HPA does with a metric it cannot read: the others may still scale up, never
    down. The arrival rate gone (a renamed metric) must not hold pods at 100 % CPU."""
    rates = (Series(NOW - 60 * STEP, STEP, np.full(60, np.nan)) if history == "missing"
             else steady(100.0, NOW - 3600))
    s = spec(guardrails=(CPU,),
             behavior=replace(spec().behavior,
                              scale_up=(RateLimit("Pods", 4, 600.0),)))
    hot = plan(rates, s, PlanState.initial(), NOW, current_replicas=10,
               guardrails=[GuardrailReading(CPU, 0.91)])
    assert not hot.metrics_available
    assert hot.desired_replicas == hot.recommended_replicas == 13  # ceil(10 × 0.91 / 0.7)
    assert "GuardrailRaised" in hot.reasons and "HoldingReplicas" not in hot.reasons
    assert hot.guardrail is not None and hot.guardrail.decided_by == "cpu"
    assert hot.state.scale_events == ((NOW, 3),)
    served = NOW + s.lead_time_seconds  # its pods serve: a hot guardrail raises again
    limited = plan(rates, s, hot.state, served, current_replicas=13,
                   guardrails=[GuardrailReading(CPU, 1.0)])
    assert limited.desired_replicas == 14  # the rate limit still counts: 4 pods per 600 s
    assert "ScaleUpLimited" in limited.reasons
    # A calm or silent guardrail never scales down on missing data: the hold stands.
    for value in (0.1, None):
        calm = plan(rates, s, PlanState.initial(), NOW, current_replicas=10,
                    guardrails=[GuardrailReading(CPU, value)])
        assert calm.desired_replicas == 10 and "HoldingReplicas" in calm.reasons


@pytest.mark.parametrize(("history", "stabilisation"), [
    ("steady", 300.0), ("steady", 0.0), ("missing", 300.0)])
def test_a_guardrail_raises_again_only_once_its_pods_serve(history: str,
                                                          stabilisation: float) -> None:
    """Read again before the pods of its raise serve (the quick retries after a failed
    read at 2, 4, 8 ... s, the next decisions within the lead time), the same value must
    not raise the replicas again on top of it (10 -> 20 -> 40 -> 80 in two minutes), nor
    let the sizing take the raise back (without stabilisation: 20 -> 7 five seconds
    later); with or without the rate."""
    rates = (steady(40.0, NOW) if history == "steady"
             else Series(NOW - 60 * STEP, STEP, np.full(60, np.nan)))
    s = spec(guardrails=(CPU,),
             behavior=replace(spec().behavior,
                              scale_down_stabilization_seconds=stabilisation))
    first = plan(rates, s, PlanState.initial(), NOW, current_replicas=10,
                 guardrails=[GuardrailReading(CPU, 1.4)])
    assert first.desired_replicas == 20  # ceil(10 × 1.4 / 0.7)
    serving = max(s.decision_period_seconds, s.lead_time_seconds)
    for t in (2, 6, 14, 30, s.decision_period_seconds, serving - 1):
        for cpu in (1.4, 0.7):
            again = plan(rates, s, first.state, NOW + t, current_replicas=20,
                         guardrails=[GuardrailReading(CPU, cpu)])
            assert again.desired_replicas == 20, (t, cpu)
    later = plan(rates, s, first.state, NOW + serving, current_replicas=20,
                 guardrails=[GuardrailReading(CPU, 1.4)])
    assert later.desired_replicas == 40  # still hot once its pods serve: raised again


def test_a_guardrail_scales_the_pods_its_value_was_measured_on() -> None:
    """Pods a scale-up asked for serve a lead time later; until then the guardrail's
    value shows the others only. It scales those (as the HPA leaves unready pods out), so
    it neither doubles its own raise nor waits for the new pods, whoever scaled up."""
    lead = 600.0
    s = spec(guardrails=(CPU,), lead_time_seconds=lead)
    hot = [GuardrailReading(CPU, 1.4)]  # twice its target on the pods that serve
    rates = steady(40.0, NOW)
    # Sizing raised 10 -> 12 a minute ago (traffic rose): the hot guardrail acts at once,
    # for the 10 that serve, not after the 600 s lead time.
    ramp = PlanState(scale_events=((NOW - 60, 2),), last_scale_seconds=NOW - 60,
                     replicas=12, changes=((NOW - 60, 2),))
    p = plan(rates, s, ramp, NOW, current_replicas=12, guardrails=hot)
    assert p.desired_replicas == 20 and "GuardrailRaised" in p.reasons
    assert "(2 of the 12 not serving yet)" in p.guardrail.message  # type: ignore[union-attr]
    assert p.state.changes == ((NOW - 60, 2), (NOW, 8))
    # Read again within the lead time, the same value asks for the same 20.
    again = plan(rates, s, p.state, NOW + 60, current_replicas=20, guardrails=hot)
    assert again.desired_replicas == 20
    # Once the first change serves (its pods started) but not the second: 12 serve.
    later = plan(rates, s, p.state, NOW + lead - 30, current_replicas=20, guardrails=hot)
    assert later.desired_replicas == 24
    # Scaled up by hand 10 -> 30 (an incident): neither doubled on top of the hand's pods
    # nor taken back because only 10 of them serve yet.
    by_hand = plan(rates, s, PlanState(replicas=10), NOW, current_replicas=30,
                   guardrails=hot)
    assert "ExternallyScaled" in by_hand.reasons
    assert by_hand.recommended_replicas == by_hand.desired_replicas == 30
    # Raised 10 -> 20, then back down to 12 (the starting pods go first): 10 serve, and
    # the hot guardrail raises at once.
    down = PlanState(replicas=12, changes=((NOW - 120, 10), (NOW - 60, -8)),
                     last_scale_seconds=NOW - 60)
    assert plan(rates, s, down, NOW, current_replicas=12, guardrails=hot).desired_replicas \
        == 20
    # Once the lead time has passed, every pod serves.
    served = plan(rates, s, ramp, NOW + lead, current_replicas=12, guardrails=hot)
    assert served.desired_replicas == 24


def test_changes_at_the_same_time_count_in_the_order_they_were_made() -> None:
    """Scaled by hand 10 -> 20, and back to 10 by the decision that saw it: the starting
    pods went first, the 10 that serve remain (replayed the other way round, none did)."""
    s = spec(guardrails=(CPU,), lead_time_seconds=600.0)
    state = PlanState(replicas=10, changes=((NOW, 10), (NOW, -10)))
    assert serving_replicas(state, s, NOW + 60, 10) == 10
    p = plan(steady(40.0, NOW + 60), s, state, NOW + 60, current_replicas=10,
             guardrails=[GuardrailReading(CPU, 1.4)])
    assert p.desired_replicas == 20


def test_a_state_keeps_a_bounded_number_of_changes() -> None:
    s = spec(lead_time_seconds=86_400.0)
    state = PlanState(replicas=10, changes=tuple((NOW + i, 1) for i in range(MAX_CHANGES)))
    kept = changed(state, s, NOW + MAX_CHANGES, 10, 11)
    assert len(kept) == MAX_CHANGES and kept[-1] == (NOW + MAX_CHANGES, 1)


def test_a_guardrail_after_a_scale_up_from_zero_holds() -> None:
    """Scaled back up from 0 (by hand, or a pin), none of the pods serve yet: a hot value
    from before asks for no more than there are, every decision of the lead time."""
    s = spec(guardrails=(CPU,))
    rates = steady(40.0, NOW)
    state = PlanState(replicas=0)
    current = 10
    for t in (0.0, 30.0, 60.0, 90.0):
        p = plan(rates, s, state, NOW + t, current_replicas=current,
                 guardrails=[GuardrailReading(CPU, 1.4)])
        assert p.desired_replicas == 10, t
        assert "(10 of the 10 not serving yet)" in p.guardrail.message  # type: ignore[union-attr]
        state, current = p.state, p.desired_replicas


def test_the_changes_round_trip_and_refuse_nonsense() -> None:
    state = PlanState(replicas=12, changes=((NOW, 2), (NOW + 1, -1)))
    assert PlanState.from_dict(state.to_dict()).changes == state.changes
    assert PlanState.from_dict({**state.to_dict(), "changes": []}).changes == ()
    for bad in ([[NOW, 1.5]], [[NOW, True]], [["x", 3]], [[NOW]], "soon", [[NOW, "2"]]):
        with pytest.raises(InvalidInputError):
            PlanState.from_dict({**state.to_dict(), "changes": bad})


def simulate(true_service_rate: float, *, with_guardrail: bool,
             decisions: int = 20) -> tuple[int, float]:
    """A closed loop: each decision's desired replicas become the next one's current, and
    the CPU guardrail reads what the pods really do (CPU saturates at 100 %)."""
    arrival = 300.0
    # The target sits above the utilisation the SLO sizing plans for (~86 % here), so the
    # guardrail is quiet while serviceRatePerReplica is right.
    cpu_guard = Guardrail("cpu", CPU.query, 0.9)
    s = spec(guardrails=(cpu_guard,) if with_guardrail else ())
    state, current, now = PlanState.initial(), 35, NOW
    utilisation = arrival / (current * true_service_rate)
    for _ in range(decisions):
        cpu = min(1.0, utilisation)
        readings = [GuardrailReading(cpu_guard, cpu)] if with_guardrail else []
        result = plan(steady(arrival, now), s, state, now, current_replicas=current,
                      guardrails=readings)
        state, current = result.state, result.desired_replicas
        utilisation = arrival / (current * true_service_rate)
        now += s.decision_period_seconds
    return current, utilisation


def test_a_slower_release_is_caught_by_the_guardrail() -> None:
    """The spec says 10 req/s per pod; after a release each pod serves 6. Sizing alone keeps
    the pods past 100 % (an unstable queue); the CPU guardrail raises them until CPU is back
    within its 90 % target."""
    blind, blind_util = simulate(6.0, with_guardrail=False)
    caught, caught_util = simulate(6.0, with_guardrail=True)
    assert blind_util > 1.0, (blind, blind_util)
    assert caught >= math.ceil(300 / 6.0)  # stable at the pods' real capacity
    assert caught_util <= 0.9 * 1.1, (caught, caught_util)
    # And when the spec is right, the guardrail stays out of the way.
    honest, honest_util = simulate(10.0, with_guardrail=True)
    plain, _ = simulate(10.0, with_guardrail=False)
    assert honest == plain and honest_util < 1.0


@pytest.mark.parametrize("value", [1e300, 1e306, float(np.finfo(float).max)])
def test_a_huge_reading_asks_for_the_most_replicas_kubernetes_holds(value: float) -> None:
    """1e306 against a target of 0.001 was an OverflowError that failed the decision, and
    1e300 a 300-digit replica count."""
    g = Guardrail("latency", "histogram_quantile(0.99, x)", target=0.001)
    assert replicas_for(GuardrailReading(g, value), 10) == MOST_REPLICAS
    assert recommend([GuardrailReading(g, value)], 10).replicas == MOST_REPLICAS
