"""What the status remembers after a decision: a scale event only if the write happened.

The one rule lives in :meth:`Plan.state_to_commit`; the operator, the backtest and the CLI
all ask it instead of patching the state themselves."""

from __future__ import annotations

from forescale.core.plan import PlanState, plan
from forescale.core.spec import PolicySpec
from tests.unit.test_plan import T0, FixedChain, history_at


def test_applied_scale_is_remembered_and_a_held_one_is_not() -> None:
    policy = PolicySpec(service_rate_per_replica=10.0)
    result = plan(history_at(T0, rate=200.0), policy, PlanState.initial(), T0,
                  current_replicas=2, chain=FixedChain(200.0))
    assert result.desired_replicas > 2
    applied = result.state_to_commit(applied=True)
    held = result.state_to_commit(applied=False)
    assert applied.scale_events == ((T0, result.desired_replicas - 2),)
    assert applied.last_scale_seconds == T0
    # Not applied: no scale event, no cooldown start, but the recommendation is kept (the
    # stabilisation window is about what was recommended, not what was done).
    assert held.scale_events == ()
    assert held.last_scale_seconds is None
    assert held.recommendations == applied.recommendations
    assert held.recommendations[-1] == (T0, result.recommended_replicas)


def test_a_held_decision_keeps_earlier_events_within_their_period() -> None:
    policy = PolicySpec(service_rate_per_replica=10.0)
    earlier = PlanState(scale_events=((T0 - 10, 3),), last_scale_seconds=T0 - 10)
    result = plan(history_at(T0, rate=400.0), policy, earlier, T0, current_replicas=5,
                  chain=FixedChain(400.0))
    held = result.state_to_commit(applied=False)
    assert held.scale_events == ((T0 - 10, 3),)
    assert held.last_scale_seconds == T0 - 10


def test_no_change_commits_the_same_state_either_way() -> None:
    policy = PolicySpec(service_rate_per_replica=10.0, min_replicas=3, max_replicas=3)
    result = plan(history_at(T0, rate=20.0), policy, PlanState.initial(), T0,
                  current_replicas=3, chain=FixedChain(20.0))
    assert result.desired_replicas == 3
    assert result.state_to_commit(applied=True) == result.state_to_commit(applied=False)
