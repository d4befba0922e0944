"""The real operator process against a real API server and a real Prometheus."""

from __future__ import annotations

import pytest

from forescale.core.sizing import size
from forescale.core.spec import SLO
from tests.integration.conftest import RAMP_TO, World

pytestmark = pytest.mark.integration


def test_status_fills_in_and_the_deployment_is_scaled_up_before_the_peak(world: World) -> None:
    world.deployment("web", replicas=1)
    world.policy("web", "web")
    world.start_operator("operator-a")
    ready = world.wait(lambda: (c := world.condition("web", "Ready")) and
                       c["status"] == "True" and c, what="Ready=True")
    assert ready["reason"] == "DecisionMade"
    # Sized for the rate observed now, the target would need this many replicas:
    now_needs = size(RAMP_TO, 10, SLO(), None).replicas
    world.wait(lambda: world.replicas("web") > now_needs,
               what=f"more than {now_needs} replicas (ahead of the rising rate)")
    # A cycle writes /scale first and its status (after its Events) a moment later, and it
    # takes two cycles to get here (the first scale-up is limited to 1000 %: 1 → 11). So
    # the status read right after the replicas moved may still be the previous cycle's:
    # wait for the status of the cycle that did the scaling before asserting on it.
    status = world.wait(
        lambda: (s := (world.get_policy("web") or {}).get("status") or {}) and
        s.get("desiredReplicas", 0) >= world.replicas("web") and s,
        what="the status of the cycle that scaled the Deployment")
    assert status["observedGeneration"] == 1
    assert status["servingModel"] in ("arima", "ma")
    assert status["plannedArrivalRate"] > RAMP_TO * 0.9
    assert {c["type"] for c in status["conditions"]} == {
        "Ready", "ScalingActive", "ModelReady", "ScalingLimited", "MetricsAvailable",
        "Paused"}
    writes = world.scale_writes()
    assert writes and all(e.identity == "operator-a" for e in writes), writes
    if world.plane is not None:  # from the apiserver's audit log and managedFields
        assert world.audit_scale_writes_by_lease_holders(["web"]) >= 1
        owner = world.scale_manager("web")
        assert (owner["manager"], owner["subresource"]) == ("forescale", "scale"), owner
    lease = world.lease("web")
    assert lease is not None and lease["spec"]["holderIdentity"] == "operator-a"


def test_observe_mode_never_writes_the_target(world: World) -> None:
    world.deployment("web", replicas=1)
    world.policy("web", "web", mode="Observe")
    world.start_operator("operator-a")
    world.wait(lambda: (c := world.condition("web", "ScalingActive")) and
               c["reason"] == "ObserveMode", what="ScalingActive ObserveMode")
    world.wait(lambda: (world.get_policy("web") or {}).get("status", {}).get(
        "desiredReplicas", 0) > 1, what="a desired replicas above 1")
    assert world.scale_writes() == []
    assert world.replicas("web") == 1
