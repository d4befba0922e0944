"""The operator's cycle, step by step, without a cluster: read → guard → history → plan →
apply → report against in-memory fakes of the API and Prometheus (tests/unit/fakes.py)."""

from __future__ import annotations

import copy
import threading
from typing import Any

import pytest

from forescale.adapters.prometheus import AmbiguousQuery, BadQuery, NoData, PrometheusUnavailable
from forescale.controller.health import Health
from forescale.controller.kube import KubeError
from forescale.controller.lease import LeaseLock, lease_name
from forescale.controller.metrics import OperatorMetrics
from forescale.controller.settings import ControllerSettings
from forescale.controller.worker import AUTOSCALERS_TTL_SECONDS, Controller, Guard, standing_by
from tests.unit.fakes import FakeKube, FakeSource

NS = "shop"
T0 = 1_700_000_040.0
LEASE = (NS, lease_name("Deployment", "web"))


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def policy(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": NS, "name": "web", "generation": 1},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                        "name": "web"},
                     "metrics": {"query": "sum(rate(x[2m]))"},
                     "serviceRatePerReplica": 10, "decisionPeriodSeconds": 30,
                     "forecast": {"models": ["ma"], "historySeconds": 3600}, **spec}}


def setup(identity: str = "op-a", rate: float = 100.0,
          **settings: Any) -> tuple[Controller, FakeKube, FakeSource, Clock]:
    kube, source, clock = FakeKube(), FakeSource(rate), Clock()
    kube.replicas[NS, "web"] = 2
    sources: dict[str, FakeSource] = {}

    def make(url: str) -> FakeSource:
        sources[url] = source
        return source

    controller = Controller(
        ControllerSettings(identity=identity, prometheus_url="http://prom:9090",
                           step_seconds=60.0, **settings),
        kube, OperatorMetrics(), clock=clock, sources=make)
    return controller, kube, source, clock


def conditions(kube: FakeKube) -> dict[str, tuple[str, str]]:
    status = kube.statuses[NS, "web"]
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def with_status(body: dict[str, Any], kube: FakeKube) -> dict[str, Any]:
    return {**copy.deepcopy(body), "status": kube.statuses.get((NS, "web"), {})}


def test_a_cycle_scales_under_the_lease_and_remembers_the_write() -> None:
    controller, kube, source, _ = setup(rate=100.0)
    delay = controller.cycle(policy())
    assert delay == 30
    assert kube.replicas[NS, "web"] > 2
    assert kube.leases[LEASE]["spec"]["holderIdentity"] == "op-a"
    status = kube.statuses[NS, "web"]
    assert conditions(kube)["Ready"] == ("True", "DecisionMade")
    assert status["planState"]["scaleEvents"][0][1] == kube.replicas[NS, "web"] - 2
    assert status["decidedBy"] == "op-a"
    assert source.points == 60


def test_a_failed_write_is_a_condition_and_is_not_remembered() -> None:
    controller, kube, _, clock = setup(rate=100.0)
    kube.fail_scale_writes = KubeError(403, "Forbidden", "scale is forbidden")
    controller.cycle(policy())
    assert conditions(kube)["ScalingActive"] == ("False", "ScaleFailed")
    assert kube.statuses[NS, "web"]["planState"]["scaleEvents"] == []
    assert "lastScaleTime" not in kube.statuses[NS, "web"]
    clock.now += 30
    controller.cycle(with_status(policy(), kube))
    # A Warning on the transition, not every cycle.
    assert [e for e in kube.events if e[1] == "ScaleFailed"] == [
        ("Warning", "ScaleFailed",
         "could not scale Deployment web: Forbidden (403): scale is forbidden")]


def test_a_standby_reads_nothing_and_writes_nothing() -> None:
    holder, kube, _, _ = setup("op-a")
    holder.cycle(policy())
    status_before = copy.deepcopy(kube.statuses[NS, "web"])
    standby = Controller(holder.settings.__class__(identity="op-b",
                                                   prometheus_url="http://prom:9090"),
                         kube, OperatorMetrics(), clock=Clock(T0 + 5),
                         sources=lambda url: source_b)
    source_b = FakeSource()
    standby.cycle(with_status(policy(), kube))
    assert source_b.calls == 0  # no Prometheus load from the standby
    assert kube.statuses[NS, "web"] == status_before
    assert kube.leases[LEASE]["spec"]["holderIdentity"] == "op-a"


def test_standing_by_only_when_another_replica_reports() -> None:
    locked = ("TargetLocked", "held by op-b")
    assert standing_by(Guard(locked), {"decidedBy": "op-b"}, "op-a")
    assert standing_by(Guard(locked, other="op-b"), {}, "op-a")  # the holder will report
    assert not standing_by(Guard(locked), {"decidedBy": "op-a"}, "op-a")
    assert not standing_by(Guard(locked), {}, "op-a")  # nobody reports yet: say why not
    # Another policy of this replica holds the target: this policy reports it is locked.
    assert not standing_by(Guard(locked, other="op-a"), {}, "op-a")
    assert not standing_by(Guard(("ObserveMode", "")), {"decidedBy": "op-b"}, "op-a")


@pytest.mark.parametrize(("change", "reason", "text"), [
    ({"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                         "name": "../../victim/deployments/db"}},
     "InvalidSpec", "DNS-1123"),
    ({"serviceRatePerReplica": 1e-30}, "InvalidSpec", "serviceRatePerReplica"),
    ({"metrics": {"query": "up", "prometheusUrl": "http://10.0.0.1:8080/internal"}},
     "InvalidSpec", "allow-list"),
    ({"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gone"}},
     "TargetNotFound", "not found"),
])
def test_invalid_policies_touch_nothing(change: dict[str, Any], reason: str,
                                        text: str) -> None:
    controller, kube, source, _ = setup()
    controller.cycle(policy(**change))
    ready = next(c for c in kube.statuses[NS, "web"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and text in ready["message"]
    assert source.calls == 0 and kube.scale_writes == [] and kube.leases == {}
    if reason == "InvalidSpec":
        assert kube.scale_reads == []  # a hostile name never becomes a path


def test_an_allowed_url_is_read() -> None:
    controller, kube, source, _ = setup(
        allowed_prometheus_urls=("http://tenant-prom.team-a:9090",))
    controller.cycle(policy(metrics={"query": "up",
                                     "prometheusUrl": "http://tenant-prom.team-a:9090"}))
    assert source.calls == 1 and conditions(kube)["Ready"][0] == "True"


def test_a_cycle_that_raises_still_writes_a_status() -> None:
    controller, kube, source, _ = setup()
    source.error = ZeroDivisionError("float division by zero\nsecond line")
    delay = controller.cycle(policy())
    assert conditions(kube)["Ready"] == ("False", "DecisionFailed")
    ready = next(c for c in kube.statuses[NS, "web"]["conditions"] if c["type"] == "Ready")
    assert ready["message"] == "the decision failed (ZeroDivisionError: float division by zero)"
    assert delay == controller.settings.retry_seconds  # retried soon, backing off
    assert [e[1] for e in kube.events] == ["DecisionFailed"]


def test_history_is_read_in_full_once_then_only_the_tail() -> None:
    controller, kube, source, clock = setup()
    controller.cycle(policy())
    assert source.points == 60
    for _ in range(4):
        clock.now += 30
        controller.cycle(with_status(policy(), kube))
    # 4 cycles over 2 minutes: each reads the new steps plus 3 refreshed ones.
    assert source.points - 60 <= 4 * 5
    # A gap longer than the window: a full read again.
    clock.now += 7200
    before = source.points
    controller.cycle(with_status(policy(), kube))
    assert source.points - before == 60


def test_observe_mode_takes_no_lease_and_writes_nothing() -> None:
    controller, kube, source, _ = setup()
    controller.cycle(policy(mode="Observe"))
    assert kube.leases == {} and kube.scale_writes == []
    assert conditions(kube)["ScalingActive"] == ("False", "ObserveMode")
    assert source.calls == 1  # but it forecasts and reports


def test_a_conflicting_hpa_is_respected() -> None:
    controller, kube, _, _ = setup()
    kube.hpas = [{"metadata": {"name": "web-hpa"},
                  "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}}}]
    controller.cycle(policy())
    assert kube.scale_writes == []
    assert conditions(kube)["ScalingActive"] == ("False", "ConflictingAutoscaler")


def test_release_all_hands_every_held_lease_over() -> None:
    controller, kube, _, _ = setup()
    controller.cycle(policy())
    assert LEASE in kube.leases
    assert controller.release_all() == 1
    assert kube.leases == {}
    assert controller.release_all() == 0


def test_release_of_a_deleted_policy_with_a_hostile_name_touches_nothing() -> None:
    controller, kube, _, _ = setup()
    kube.leases[NS, "forescale-deployment-x"] = {"metadata": {"namespace": NS}, "spec": {}}
    body = policy(scaleTargetRef={"apiVersion": "apps/v1", "kind": "Deployment",
                                  "name": "../x"})
    assert controller.release(body) is False
    assert (NS, "forescale-deployment-x") in kube.leases


def test_one_policy_never_runs_two_cycles_at_once() -> None:
    health = Health()
    assert health.cycle_started("a/b")
    assert not health.cycle_started("a/b")
    assert health.cycle_started("a/c")
    health.cycle_finished("a/b")
    assert health.cycle_started("a/b")


def test_a_deleted_policy_never_takes_the_lease_again() -> None:
    # A cycle still running when the policy is deleted renews the Lease after the release;
    # the uid's tombstone makes that renewal (and any later cycle of it) a no-op.
    controller, kube, _, clock = setup()
    body = policy()
    body["metadata"]["uid"] = "uid-1"
    controller.cycle(body)
    assert controller.release(body, wait_seconds=0.1)
    assert kube.leases == {}
    clock.now += 30
    controller.cycle(with_status(body, kube))
    assert kube.leases == {}
    # The same name created again is another policy: it may take the Lease.
    again = policy()
    again["metadata"]["uid"] = "uid-2"
    controller.cycle(again)
    assert LEASE in kube.leases


def test_tenant_isolation_scopes_the_query_to_the_namespace() -> None:
    controller, kube, source, _ = setup(tenant_label="namespace")
    controller.cycle(policy(metrics={"query": 'sum(rate(http_requests_total{job="web"}[2m]))'}))
    assert source.queries == [
        'sum ( rate ( http_requests_total{namespace="shop",job="web"} [ 2m ] ) )']
    source.queries.clear()
    controller.cycle(policy(metrics={"query": 'sum(rate(x{namespace="payroll"}[2m]))'}))
    assert source.queries == []
    ready = next(c for c in kube.statuses[NS, "web"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "InvalidSpec" and "payroll" in ready["message"]


def test_tenant_isolation_scopes_every_guardrail_query() -> None:
    """Only the arrival rate's query was scoped: a guardrail's query went to Prometheus as
    written, and its value (another namespace's series) was shown in the status."""
    controller, kube, source, _ = setup(tenant_label="namespace")
    asked: list[str] = []

    def read_value(query: str, *, at: float) -> float:
        asked.append(query)
        return 0.5 if "cpu" in query else 4242.0

    source.read_value = read_value  # type: ignore[attr-defined]
    guardrails = [{"name": "cpu", "query": "avg(cpu_ratio)", "target": 0.6}]
    controller.cycle(policy(guardrails=guardrails))
    assert asked == ['avg ( cpu_ratio{namespace="shop"} )']
    asked.clear()
    guardrails.append({"name": "peek", "query": 'sum(payroll_total{namespace="payroll"})',
                       "target": 1})
    controller.cycle(with_status(policy(guardrails=guardrails), kube))
    assert asked == [] and source.queries[-1:] != ['sum(payroll_total{namespace="payroll"})']
    ready = conditions(kube)["Ready"]
    assert ready[1] == "InvalidSpec"
    message = next(c["message"] for c in kube.statuses[NS, "web"]["conditions"]
                   if c["type"] == "Ready")
    assert message.startswith("spec.guardrails[1].query: ") and "payroll" in message
    assert "4242" not in str(kube.statuses[NS, "web"])


@pytest.mark.parametrize(("error", "scaled"), [
    (NoData("the query returned no series"), True),
    (AmbiguousQuery("the query returned 2 series"), True),
    (PrometheusUnavailable("connection refused"), False),
    (BadQuery("parse error"), False),
])
def test_a_guardrail_scales_up_while_the_rate_query_fails(error: Exception,
                                                          scaled: bool) -> None:
    """The arrival rate unreadable (a renamed metric: no series) must not hold pods at
    100 % CPU: the guardrail is read and may scale up. Not while Prometheus is down (every
    read would time out) or rejects the rate query (the spec is fixed first)."""
    controller, kube, source, _ = setup()
    kube.replicas[NS, "web"] = 10
    asked: list[str] = []

    def read_value(query: str, *, at: float) -> float:
        asked.append(query)
        return 0.95

    source.read_value = read_value  # type: ignore[attr-defined]
    source.error = error
    controller.cycle(policy(guardrails=[{"name": "cpu", "query": "avg(cpu)", "target": 0.7}]))
    assert kube.replicas[NS, "web"] == (14 if scaled else 10)  # ceil(10 × 0.95 / 0.7)
    assert bool(asked) == scaled
    status = kube.statuses[NS, "web"]
    assert conditions(kube)["MetricsAvailable"][0] == "False"
    if scaled:
        assert "GuardrailRaised" in status["reasons"]
        assert status["guardrail"]["decidedBy"] == "cpu"
        assert conditions(kube)["ScalingActive"] == ("False", "HoldingReplicas")


def test_a_new_hpa_is_noticed_within_the_list_ttl() -> None:
    # The namespace's autoscalers are listed once per few seconds, not per policy per cycle.
    controller, kube, _, clock = setup(rate=100.0)
    controller.cycle(policy())
    assert len(kube.scale_writes) == 1
    kube.hpas = [{"metadata": {"name": "web-hpa"},
                  "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}}}]
    clock.now += AUTOSCALERS_TTL_SECONDS
    controller.cycle(with_status(policy(), kube))
    assert conditions(kube)["ScalingActive"] == ("False", "ConflictingAutoscaler")


def test_a_lost_status_write_does_not_scale_again_beyond_the_rate_limit() -> None:
    # The /scale write worked, the status patch did not: kopf's body still has the old
    # status. The retry must plan from the state just committed (the scale event in it),
    # not grant the rate limit's allowance again, nor post ScaledUp again; and it backs off.
    controller, kube, _, clock = setup(rate=100.0)
    body = policy(behavior={"scaleUp": {"policies": [
        {"type": "Pods", "value": 1, "periodSeconds": 600}]}})
    body["metadata"]["uid"] = "uid-1"
    kube.fail_status_patches = 2
    delays = []
    for _ in range(3):
        delays.append(controller.cycle(body))  # kopf's view: no status was ever written
        clock.now += delays[-1]
    assert kube.scale_writes == [(NS, "web", 3)]  # one pod per 600 s, as the policy says
    assert delays[:2] == [controller.settings.retry_seconds, 2 * controller.settings.retry_seconds]
    assert delays[2] == 30
    status = kube.statuses[NS, "web"]
    assert [e[1] for e in status["planState"]["scaleEvents"]] == [1]
    assert [e[1] for e in kube.events].count("ScaledUp") == 1
    # The same name created again is another policy: it starts from its own status.
    again = policy()
    again["metadata"]["uid"] = "uid-2"
    clock.now += 30
    controller.cycle(again)
    assert kube.statuses[NS, "web"]["planState"]["scaleEvents"][0][1] > 0


FORBIDDEN = KubeError(403, "Forbidden", 'deployments.apps "web" is forbidden: User '
                                        '"system:serviceaccount:ops:forescale" cannot get '
                                        'resource "deployments/scale"')


@pytest.mark.parametrize(("fault", "reason", "needs"), [
    ("fail_scale_reads", "TargetForbidden", "get and patch on deployments/scale"),
    ("fail_autoscaler_lists", "AutoscalersForbidden", "list on horizontalpodautoscalers"),
    ("fail_leases", "LeaseForbidden", "get, create, update and delete on leases"),
])
def test_a_forbidden_read_is_a_condition_and_an_event_not_a_silent_retry(
        fault: str, reason: str, needs: str) -> None:
    # An RBAC rule missing for the target's kind, the autoscalers or the Leases: retrying
    # every 2 s changes nothing. The status and one Warning say what to grant; nothing is
    # scaled; the policy is read again once a period (the rule may be added meanwhile).
    controller, kube, _, clock = setup(rate=100.0)
    setattr(kube, fault, FORBIDDEN)
    delays = []
    for _ in range(2):
        delays.append(controller.cycle(with_status(policy(), kube)))
        clock.now += delays[-1]
    assert delays == [30, 30]
    assert conditions(kube)["ScalingActive"] == ("False", reason)
    active = next(c for c in kube.statuses[NS, "web"]["conditions"]
                  if c["type"] == "ScalingActive")
    assert needs in active["message"]
    assert [e[:2] for e in kube.events if e[0] == "Warning"] == [("Warning", reason)]
    assert kube.scale_writes == []
    setattr(kube, fault, None)  # the rule is granted: scaling resumes at the next cycle
    controller.cycle(with_status(policy(), kube))
    assert conditions(kube)["ScalingActive"] == ("True", "ScalingEnabled")
    assert kube.scale_writes != []


def test_an_unreachable_api_is_retried_with_backoff() -> None:
    controller, kube, _, clock = setup(rate=100.0)
    kube.fail_scale_reads = KubeError(0, "Unreachable", "ConnectionRefusedError")
    delays = []
    for _ in range(6):
        delays.append(controller.cycle(policy()))
        clock.now += delays[-1]
    assert delays == [2, 4, 8, 16, 30, 30]
    assert controller.metrics.errors.labels("KubernetesApi")._value.get() == 6
    kube.fail_scale_reads = None
    assert controller.cycle(policy()) == 30


def test_after_release_all_no_cycle_takes_the_lease_or_scales() -> None:
    # SIGTERM: the Leases are released; a cycle that runs afterwards (it was queued, or
    # still running) must neither take the Lease again nor write /scale nor a status, or
    # the process exits holding the Lease and the handover waits a Lease duration.
    controller, kube, source, clock = setup(rate=100.0)
    controller.cycle(policy())
    writes, status = list(kube.scale_writes), copy.deepcopy(kube.statuses[NS, "web"])
    assert controller.release_all() == 1 and kube.leases == {}
    source.rate = 1000.0  # a cycle now would scale up
    clock.now += 30
    controller.cycle(with_status(policy(), kube))
    assert kube.leases == {}
    assert kube.scale_writes == writes
    assert kube.statuses[NS, "web"] == status


class GatedKube(FakeKube):
    """Holds the cycle thread's next get_lease until the test opens the gate: before the
    read, or with ``after_read`` once it has read (and is about to act on what it read)."""

    def __init__(self, *, after_read: bool = False) -> None:
        super().__init__()
        self.after_read = after_read
        self.gated: threading.Thread | None = None
        self.entered, self.gate = threading.Event(), threading.Event()

    def get_lease(self, namespace: str, name: str) -> Any:
        lease = super().get_lease(namespace, name) if self.after_read else None
        if threading.current_thread() is self.gated:
            self.gated = None
            self.entered.set()
            assert self.gate.wait(5)
        return lease if self.after_read else super().get_lease(namespace, name)


def test_release_all_waits_for_a_lease_call_in_progress() -> None:
    # A cycle's Lease renewal has begun (it is past the stopping check) when SIGTERM
    # comes: releasing at once would let that renewal take the Lease again after the
    # release. release_all waits for it, then releases.
    controller, _, _, clock = setup(rate=100.0)
    kube = GatedKube()
    kube.replicas[NS, "web"] = 2
    controller.kube = kube
    controller.lease = LeaseLock(kube, identity="op-a")
    controller.cycle(policy())
    assert LEASE in kube.leases
    clock.now += 30
    cycle = threading.Thread(target=controller.cycle, args=(with_status(policy(), kube),))
    kube.gated = cycle
    cycle.start()
    assert kube.entered.wait(5)
    released: list[int] = []
    stopper = threading.Thread(target=lambda: released.append(controller.release_all()))
    stopper.start()
    stopper.join(0.2)
    assert stopper.is_alive()  # waiting for the renewal in progress
    kube.gate.set()
    cycle.join(5)
    stopper.join(5)
    assert released == [1]
    assert kube.leases == {}


def test_a_missing_target_is_reported_as_such() -> None:
    """The runbook's row for it: fix spec.scaleTargetRef (the spec itself is valid)."""
    controller, kube, _, _ = setup()
    controller.cycle(policy(scaleTargetRef={"apiVersion": "apps/v1", "kind": "Deployment",
                                            "name": "gone"}))
    assert conditions(kube)["Ready"] == ("False", "TargetNotFound")
    assert conditions(kube)["ScalingActive"] == ("False", "TargetNotFound")


def _series(controller: Controller) -> dict[str, float]:
    """The policy's exported samples: name{extra labels} → value."""
    out = {}
    for metric in controller.metrics.registry.collect():
        for s in metric.samples:
            if s.labels.get("policy") == "web":
                extra = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())
                                 if k not in ("namespace", "policy"))
                out[f"{s.name}{{{extra}}}"] = s.value
    return out


def test_a_cycle_without_a_plan_leaves_no_series_of_the_last_plan() -> None:
    """The target is deleted: the status says no forecast was made, and the metrics must
    not go on saying the moving average serves and sizing wants more than forescale sets
    (ForescaleForecastDegraded and ForescaleSLOAtRisk fired on the stale values)."""
    controller, kube, _, clock = setup(rate=100.0)
    controller.cycle(policy())
    before = _series(controller)
    assert before["forescale_serving_model{model=ma}"] == 1.0
    assert "forescale_recommended_replicas{}" in before
    del kube.replicas[NS, "web"]
    clock.now += 30
    controller.cycle(with_status(policy(), kube))
    assert conditions(kube)["ScalingActive"] == ("False", "TargetNotFound")
    after = _series(controller)
    assert after["forescale_condition{status=False,type=ScalingActive}"] == 1.0
    assert after["forescale_condition_reason{reason=TargetNotFound,type=ScalingActive}"] == 1
    assert {k for k in after if not k.startswith("forescale_condition")} == set()


def test_a_hold_leaves_no_recommendation_or_forecast_of_the_last_plan() -> None:
    """Prometheus stops answering: the plan holds without a recommendation or a forecast;
    the last ones must not stay exported as if current."""
    from forescale.adapters.prometheus import PrometheusUnavailable

    controller, kube, source, clock = setup(rate=100.0)
    controller.cycle(policy())
    assert "forescale_recommended_replicas{}" in _series(controller)
    source.error = PrometheusUnavailable("connection refused")
    clock.now += 30
    controller.cycle(with_status(policy(), kube))
    assert conditions(kube)["MetricsAvailable"] == ("False", "PrometheusUnavailable")
    after = _series(controller)
    for name in ("forescale_recommended_replicas", "forescale_forecast_mean_arrival_rate",
                 "forescale_forecast_lower_arrival_rate",
                 "forescale_forecast_upper_arrival_rate", "forescale_forecast_arrival_rate",
                 "forescale_observed_arrival_rate"):
        assert f"{name}{{}}" not in after, name
    assert after["forescale_desired_replicas{}"] == kube.replicas[NS, "web"]
    assert after["forescale_serving_model{model=ma}"] == 0.0


@pytest.mark.parametrize("budget", [0.25, 0.3, 0.5])
def test_a_violation_budget_above_the_miss_levels_range_keeps_the_state(
        budget: float, caplog: pytest.LogCaptureFixture) -> None:
    """A budget above 0.25 (the CRD allows 0.5) was stored as the miss level, which the
    state's reader refuses: every cycle started from the initial state, so the scale-down
    stabilisation and the cooldown never held (replicas fell 14 → 4 a minute after the
    traffic did, with a 900 s window)."""
    controller, kube, source, clock = setup(rate=100.0)
    kube.replicas[NS, "web"] = 10
    body = policy(decisionPeriodSeconds=60, slo={"violationBudget": budget},
                  behavior={"cooldownSeconds": 600,
                            "scaleDown": {"stabilizationWindowSeconds": 900}})
    seen = []
    for minute in range(6):
        if minute == 2:
            source.rate = 10.0
        controller.cycle(with_status(body, kube))
        seen.append(kube.replicas[NS, "web"])
        clock.now += 60
    assert seen[2:] == [seen[1]] * 4, seen
    assert "status.planState" not in caplog.text


def test_a_target_at_zero_replicas_is_left_there_as_the_hpa_does() -> None:
    """Scaled to zero by hand (maintenance, an incident), the target was scaled back up at
    the next cycle, even with no metrics at all. As the HPA does, zero now disables scaling
    until the target is scaled up again; a pin still applies."""
    controller, kube, source, clock = setup(rate=100.0)
    kube.replicas[NS, "web"] = 0
    controller.cycle(policy())
    assert kube.scale_writes == [] and kube.replicas[NS, "web"] == 0
    assert conditions(kube)["ScalingActive"] == ("False", "ScalingDisabled")
    source.error = __import__("forescale.adapters.prometheus", fromlist=["NoData"]).NoData(
        "no data")
    clock.now += 30
    controller.cycle(with_status(policy(), kube))
    assert kube.scale_writes == []
    pinned = policy()
    pinned["metadata"]["annotations"] = {"forescale.dev/paused-replicas": "3"}
    source.error = None
    clock.now += 30
    controller.cycle(with_status(pinned, kube))
    assert kube.replicas[NS, "web"] == 3
    kube.replicas[NS, "web"] = 1  # scaled up again by hand: forescale takes over
    clock.now += 30
    controller.cycle(with_status(policy(), kube))
    assert kube.replicas[NS, "web"] > 1
    assert conditions(kube)["ScalingActive"] == ("True", "ScalingEnabled")
