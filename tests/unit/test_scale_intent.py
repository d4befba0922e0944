"""The scale intent a write leaves on its Lease (forescale.controller.intent): read back
only for the write it describes, and never trusted when it cannot be read."""

from __future__ import annotations

import json
import logging

import pytest

from forescale.controller.intent import ScaleIntent, intent_key, resumed_state
from forescale.controller.lease import INTENT_ANNOTATION
from forescale.core.calibration import Records
from forescale.core.plan import PlanState

T0 = 1_700_000_000.0
BEFORE = PlanState(scale_events=((T0 - 900, 1),), last_scale_seconds=T0 - 900, replicas=3,
                   records=Records())
AFTER = PlanState(recommendations=((T0, 4),), scale_events=((T0 - 900, 1), (T0, 1)),
                  last_scale_seconds=T0, replicas=4)
TEXT = ScaleIntent.of("uid-1", 3, 4, AFTER).encode()


def intent() -> ScaleIntent | None:
    return ScaleIntent.decode(TEXT)


def test_the_intent_round_trips_without_forecast_records() -> None:
    read = intent()
    assert read is not None
    assert (read.policy_uid, read.from_replicas, read.to_replicas) == ("uid-1", 3, 4)
    assert read.state == AFTER
    assert read.key == intent_key(TEXT) != intent_key(
        ScaleIntent.of("uid-1", 3, 5, AFTER).encode())
    assert "forecasts" not in json.loads(TEXT)["planState"]


def test_a_lost_write_is_resumed_with_the_statuss_records() -> None:
    for accounted in (None, "an older write's key"):
        state = resumed_state(BEFORE, intent(), policy_uid="uid-1", current_replicas=4,
                              accounted=accounted)
        assert state == AFTER
        assert state.records is BEFORE.records


@pytest.mark.parametrize(("uid", "current", "accounted", "why"), [
    ("uid-2", 4, None, "another policy's (or a policy recreated under the name)"),
    ("uid-1", 3, None, "the write was refused or never made"),
    ("uid-1", 5, None, "someone scaled the target since"),
    ("uid-1", 4, intent_key(TEXT), "the status accounts for it already"),
])
def test_the_status_stands_unless_it_misses_the_write(uid: str, current: int,
                                                       accounted: str | None,
                                                       why: str) -> None:
    state = resumed_state(BEFORE, intent(), policy_uid=uid, current_replicas=current,
                          accounted=accounted)
    assert state is BEFORE, why


def test_a_status_remembering_another_count_is_not_resumed() -> None:
    """The status's count is neither the one the write started from nor unknown: the
    target has been scaled by somebody else in between."""
    other = PlanState(replicas=7)
    assert resumed_state(other, intent(), policy_uid="uid-1", current_replicas=4,
                         accounted=None) is other


@pytest.mark.parametrize("text", [
    "not json", "[]", '{"policyUid": "u"}',
    '{"policyUid":"u","from":-1,"to":4,"planState":{}}',
    '{"policyUid":"u","from":3,"to":true,"planState":{}}',
    '{"policyUid":"u","from":3,"to":4,"planState":{"version":9}}',
    '{"a":' * 20_000 + "1" + "}" * 20_000,  # RecursionError in json.loads
    '{"policyUid":"u","from":3,"to":4,"planState":{},"pad":"' + "x" * 250_000 + '"}',
])
def test_an_unreadable_intent_is_logged_and_ignored(text: str,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="forescale.controller"):
        assert ScaleIntent.decode(text) is None
    assert INTENT_ANNOTATION in caplog.text
