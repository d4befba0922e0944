"""What a platform team sees with the real ``kubectl`` against a real kube-apiserver (and
kube-controller-manager, which aggregates ClusterRoles): ``kubectl explain`` is never blank
for a ScalingPolicy field, and a namespace editor or viewer gets exactly the access the
chart's aggregated roles promise, through the built-in ``edit`` and ``view`` roles."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import controlplane
from tests.support.controlplane import ControlPlane

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "forescale"
CRD = yaml.safe_load((ROOT / "crds" / "scalingpolicies.forescale.dev.yaml").read_text())
NAMESPACE = "team"


@pytest.fixture(scope="module")
def plane() -> Iterator[ControlPlane]:
    with controlplane.running_control_plane(controlplane.require_binaries()) as p:
        done = p.helm("install", "forescale", str(CHART), "--namespace", "forescale",
                      "--create-namespace", check=False)
        assert done.returncode == 0, done.stderr
        # The CRD's schema reaches the published OpenAPI a moment after it is Established.
        deadline = time.monotonic() + 60
        while p.kubectl("explain", "scalingpolicies.spec", check=False).returncode != 0:
            assert time.monotonic() < deadline, p.kubectl(
                "explain", "scalingpolicies.spec", check=False).stderr
            time.sleep(0.5)
        yield p


def field_paths(schema: dict[str, Any], path: str = "") -> list[str]:
    """kubectl explain's paths: dotted field names, list items explained through the list."""
    found = []
    for key, sub in (schema.get("properties") or {}).items():
        found.append(f"{path}.{key}")
        found += field_paths(sub, f"{path}.{key}")
    if "items" in schema:
        found += field_paths(schema["items"], path)
    return found


def test_kubectl_explain_is_never_blank(plane: ControlPlane) -> None:
    root = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    paths = [p for p in field_paths(root) if not p.startswith((".metadata", ".apiVersion",
                                                               ".kind"))]
    assert len(paths) > 100
    blank = []
    for path in paths:
        out = plane.kubectl("explain", f"scalingpolicies{path}").stdout
        description = out.split("DESCRIPTION:", 1)[1].split("\nFIELDS:", 1)[0].strip()
        if not description or description == "<empty>":
            blank.append(path)
    assert blank == [], f"kubectl explain is blank for {blank}"
    # And it is the CRD's own text (here: the scale-to-zero decision).
    out = plane.kubectl("explain", "scalingpolicies.spec.minReplicas").stdout
    assert "forescale does not scale to zero" in " ".join(out.split())


def can_i(plane: ControlPlane, user: str, verb: str, resource: str, *extra: str) -> bool:
    done = plane.kubectl("auth", "can-i", verb, resource, *extra, "--as", user,
                         "-n", NAMESPACE, check=False)
    return done.stdout.strip() == "yes"


def test_namespace_editors_and_viewers_get_the_aggregated_access(plane: ControlPlane) -> None:
    plane.kubectl("create", "namespace", NAMESPACE)
    plane.kubectl("create", "rolebinding", "jane-edit", "--clusterrole=edit",
                  "--user=jane", "-n", NAMESPACE)
    plane.kubectl("create", "rolebinding", "vic-view", "--clusterrole=view",
                  "--user=vic", "-n", NAMESPACE)
    policies = "scalingpolicies.forescale.dev"
    # kube-controller-manager aggregates the chart's roles into edit/view asynchronously.
    deadline = time.monotonic() + 60
    while not (can_i(plane, "jane", "create", policies)
               and can_i(plane, "vic", "list", policies)):
        assert time.monotonic() < deadline, "the aggregated roles never reached edit/view"
        time.sleep(0.5)
    for verb in ("get", "list", "watch", "create", "update", "patch", "delete"):
        assert can_i(plane, "jane", verb, policies), verb
    for verb in ("get", "list", "watch"):
        assert can_i(plane, "vic", verb, policies), verb
    for verb in ("create", "patch", "delete"):
        assert not can_i(plane, "vic", verb, policies), verb
    # Only the operator writes the status.
    assert can_i(plane, "jane", "get", policies, "--subresource=status")
    assert not can_i(plane, "jane", "patch", policies, "--subresource=status")
    # An editor can pause a policy with an annotation, as the runbook says.
    manifest = {"apiVersion": "forescale.dev/v1alpha1", "kind": "ScalingPolicy",
                "metadata": {"name": "web", "namespace": NAMESPACE},
                "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                            "name": "web"},
                         "metrics": {"query": "sum(rate(x[2m]))"},
                         "serviceRatePerReplica": 10}}
    plane.kubectl("apply", "--as", "jane", "-f", "-", input_text=yaml.safe_dump(manifest))
    plane.kubectl("annotate", "--as", "jane", "-n", NAMESPACE, "scalingpolicy", "web",
                  "forescale.dev/paused=true")
    denied = plane.kubectl("annotate", "--as", "vic", "-n", NAMESPACE, "scalingpolicy",
                           "web", "forescale.dev/paused-replicas=3", check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()


def test_the_server_refuses_scale_to_zero_and_bad_schedules_with_our_words(
        plane: ControlPlane) -> None:
    def apply(spec: dict[str, Any]) -> str:
        body = {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                   "name": "web"},
                "metrics": {"query": "sum(rate(x[2m]))"}, "serviceRatePerReplica": 10,
                **spec}
        manifest = {"apiVersion": "forescale.dev/v1alpha1", "kind": "ScalingPolicy",
                    "metadata": {"name": "bad", "namespace": "default"}, "spec": body}
        done = plane.kubectl("apply", "-f", "-", input_text=yaml.safe_dump(manifest),
                             check=False)
        assert done.returncode != 0, done.stdout
        return " ".join(done.stderr.split())

    assert "forescale does not scale to zero" in apply({"minReplicas": 0})
    assert "a schedule sets minReplicas, maxReplicas or forecastMultiplier" in apply(
        {"schedules": [{"name": "x", "cron": "0 9 * * 1", "durationSeconds": 600}]})
    assert "Duplicate value" in apply({"schedules": [
        {"name": "x", "cron": "0 9 * * 1", "durationSeconds": 600, "minReplicas": 2},
        {"name": "x", "cron": "0 9 * * 2", "durationSeconds": 600, "minReplicas": 2}]})
