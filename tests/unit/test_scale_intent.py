"""The scale intent a write leaves on its Lease (forescale.controller.intent): read back
only for the write it describes, and never trusted when it cannot be read."""

from __future__ import annotations

import json
import logging

import pytest

from forescale.controller.intent import ScaleIntent, resumed_state
from forescale.controller.lease import INTENT_ANNOTATION
from forescale.core.calibration import Records
from forescale.core.plan import PlanState

T0 = 1_700_000_000.0
BEFORE = PlanState(scale_events=((T0 - 900, 1),), last_scale_seconds=T0 - 900, replicas=3,
                   records=Records())
AFTER = PlanState(recommendations=((T0, 4),), scale_events=((T0 - 900, 1), (T0, 1)),
                  last_scale_seconds=T0, replicas=4)


def intent(uid: str = "uid-1") -> ScaleIntent | None:
    return ScaleIntent.decode(ScaleIntent.of(uid, 3, 4, T0 + 0.7, AFTER).encode())


def test_the_intent_round_trips_without_forecast_records() -> None:
    read = intent()
    assert read is not None
    assert (read.policy_uid, read.from_replicas, read.to_replicas) == ("uid-1", 3, 4)
    assert read.decided_at == T0  # as the status says it: whole seconds
    assert read.state == AFTER
    assert "forecasts" not in json.loads(ScaleIntent.of("u", 3, 4, T0, AFTER).encode())[
        "planState"]


def test_a_lost_write_is_resumed_with_the_statuss_records() -> None:
    state = resumed_state(BEFORE, intent(), policy_uid="uid-1", current_replicas=4,
                          decided_at=T0 - 60)
    assert state == AFTER
    assert state.records is BEFORE.records


@pytest.mark.parametrize(("uid", "current", "decided_at", "why"), [
    ("uid-2", 4, T0 - 60, "another policy's (or a policy recreated under the name)"),
    ("uid-1", 3, T0 - 60, "the write was refused or never made"),
    ("uid-1", 5, T0 - 60, "someone scaled the target since"),
    ("uid-1", 4, T0, "the status was written by the write's own decision"),
    ("uid-1", 4, T0 + 30, "the status is newer than the write"),
])
def test_the_status_stands_unless_it_predates_the_write(uid: str, current: int,
                                                         decided_at: float, why: str) -> None:
    state = resumed_state(BEFORE, intent(), policy_uid=uid, current_replicas=current,
                          decided_at=decided_at)
    assert state is BEFORE, why


def test_a_status_remembering_another_count_is_not_resumed() -> None:
    """The status's count is neither the one the write started from nor unknown: the
    target has been scaled by somebody else in between."""
    other = PlanState(replicas=7)
    assert resumed_state(other, intent(), policy_uid="uid-1", current_replicas=4,
                         decided_at=T0 - 60) is other


@pytest.mark.parametrize("text", [
    "not json", "[]", '{"policyUid": "u"}',
    '{"policyUid":"u","from":-1,"to":4,"decidedAt":"2023-11-14T22:13:20Z","planState":{}}',
    '{"policyUid":"u","from":3,"to":true,"decidedAt":"2023-11-14T22:13:20Z","planState":{}}',
    '{"policyUid":"u","from":3,"to":4,"decidedAt":"yesterday","planState":{}}',
    '{"policyUid":"u","from":3,"to":4,"decidedAt":"2023-11-14T22:13:20Z",'
    '"planState":{"version":9}}',
])
def test_an_unreadable_intent_is_logged_and_ignored(text: str,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="forescale.controller"):
        assert ScaleIntent.decode(text) is None
    assert INTENT_ANNOTATION in caplog.text
