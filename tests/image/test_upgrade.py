"""The upgrade story, with the real helm and a real kube-apiserver: ``helm upgrade
--reset-then-reuse-values`` from the previous chart keeps the CRD (updated in place) and the
users' ScalingPolicies, keeps the user's overrides and takes the new chart's defaults;
``--reuse-values`` fails on the same upgrade, which is why the docs never use it.

There is no earlier release: the chart's first commit (``PREVIOUS``, same version 0.1.0)
stands in for the previous chart, taken from git history. Needs the control plane's
binaries (``make controlplane``, tests/support/controlplane.py); skipped with the reason
when they are not built, and an error under ``FORESCALE_IMAGE_API=controlplane``.
"""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.image.conftest import CHART, CRD, _control_plane_module
from tests.image.podman import REPO
from tests.support.cluster import Cluster

#: The chart's first commit: the oldest chart a user can have installed.
PREVIOUS = "f47cc3c"
RELEASE = "forescale"
NAMESPACE = "forescale"
CRD_NAME = "scalingpolicies.forescale.dev"
CRDS = "apiextensions.k8s.io/v1/customresourcedefinitions"
POLICIES = "forescale.dev/v1alpha1/scalingpolicies"
PROMETHEUS = "http://prometheus.example:9090"


@pytest.fixture(scope="module")
def plane() -> Iterator[Any]:
    module = _control_plane_module()
    if module is None:
        pytest.skip("needs the real control plane and helm (make controlplane)")
    with module.running_control_plane() as p:
        yield p


@pytest.fixture(scope="module")
def previous_chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("previous")
    archive = subprocess.run(["git", "-C", str(REPO), "archive", PREVIOUS, "charts/forescale"],
                             capture_output=True, check=False)
    if archive.returncode != 0:
        pytest.fail(f"git archive {PREVIOUS} failed (a shallow clone?): "
                    f"{archive.stderr.decode()[-500:]}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(out, filter="data")
    return out / "charts" / "forescale"


def _spec_fields(crd: dict[str, Any]) -> set[str]:
    [version] = [v for v in crd["spec"]["versions"] if v.get("storage")]
    return set(version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"])


def test_upgrade_from_the_previous_chart_keeps_the_crd_and_the_policies(
        plane: Any, previous_chart: Path) -> None:
    admin = Cluster(plane.admin_kubeconfig)
    try:
        installed = plane.helm("install", RELEASE, str(previous_chart), "--namespace",
                               NAMESPACE, "--create-namespace",
                               "--set", f"prometheus.url={PROMETHEUS}",
                               "--set", "replicaCount=1", check=False)
        assert installed.returncode == 0, installed.stderr
        crd_before = admin.get(CRDS, CRD_NAME)
        assert crd_before is not None
        admin.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
        spec = {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                   "name": "checkout"},
                "metrics": {"query": 'sum(rate(http_requests_total{job="checkout"}[2m]))'},
                "serviceRatePerReplica": 10, "minReplicas": 2, "maxReplicas": 20}
        policy = admin.create({"apiVersion": "forescale.dev/v1alpha1", "kind": "ScalingPolicy",
                               "metadata": {"name": "checkout", "namespace": "shop"},
                               "spec": spec})

        # --reuse-values takes the old release's values whole: a key the new chart's
        # templates need (and its defaults would give) is missing, and the upgrade fails.
        reused = plane.helm("upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE,
                            "--reuse-values", "--dry-run=server", check=False)
        assert reused.returncode != 0 and "nil pointer" in reused.stderr, reused.stderr

        upgraded = plane.helm("upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE,
                              "--reset-then-reuse-values", check=False)
        assert upgraded.returncode == 0, upgraded.stderr

        # The CRD: the same object (never deleted, so no policy was), now the new schema.
        crd_after = admin.get(CRDS, CRD_NAME)
        assert crd_after is not None
        assert crd_after["metadata"]["uid"] == crd_before["metadata"]["uid"]
        assert _spec_fields(crd_after) == _spec_fields(yaml.safe_load(CRD.read_text()))
        # The policy: the same object with the user's spec.
        kept = admin.get(POLICIES, "checkout", namespace="shop")
        assert kept is not None and kept["metadata"]["uid"] == policy["metadata"]["uid"]
        assert {k: kept["spec"][k] for k in spec} == spec
        # The user's overrides are kept, the new chart's defaults are taken.
        values = json.loads(plane.helm("get", "values", RELEASE, "--namespace", NAMESPACE,
                                       "--output", "json").stdout)
        assert values == {"prometheus": {"url": PROMETHEUS}, "replicaCount": 1}
        deployment = admin.get("apps/v1/deployments", RELEASE, namespace=NAMESPACE)
        assert deployment is not None and deployment["spec"]["replicas"] == 1
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        assert f"--prometheus-url={PROMETHEUS}" in container["args"]
        # A default only the new chart has (Leases in the operator's namespace) is in force.
        previous_template = (previous_chart / "templates" / "deployment.yaml").read_text()
        assert "FORESCALE_LEASE_NAMESPACE" not in previous_template
        assert {"name": "FORESCALE_LEASE_NAMESPACE", "valueFrom": {"fieldRef": {
            "apiVersion": "v1", "fieldPath": "metadata.namespace"}}} in container["env"]
        history = json.loads(plane.helm("history", RELEASE, "--namespace", NAMESPACE,
                                        "--output", "json").stdout)
        assert [(h["revision"], h["status"]) for h in history] == [(1, "superseded"),
                                                                     (2, "deployed")]
    finally:
        admin.close()
