"""The chart fits how platform teams run things: namespace editors can manage policies
through the built-in roles, a drain never takes both operators down, replicas spread."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.chart.test_chart import chart, grants, of_kind, render  # noqa: F401 (fixture)

POLICIES = "scalingpolicies"


@pytest.fixture(scope="module")
def defaults(chart: Any) -> Iterator[list[dict[str, Any]]]:  # noqa: F811
    yield render(chart, {})


def aggregated(docs: list[dict[str, Any]], to: str) -> list[dict[str, Any]]:
    return [r for r in of_kind(docs, "ClusterRole")
            if r["metadata"]["labels"].get(f"rbac.authorization.k8s.io/aggregate-to-{to}")
            == "true"]


def test_edit_and_admin_may_manage_policies(defaults: list[dict[str, Any]]) -> None:
    for to in ("edit", "admin"):
        (role,) = aggregated(defaults, to)
        assert role["metadata"]["name"] == "fs-forescale-edit"
        granted = grants(role["rules"])
        for verb in ("get", "list", "watch", "create", "update", "patch", "delete"):
            assert ("forescale.dev", POLICIES, verb) in granted
        # People read the status; only the operator writes it.
        assert ("forescale.dev", f"{POLICIES}/status", "get") in granted
        assert not {g for g in granted if g[1].endswith("/status") and g[2] in (
            "update", "patch", "create", "delete")}


def test_view_may_only_read(defaults: list[dict[str, Any]]) -> None:
    (role,) = aggregated(defaults, "view")
    assert grants(role["rules"]) == {("forescale.dev", r, v)
                                     for r in (POLICIES, f"{POLICIES}/status")
                                     for v in ("get", "list", "watch")}
    # Nothing binds them: the built-in roles aggregate them.
    names = {r["metadata"]["name"] for r in of_kind(defaults, "ClusterRole")}
    bound = {b["roleRef"]["name"] for b in of_kind(defaults, "ClusterRoleBinding")}
    assert {"fs-forescale-edit", "fs-forescale-view"} <= names
    assert not bound & {"fs-forescale-edit", "fs-forescale-view"}


def test_aggregation_can_be_switched_off(chart: Any) -> None:  # noqa: F811
    docs = render(chart, {"rbac": {"aggregateToDefaultRoles": False}})
    assert not aggregated(docs, "edit") and not aggregated(docs, "view")


def test_pdb_for_two_replicas_not_for_one(chart: Any,  # noqa: F811
                                          defaults: list[dict[str, Any]]) -> None:
    (pdb,) = of_kind(defaults, "PodDisruptionBudget")
    (deployment,) = of_kind(defaults, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == \
        deployment["spec"]["selector"]["matchLabels"]
    # One replica with a budget of one unavailable... or minAvailable 1 would block drains:
    # no budget at all for a single replica.
    assert not of_kind(render(chart, {"replicaCount": 1}), "PodDisruptionBudget")
    assert not of_kind(render(chart, {"podDisruptionBudget": {"enabled": False}}),
                       "PodDisruptionBudget")


def test_topology_spread(chart: Any, defaults: list[dict[str, Any]]) -> None:  # noqa: F811
    (deployment,) = of_kind(defaults, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (spread,) = pod["topologySpreadConstraints"]
    assert spread["topologyKey"] == "topology.kubernetes.io/zone"
    assert spread["whenUnsatisfiable"] == "ScheduleAnyway"
    assert spread["labelSelector"]["matchLabels"] == deployment["spec"]["selector"][
        "matchLabels"]
    custom = [{"maxSkew": 2, "topologyKey": "kubernetes.io/hostname",
               "whenUnsatisfiable": "DoNotSchedule",
               "labelSelector": {"matchLabels": {"app": "x"}}}]
    (deployment,) = of_kind(render(chart, {"topologySpreadConstraints": custom}),
                            "Deployment")
    assert deployment["spec"]["template"]["spec"]["topologySpreadConstraints"] == custom
