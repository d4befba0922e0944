"""Prometheus outages, invalid specs and deletion, against the real operator process."""

from __future__ import annotations

import pytest

from forescale.controller.kube import KubeError
from tests.integration.conftest import World

pytestmark = pytest.mark.integration


def test_prometheus_outage_holds_replicas_and_recovers(world: World) -> None:
    world.deployment("web", replicas=1)
    world.policy("web", "web")
    world.start_operator("operator-a")
    world.wait(lambda: world.replicas("web") > 1, what="a first scale-up")
    world.wait(lambda: (c := world.condition("web", "MetricsAvailable")) and
               c["status"] == "True", what="MetricsAvailable=True")
    scaled = world.replicas("web")
    writes_before = len(world.scale_writes())
    world.prometheus.stop()
    down = world.wait(lambda: (c := world.condition("web", "MetricsAvailable")) and
                      c["status"] == "False" and c, what="MetricsAvailable=False")
    assert down["reason"] == "PrometheusUnavailable"
    assert world.condition("web", "ScalingActive")["reason"] == "HoldingReplicas"  # type: ignore[index]
    assert world.replicas("web") >= scaled
    for entry in world.scale_writes()[writes_before:]:
        assert entry.replicas >= scaled, "scaled down without data"
    world.prometheus.start()
    world.wait(lambda: (c := world.condition("web", "MetricsAvailable")) and
               c["status"] == "True", what="MetricsAvailable=True again")
    assert any(e["reason"] == "PrometheusUnavailable" for e in world.events())


def test_a_guardrail_scales_up_while_the_rate_query_finds_no_series(world: World) -> None:
    """The arrival rate's metric renamed away (NoData) holds the replicas, but the CPU
    guardrail Prometheus still answers raises them, as the HPA would, up to maxReplicas."""
    world.deployment("web", replicas=10)
    world.policy("web", "web", metrics={"query": "sum(rate(renamed_away_total[2m]))"},
                 maxReplicas=14,
                 guardrails=[{"name": "cpu", "query": "vector(0.95)", "target": 0.7}])
    world.start_operator("operator-a")
    world.wait(lambda: world.replicas("web") == 14, what="the guardrail's scale-up to 14")
    metrics = world.wait(lambda: (c := world.condition("web", "MetricsAvailable")) and
                         c["status"] == "False" and c, what="MetricsAvailable=False")
    assert metrics["reason"] == "NoData"
    status = world.get_policy("web")["status"]  # type: ignore[index]
    assert status["guardrail"]["decidedBy"] == "cpu"
    assert all(w.replicas >= 10 for w in world.scale_writes())


def test_invalid_specs_are_reported_and_other_policies_carry_on(world: World) -> None:
    world.deployment("web", replicas=1)
    world.policy("good", "web")
    try:
        world.policy("min-over-max", "web", minReplicas=10, maxReplicas=2)
        reported = ["min-over-max"]
    except KubeError as exc:  # a real apiserver evaluates the CRD's CEL rule
        assert exc.status == 422 and "minReplicas" in exc.message, exc
        reported = []
    world.policy("bad-query", "web", metrics={"query": "sum(rate(http_requests_total[2m]"})
    world.policy("no-target", "ghost")
    world.policy("unknown-model", "web", mode="Observe",
                 forecast={"models": ["lstm", "arima"], "historySeconds": 3600,
                           "lstm": {"modelRef": "no-such-model"}})
    world.start_operator("operator-a")
    expected = {**dict.fromkeys((*reported, "bad-query"), "InvalidSpec"),
                "no-target": "TargetNotFound"}
    for name, reason in expected.items():
        ready = world.wait(lambda n=name, r=reason: (c := world.condition(n, "Ready")) and
                           c["reason"] == r and c, what=f"{name} {reason}")
        assert ready["status"] == "False"
    world.wait(lambda: (c := world.condition("good", "Ready")) and c["status"] == "True",
               what="the good policy decides")
    model = world.wait(lambda: (c := world.condition("unknown-model", "ModelReady")) and
                       c["status"] == "False" and c, what="ModelReady=False")
    assert model["reason"] == "ArtifactMissing"
    assert world.get_policy("unknown-model")["status"]["servingModel"] == "arima"  # type: ignore[index]
    warned = {(e["involvedObject"]["name"], e["reason"]) for e in world.events()
              if e["type"] == "Warning"}
    assert set(expected.items()) <= warned


def test_deleting_a_policy_releases_its_lease_and_removes_the_finalizer(world: World) -> None:
    world.deployment("web", replicas=1)
    world.policy("web", "web")
    world.start_operator("operator-a")
    lease = "forescale-deployment-web"
    world.wait(lambda: world.lease("web"), what="the lease")
    assert world.get_policy("web")["metadata"]["finalizers"] == [  # type: ignore[index]
        "forescale.dev/release-lease"]
    world.delete_policy("web")
    world.wait(lambda: world.get_policy("web") is None, what="the policy gone")
    assert world.lease("web") is None
    assert any(e.type == "DELETED" and e.name == lease for e in world.leases.snapshot())


def test_a_conflicting_hpa_blocks_scaling_and_says_so(world: World) -> None:
    world.deployment("web", replicas=1)
    world.kube.create({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web-hpa", "namespace": world.namespace},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                    "name": "web"},
                 "minReplicas": 1, "maxReplicas": 5,
                 "metrics": [{"type": "Resource", "resource": {
                     "name": "cpu", "target": {"type": "Utilization",
                                               "averageUtilization": 80}}}]}})
    world.policy("web", "web")
    world.start_operator("operator-a")
    active = world.wait(lambda: (c := world.condition("web", "ScalingActive")) and
                        c["status"] == "False" and c, what="ScalingActive=False")
    assert active["reason"] == "ConflictingAutoscaler", active
    assert "web-hpa" in active["message"]
    world.wait(lambda: any(e["reason"] == "ConflictingAutoscaler" and e["type"] == "Warning"
                           for e in world.events()), what="a ConflictingAutoscaler event")
    assert world.scale_writes() == []
    assert world.replicas("web") == 1
