"""Pause and pin by annotation, guardrail queries and the dashboard's metrics, through the
operator's real cycle against the in-memory fakes of the API and Prometheus."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from forescale.controller.metrics import OperatorMetrics
from forescale.controller.overrides import (
    HELD,
    PAUSED,
    PAUSED_REPLICAS,
    PINNED,
    read_override,
)
from forescale.controller.settings import ControllerSettings
from forescale.controller.worker import Controller
from forescale.core.errors import InvalidInputError
from forescale.core.spec import PolicySpec
from tests.unit.fakes import FakeKube, FakeSource

NS = "shop"
T0 = 1_700_000_040.0
SPEC = PolicySpec(service_rate_per_replica=10.0, min_replicas=2, max_replicas=20)


# --- reading the annotations ---------------------------------------------------------------

def test_no_annotation_no_override() -> None:
    assert read_override(None, SPEC) is None
    assert read_override({"other": "x", PAUSED: "false"}, SPEC) is None


def test_pause_and_pin() -> None:
    paused = read_override({PAUSED: "true"}, SPEC)
    assert paused is not None and (paused.reason, paused.replicas) == (HELD, None)
    pinned = read_override({PAUSED_REPLICAS: "7"}, SPEC)
    assert pinned is not None and (pinned.reason, pinned.replicas) == (PINNED, 7)
    # paused-replicas implies paused, whatever paused says (as KEDA's).
    both = read_override({PAUSED: "false", PAUSED_REPLICAS: "7"}, SPEC)
    assert both is not None and both.replicas == 7


@pytest.mark.parametrize(("asked", "pinned"), [("0", 2), ("1", 2), ("50", 20), ("20", 20)])
def test_pin_is_within_the_bounds(asked: str, pinned: int) -> None:
    override = read_override({PAUSED_REPLICAS: asked}, SPEC)
    assert override is not None and override.replicas == pinned
    assert ("bounded" in override.message) == (int(asked) != pinned)


@pytest.mark.parametrize("annotations", [{PAUSED: "yes"}, {PAUSED: ""},
                                         {PAUSED_REPLICAS: "-1"}, {PAUSED_REPLICAS: "2.5"},
                                         {PAUSED_REPLICAS: "many"},
                                         # isdigit() but not int()'s: no ValueError escapes
                                         {PAUSED_REPLICAS: "\u00b2"},
                                         {PAUSED_REPLICAS: "\u0663"},  # Arabic-Indic 3
                                         {PAUSED_REPLICAS: "9" * 5000},
                                         {PAUSED_REPLICAS: "1" + "0" * 9}])
def test_unreadable_annotations_are_one_line_errors(annotations: dict[str, str]) -> None:
    with pytest.raises(InvalidInputError, match=r"annotation forescale\.dev/") as info:
        read_override(annotations, SPEC)
    assert "\n" not in str(info.value)


# --- through the cycle ---------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class GuardedSource(FakeSource):
    """Also answers guardrail queries: ``values[query]`` (missing: no data)."""

    def __init__(self, rate: float) -> None:
        super().__init__(rate)
        self.values: dict[str, float] = {}

    def read_value(self, query: str, *, at: float) -> float:
        from forescale.adapters.prometheus import NoData

        if query not in self.values:
            raise NoData(f"query {query} returned no data")
        return self.values[query]


def body(annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"namespace": NS, "name": "web", "generation": 1}
    if annotations is not None:
        meta["annotations"] = annotations
    return {"metadata": meta,
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                        "name": "web"},
                     "metrics": {"query": "sum(rate(x[2m]))"}, "serviceRatePerReplica": 10,
                     "decisionPeriodSeconds": 30, "maxReplicas": 40,
                     "forecast": {"models": ["ma"], "historySeconds": 3600}, **spec}}


class World:
    def __init__(self, rate: float = 100.0, replicas: int = 2) -> None:
        self.kube, self.source, self.clock = FakeKube(), GuardedSource(rate), Clock()
        self.kube.replicas[NS, "web"] = replicas
        self.metrics = OperatorMetrics()
        self.controller = Controller(
            ControllerSettings(identity="op-a", prometheus_url="http://prom:9090",
                               step_seconds=60.0),
            self.kube, self.metrics, clock=self.clock, sources=lambda url: self.source)

    def cycle(self, b: dict[str, Any]) -> None:
        b = {**copy.deepcopy(b), "status": self.status}
        self.controller.cycle(b)
        self.clock.now += 30

    @property
    def status(self) -> dict[str, Any]:
        return dict(self.kube.statuses.get((NS, "web"), {}))

    @property
    def replicas(self) -> int:
        return self.kube.replicas[NS, "web"]

    def condition(self, ctype: str) -> tuple[str, str]:
        c = next(c for c in self.status["conditions"] if c["type"] == ctype)
        return c["status"], c["reason"]

    def metric(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(
            name, {"namespace": NS, "policy": "web", **labels})


def test_paused_holds_reports_and_resumes_with_the_state_intact() -> None:
    w = World(rate=100.0, replicas=2)
    w.cycle(body({PAUSED: "true"}))
    w.cycle(body({PAUSED: "true"}))
    assert w.replicas == 2  # never written while paused
    assert w.condition("Paused") == ("True", HELD)
    assert w.condition("ScalingActive") == ("False", HELD)
    assert w.status["reasons"][:2] == ["NoChange", HELD]
    assert w.status["desiredReplicas"] == 2
    # The plan kept planning: its recommendations are remembered, no scale event is.
    state = w.status["planState"]
    assert state["recommendations"] and state["scaleEvents"] == []
    assert [e[1] for e in w.kube.events].count(HELD) == 1  # one Event, on the transition
    assert all(kind == "Normal" for kind, reason, _ in w.kube.events if reason == HELD)
    assert w.metric("forescale_condition", type="Paused", status="True") == 1.0
    # Removing the annotation resumes: an Event, and the plan scales as it would have.
    w.cycle(body())
    assert w.replicas > 2
    assert w.condition("Paused") == ("False", "NotPaused")
    assert "Resumed" in [e[1] for e in w.kube.events]
    # The only scale event the plan remembers is its own, after the pause.
    (event,) = w.status["planState"]["scaleEvents"]
    assert event[1] == w.replicas - 2


def test_pinned_sets_n_within_bounds_and_holds_it() -> None:
    w = World(rate=100.0, replicas=2)
    w.cycle(body({PAUSED_REPLICAS: "5"}))
    assert w.replicas == 5
    assert w.condition("Paused") == ("True", PINNED)
    assert w.condition("ScalingActive") == ("True", "ScalingEnabled")
    # The pin's write is not one of the plan's scale events.
    assert w.status["planState"]["scaleEvents"] == []
    w.kube.replicas[NS, "web"] = 9  # someone scales by hand: set back to the pin
    w.cycle(body({PAUSED_REPLICAS: "5"}))
    assert w.replicas == 5
    w.cycle(body({PAUSED_REPLICAS: "500"}))
    assert w.replicas == 40  # maxReplicas


def test_a_pins_own_write_is_not_taken_for_someone_elses() -> None:
    """The pin's write committed the state from before it, so every decision after it
    (pinned still, or resumed) reported ExternallyScaled: "a person or another tool"."""
    w = World(rate=100.0, replicas=2)
    w.cycle(body({PAUSED_REPLICAS: "5"}))
    assert w.replicas == 5 and w.status["planState"]["replicas"] == 5
    w.cycle(body({PAUSED_REPLICAS: "5"}))
    assert "ExternallyScaled" not in w.status["reasons"]
    w.cycle(body())
    assert "ExternallyScaled" not in w.status["reasons"]
    w.kube.replicas[NS, "web"] = 30  # by hand, this time
    w.cycle(body())
    assert "ExternallyScaled" in w.status["reasons"]


@pytest.mark.parametrize(("annotations", "named"), [
    ({PAUSED: "yes please"}, PAUSED), ({PAUSED_REPLICAS: "\u00b2"}, PAUSED_REPLICAS),
    ({PAUSED_REPLICAS: "9" * 5000}, PAUSED_REPLICAS)])
def test_an_unreadable_annotation_never_scales(annotations: dict[str, str],
                                               named: str) -> None:
    w = World(rate=100.0, replicas=2)
    w.cycle(body(annotations))
    assert w.replicas == 2
    assert w.condition("Ready") == ("False", "InvalidSpec")  # not DecisionFailed
    assert named in next(
        c["message"] for c in w.status["conditions"] if c["type"] == "Ready")


def test_guardrail_raises_and_says_which_one_decided() -> None:
    guardrails = [{"name": "cpu", "query": "cpu", "target": 0.6},
                  {"name": "p99", "query": "p99", "target": 0.25}]
    w = World(rate=100.0, replicas=12)
    w.cycle(body(guardrails=guardrails))
    sized = w.replicas
    assert w.metric("forescale_decided_by", source="forecast") == 1.0
    w.source.values = {"cpu": 0.9, "p99": 0.3}  # cpu asks ceil(sized × 1.5), p99 × 1.2
    w.clock.now += 120  # the first scale-up's pods serve (the default lead time)
    w.cycle(body(guardrails=guardrails))
    assert w.replicas == -(-sized * 3 // 2)
    assert w.status["guardrail"]["decidedBy"] == "cpu"
    assert "GuardrailRaised" in w.status["reasons"]
    assert w.metric("forescale_decided_by", source="guardrail:cpu") == 1.0
    assert w.metric("forescale_decided_by", source="forecast") == 0.0


def test_a_guardrail_without_data_changes_nothing() -> None:
    w = World(rate=100.0, replicas=12)
    w.cycle(body())
    plain = w.replicas
    assert "guardrail" not in w.status  # a policy without guardrails has none to report
    w2 = World(rate=100.0, replicas=12)
    w2.cycle(body(guardrails=[{"name": "cpu", "query": "missing", "target": 0.6}]))
    assert w2.replicas == plain
    # ... and says so (the runbook's promise; a mistyped query showed nothing at all).
    assert set(w2.status["guardrail"]) == {"message"}
    assert "cpu" in w2.status["guardrail"]["message"]


def test_a_guardrail_that_loses_its_value_loses_its_recommendation() -> None:
    w = World(rate=100.0, replicas=12)
    guardrails = [{"name": "cpu", "query": "cpu", "target": 0.6}]
    w.source.values = {"cpu": 0.9}
    w.cycle(body(guardrails=guardrails))
    assert w.status["guardrail"]["decidedBy"] == "cpu"
    w.source.values = {}
    w.cycle(body(guardrails=guardrails))
    assert set(w.status["guardrail"]) == {"message"}


def test_schedule_in_status_and_metrics() -> None:
    w = World(rate=100.0, replicas=2)
    # Every day at the decision's own minute, for ten minutes: active now.
    w.cycle(body(schedules=[{"name": "sale", "cron": "* * * * *", "durationSeconds": 600,
                             "minReplicas": 30}]))
    assert w.replicas == 30
    assert w.status["schedules"]["active"] == ["sale"]
    assert w.status["schedules"]["nextSchedule"] == "sale"
    assert w.metric("forescale_decided_by", source="schedule:sale") == 1.0
    assert w.metric("forescale_forecast_mean_arrival_rate") == pytest.approx(100.0)
    assert w.metric("forescale_recommended_replicas") is not None
