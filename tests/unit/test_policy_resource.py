"""policy_from_resource: one typed, validated Policy from a ScalingPolicy object; nothing
reads the raw spec after it."""

from __future__ import annotations

from typing import Any

import pytest

from forescale.core.errors import InvalidInputError
from forescale.core.spec import PolicySpec
from forescale.policy import (
    MetricsSource,
    ScaleTarget,
    policy_from_resource,
    target_of,
)

REF = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}


def body(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": "shop", "name": "web", "generation": 3},
            "spec": {"scaleTargetRef": REF,
                     "metrics": {"query": "sum(rate(x[2m]))"},
                     "serviceRatePerReplica": 10, **spec}}


def test_defaults_are_applied_once() -> None:
    policy = policy_from_resource(body())
    assert policy.key == "shop/web" and policy.generation == 3
    assert policy.mode == "Scale"
    assert policy.target == ScaleTarget(api_version="apps/v1", kind="Deployment", name="web")
    assert policy.metrics == MetricsSource(query="sum(rate(x[2m]))", prometheus_url=None)
    assert policy.spec == PolicySpec(service_rate_per_replica=10)
    assert policy.decision_period_seconds == 60.0


def test_every_field_reaches_the_typed_policy() -> None:
    policy = policy_from_resource(body(
        mode="Observe", decisionPeriodSeconds=30,
        scaleTargetRef={"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
                        "name": "web.v2"},
        metrics={"query": "up", "prometheusUrl": "https://prom.monitoring:9090/prefix"}))
    assert policy.mode == "Observe"
    assert policy.decision_period_seconds == 30
    assert policy.target == ScaleTarget(api_version="argoproj.io/v1alpha1", kind="Rollout",
                                        name="web.v2")
    assert policy.metrics.prometheus_url == "https://prom.monitoring:9090/prefix"


@pytest.mark.parametrize(("resource", "message"), [
    ({"spec": {}}, "metadata must be a mapping"),
    ({"metadata": {"name": "x"}, "spec": {}}, "metadata.namespace and metadata.name"),
    ({**body(), "spec": None}, "spec must be a mapping, got None"),
    (body(scaleTargetRef={**REF, "name": "../../victim/deployments/db"}),
     "spec.scaleTargetRef.name must be a DNS-1123 name"),
    (body(serviceRatePerReplica=1e-30), "spec.serviceRatePerReplica must be in"),
])
def test_invalid_resources_are_one_line(resource: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message.replace("(", r"\(").replace(".", r"\.")):
        policy_from_resource(resource)


def test_target_of_survives_an_invalid_spec_but_not_a_bad_name() -> None:
    # A policy being deleted releases its Lease even if its spec no longer validates...
    assert target_of(body(serviceRatePerReplica=-1)) == ScaleTarget(
        api_version="apps/v1", kind="Deployment", name="web")
    # ...but a name that is not a DNS-1123 name never becomes a Lease name or a path.
    assert target_of(body(scaleTargetRef={**REF, "name": "../x"})) is None
    assert target_of({"spec": None}) is None
