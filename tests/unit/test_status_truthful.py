"""What the status, the Events and the metrics say is what happened in the cycle: no pause
reported lifted when the annotations were not read, no field or series of an earlier
decision left as if current, no scale without its Event, no hold that hides a scale.
(Each test failed on the code before its fix.)"""

from __future__ import annotations

from typing import Any

from forescale.adapters.prometheus import PrometheusUnavailable
from forescale.controller.kube import KubeError
from forescale.controller.worker import Controller
from tests.unit.fakes import FakeKube
from tests.unit.test_worker_cycle import NS, conditions, policy, setup, with_status

L = {"namespace": NS, "policy": "web"}


def annotated(**annotations: str) -> dict[str, Any]:
    body = policy()
    body["metadata"]["annotations"] = annotations
    body["metadata"]["uid"] = "u1"
    return body


PAUSED = {"forescale.dev/paused": "true"}


# -- the pause ------------------------------------------------------------------------------


def test_a_paused_policy_whose_target_is_gone_is_not_reported_resumed() -> None:
    """The annotations were not read (the target could not be): Paused went False with a
    Resumed Event, the annotation still on the object."""
    controller, kube, _, clock = setup()
    controller.cycle(annotated(**PAUSED))
    assert conditions(kube)["Paused"] == ("True", "PausedByAnnotation")
    del kube.replicas[NS, "web"]
    clock.now += 30
    controller.cycle(with_status(annotated(**PAUSED), kube))
    assert conditions(kube)["ScalingActive"][1] == "TargetNotFound"
    assert [e for e in kube.events if e[1] == "Resumed"] == []
    assert conditions(kube)["Paused"] == ("True", "PausedByAnnotation")


def test_a_pause_turned_into_a_pin_is_an_event() -> None:
    controller, kube, _, clock = setup(rate=20.0)
    controller.cycle(annotated(**PAUSED))
    clock.now += 30
    controller.cycle(with_status(annotated(**{"forescale.dev/paused-replicas": "2"}), kube))
    assert conditions(kube)["Paused"] == ("True", "PinnedByAnnotation")
    assert [e for e in kube.events if e[1] == "PinnedByAnnotation"]


# -- a hold after a decision --------------------------------------------------------------


def _held_cycle() -> tuple[Controller, FakeKube]:
    controller, kube, source, clock = setup(rate=100.0)
    controller.cycle(policy())
    first = kube.statuses[NS, "web"]
    assert "sizedFor" in first and first.get("plannedArrivalRate") is not None
    source.error = PrometheusUnavailable("connection refused")
    clock.now += 30
    controller.cycle(with_status(policy(), kube))
    assert conditions(kube)["MetricsAvailable"][0] == "False"
    return controller, kube


def test_no_field_of_an_earlier_decision_survives_a_hold() -> None:
    """The status is a merge patch: what a hold's status left out stayed."""
    _, kube = _held_cycle()
    status = kube.statuses[NS, "web"]
    assert "plannedArrivalRate" not in status
    assert sorted(k for k in ("sizedFor", "servingModel", "skippedModels", "forecast")
                  if k in status) == []


def test_no_one_hot_series_of_an_earlier_decision_stays_at_one() -> None:
    controller, _ = _held_cycle()
    registry = controller.metrics.registry
    assert registry.get_sample_value("forescale_recommended_replicas", L) is None
    assert registry.get_sample_value("forescale_forecast_arrival_rate", L) is None
    stale = {m.name: [s.labels for s in m.samples if s.value == 1.0]
             for m in registry.collect()
             if m.name in ("forescale_sized_for", "forescale_decided_by")}
    assert stale == {"forescale_sized_for": [], "forescale_decided_by": []}


def test_a_scale_during_a_hold_is_not_called_holding_the_current_replicas() -> None:
    """Prometheus down, and an active schedule's floor raises the held replicas."""
    controller, kube, source, _ = setup(rate=100.0)
    source.error = PrometheusUnavailable("connection refused")
    controller.cycle(policy(schedules=[{"name": "launch", "cron": "* * * * *",
                                        "durationSeconds": 3600, "minReplicas": 6}]))
    assert kube.scale_writes == [(NS, "web", 6)]
    assert any(e[1] == "ScaledUp" for e in kube.events)
    active = {c["type"]: c for c in kube.statuses[NS, "web"]["conditions"]}["ScalingActive"]
    assert "holding the current replicas" not in active["message"]
    assert "2 -> 6" in active["message"]


# -- a scale nobody reports, a cycle with no decision --------------------------------------


def test_a_scale_written_during_shutdown_still_gets_its_event() -> None:
    """SIGTERM during the /scale write: the status is the next holder's to write, but the
    scale happened and is said."""
    controller, kube, _, _ = setup(rate=100.0)
    real = kube.patch_scale

    def stopping_meanwhile(*args: Any, **kwargs: Any) -> Any:
        with controller._lock:  # what release_all does first
            controller._stopping = True
        return real(*args, **kwargs)

    kube.patch_scale = stopping_meanwhile  # type: ignore[method-assign]
    controller.cycle(policy())
    assert kube.scale_writes and kube.scale_writes[0][:2] == (NS, "web")
    assert [e for e in kube.events if e[1] in ("ScaledUp", "ScaledDown")]


def test_an_api_failure_does_not_leave_the_last_plan_as_current() -> None:
    controller, kube, _, clock = setup(rate=100.0)
    controller.cycle(policy())
    registry = controller.metrics.registry
    assert registry.get_sample_value("forescale_desired_replicas", L) is not None
    kube.fail_scale_reads = KubeError(503, "ServiceUnavailable", "etcd leader changed")
    for _ in range(5):
        clock.now += 30
        controller.cycle(with_status(policy(), kube))
    assert registry.get_sample_value("forescale_errors_total", {"cause": "KubernetesApi"}) == 5
    assert registry.get_sample_value("forescale_desired_replicas", L) is None


def test_a_failed_scale_write_is_not_read_as_a_scale() -> None:
    controller, kube, _, _ = setup(rate=100.0)
    kube.fail_scale_writes = KubeError(403, "Forbidden", "no patch on deployments/scale")
    controller.cycle(policy())
    status = {c["type"]: c for c in kube.statuses[NS, "web"]["conditions"]}
    assert status["ScalingActive"]["reason"] == "ScaleFailed"
    assert status["Ready"]["message"].endswith("not applied: the /scale write failed")


def test_no_decision_is_not_within_the_limits() -> None:
    controller, kube, _, _ = setup()
    del kube.replicas[NS, "web"]
    controller.cycle(policy())
    assert conditions(kube)["ScalingLimited"] == ("Unknown", "NoDecision")
