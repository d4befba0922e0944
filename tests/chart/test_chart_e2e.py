"""The user's path, end to end, against a real API server: the real ``helm`` installs the
chart (CRD included) into a real kube-apiserver with RBAC; the operator runs with the token
of the chart's ServiceAccount, so the real authorizer enforces the chart's RBAC; the real
``kubectl`` applies the examples and shows the printer columns, and the server itself
rejects specs that break the schema or a CEL rule; ``helm upgrade`` and ``helm uninstall``
leave what they should.

One control plane for the module (its own, not the integration scenarios': this one gets
the CRD from Helm). The tests run in file order and share the release; the last one
upgrades and uninstalls it.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import (
    LABELS,
    QUERY,
    QUERY_SELECTOR,
    RAMP_TO,
    ContinuingCounter,
    ramp_history,
)
from tests.support import controlplane, polling
from tests.support.cluster import Cluster
from tests.support.controlplane import ControlPlane
from tests.support.prometheus import free_port, running_prometheus

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "forescale"
EXAMPLES = ROOT / "examples"
FORESCALE = Path(sys.executable).parent / "forescale"
RELEASE = NAMESPACE = "forescale"
#: The chart's fullname for this release: its ServiceAccount, ClusterRole and Deployment.
FULLNAME = "forescale"
SERVICE_ACCOUNT_USER = f"system:serviceaccount:{NAMESPACE}:{FULLNAME}"
CRD_NAME = "scalingpolicies.forescale.dev"
POLICIES = "forescale.dev/v1alpha1/scalingpolicies"
WAIT_SECONDS = float(os.environ.get("FORESCALE_TEST_WAIT_SECONDS", "90"))


@pytest.fixture(scope="module")
def plane() -> Iterator[ControlPlane]:
    with controlplane.running_control_plane(controlplane.require_binaries()) as p:
        yield p


@pytest.fixture(scope="module")
def admin(plane: ControlPlane) -> Iterator[Cluster]:
    cluster = Cluster(plane.admin_kubeconfig)
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def installed(plane: ControlPlane, admin: Cluster) -> subprocess.CompletedProcess[str]:
    """``helm install`` of the chart with its defaults. The operator's Pods stay Pending
    (there is no scheduler or kubelet): Helm's default wait strategy (hookOnly) does not
    wait for them."""
    result = plane.helm("install", RELEASE, str(CHART), "--namespace", NAMESPACE,
                        "--create-namespace", check=False)
    assert result.returncode == 0, result.stderr
    return result


def wait(predicate: Any, what: str, timeout: float = WAIT_SECONDS) -> Any:
    return polling.wait_for(predicate, timeout=timeout, interval=0.2, what=what)


def test_helm_install_creates_the_crd_and_the_operator(plane: ControlPlane, admin: Cluster,
                                                       installed: Any) -> None:
    crd = admin.get("apiextensions.k8s.io/v1/customresourcedefinitions", CRD_NAME)
    assert crd is not None
    assert crd["metadata"]["annotations"]["meta.helm.sh/release-name"] == RELEASE
    wait(lambda: any(c["type"] == "Established" and c["status"] == "True"
                     for c in (admin.get("apiextensions.k8s.io/v1/customresourcedefinitions",
                                         CRD_NAME) or {}).get("status", {}).get(
                                             "conditions", [])), "the CRD Established")
    dep = admin.get("apps/v1/deployments", FULLNAME, namespace=NAMESPACE)
    assert dep is not None and dep["spec"]["replicas"] == 2
    # The Deployment controller acted on it: a ReplicaSet with the Deployment as owner.
    rs = wait(lambda: admin.list_objects("apps/v1/replicasets", namespace=NAMESPACE),
              "the operator's ReplicaSet")
    assert rs[0]["metadata"]["ownerReferences"][0]["name"] == FULLNAME
    assert admin.get("v1/serviceaccounts", FULLNAME, namespace=NAMESPACE) is not None
    assert admin.get("rbac.authorization.k8s.io/v1/clusterroles", FULLNAME) is not None
    listed = json.loads(plane.helm("list", "--namespace", NAMESPACE, "--output",
                                   "json").stdout)
    assert [(r["name"], r["status"]) for r in listed] == [(RELEASE, "deployed")]


def test_kubectl_applies_the_examples_and_shows_the_printer_columns(
        plane: ControlPlane, installed: Any) -> None:
    namespaces = {yaml.safe_load(p.read_text())["metadata"]["namespace"]
                  for p in EXAMPLES.glob("*.yaml")}
    for ns in sorted(namespaces - {"default"}):
        plane.kubectl("create", "namespace", ns)
    applied = plane.kubectl("apply", "-f", str(EXAMPLES), check=False)
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.count("created") == len(list(EXAMPLES.glob("*.yaml"))), \
        applied.stdout
    table = plane.kubectl("get", "scalingpolicies", "--all-namespaces").stdout
    crd = json.loads(plane.kubectl("get", "crd", CRD_NAME, "-o", "json").stdout)
    columns = [c["name"].upper() for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]
               if not c.get("priority")]
    header = table.splitlines()[0].split()
    assert header == ["NAMESPACE", "NAME", *columns], table
    assert {"TARGET", "MODE", "DESIRED"} <= set(columns), columns
    rows = {line.split()[1]: line.split() for line in table.splitlines()[1:]}
    assert set(rows) >= {"checkout", "search-api"}, table
    assert rows["checkout"][header.index("MODE")] == "Observe", table
    # The server applied the CRD's defaults: the minimal example gets the documented ones.
    got = json.loads(plane.kubectl("get", "scalingpolicy", "checkout", "-n", "shop",
                                   "-o", "json").stdout)
    assert got["spec"]["minReplicas"] == 1 and got["spec"]["maxReplicas"] == 100, got["spec"]


def _policy(name: str, namespace: str, **spec: Any) -> str:
    body = {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "metrics": {"query": "sum(rate(x[2m]))"}, "serviceRatePerReplica": 10}
    body.update(spec)
    return json.dumps({"apiVersion": "forescale.dev/v1alpha1", "kind": "ScalingPolicy",
                       "metadata": {"name": name, "namespace": namespace}, "spec": body})


@pytest.mark.parametrize(("spec", "message"), [
    ({"minReplicas": 10, "maxReplicas": 2}, "minReplicas must not exceed maxReplicas"),
    ({"serviceRatePerReplica": -1}, "spec.serviceRatePerReplica"),
    ({"mode": "Sometimes"}, 'Unsupported value: "Sometimes"'),
    ({"surprise": True}, 'unknown field "spec.surprise"'),
    ({"behavior": {"scaleUp": {"policies": [{"type": "Pods", "value": 0.5,
                                             "periodSeconds": 60}]}}},
     "a Pods rate limit's value is a whole number of pods"),
])
def test_the_server_itself_rejects_specs_that_break_the_schema_or_a_cel_rule(
        plane: ControlPlane, installed: Any, spec: dict[str, Any], message: str) -> None:
    seen = len(plane.audit())
    result = plane.kubectl("apply", "--validate=strict", "-f", "-", check=False,
                           input_text=_policy("bad", "default", **spec))
    assert result.returncode != 0, result.stdout
    assert message in result.stderr, result.stderr
    # The server's own answer (422 Invalid, or 400 for the unknown field under strict
    # field validation), not a client-side check: the audit log has the refused create.
    refused = [e for e in plane.audit()[seen:] if e.ref("resource") == "scalingpolicies"
               and e.verb == "create"]
    assert [e.code for e in refused] in ([422], [400]), [e.raw for e in refused]
    assert admin_get_policy(plane, "bad") is None


def admin_get_policy(plane: ControlPlane, name: str) -> dict[str, Any] | None:
    got = plane.kubectl("get", "scalingpolicy", name, "-n", "default", "-o", "json",
                        check=False)
    return json.loads(got.stdout) if got.returncode == 0 else None


def _operator(plane: ControlPlane, tmp: Path, namespace: str, prometheus_url: str,
              token: str) -> tuple[subprocess.Popen[bytes], Path]:
    kubeconfig = plane.kubeconfig_for_token(tmp / "sa.kubeconfig", user=SERVICE_ACCOUNT_USER,
                                            token=token, namespace=namespace)
    log = tmp / "operator.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(FORESCALE), "run", "--namespace", namespace, "--kubeconfig", str(kubeconfig),
             "--identity", "forescale-pod-0", "--prometheus-url", prometheus_url,
             "--metrics-address", "127.0.0.1", "--metrics-port", str(free_port()),
             "--lease-extra-seconds", "3", "--log-format", "text",
             # As the chart's Pod runs it: Leases in the release's namespace.
             "--lease-namespace", NAMESPACE],
            stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "OPENBLAS_NUM_THREADS": "1", "KUBECONFIG": "/nonexistent"})
    return process, log


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def test_the_operator_runs_with_the_chart_service_account_under_real_rbac(
        plane: ControlPlane, admin: Cluster, installed: Any, tmp_path: Path) -> None:
    """Every call the operator makes with the chart's ServiceAccount token is allowed;
    with one rule removed from the chart's ClusterRole, the policy shows a condition and
    a Warning Event saying so, and the operator keeps running."""
    namespace = "shop-e2e"
    admin.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    # A real ServiceAccount token from the TokenRequest API, as a Pod would mount it.
    token = plane.kubectl("create", "token", FULLNAME, "--namespace", NAMESPACE,
                          "--duration", "1h").stdout.strip()
    counter = ContinuingCounter(labels=LABELS, rate_per_second=RAMP_TO)
    now = time.time()
    history = ramp_history(now)
    counter.offset = float(history.values[-1]) + RAMP_TO * (now - history.end_seconds)
    with contextlib.ExitStack() as stack:
        live = stack.enter_context(counter)
        prom = stack.enter_context(running_prometheus(
            series=[history], scrape_targets=[live.target], scrape_interval_seconds=1.0))
        prom.wait_for_query(f"timestamp({QUERY_SELECTOR}) > {history.end_seconds}",
                            timeout_seconds=WAIT_SECONDS)
        labels = {"app": "web"}
        admin.create({"apiVersion": "apps/v1", "kind": "Deployment",
                      "metadata": {"name": "web", "namespace": namespace},
                      "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                               "template": {"metadata": {"labels": labels}, "spec": {
                                   "containers": [{"name": "c",
                                                   "image": "registry.k8s.io/pause:3.10"}]}}}})
        admin.create(json.loads(_policy(
            "web", namespace, metrics={"query": QUERY}, decisionPeriodSeconds=5,
            leadTimeSeconds=600, forecast={"models": ["arima", "ma"], "historySeconds": 3600},
            behavior={"scaleUp": {"policies": [
                {"type": "Percent", "value": 1000, "periodSeconds": 5}]}})))
        process, log = _operator(plane, tmp_path, namespace, prom.url, token)
        stack.callback(_stop, process)

        def replicas() -> int:
            dep = admin.get("apps/v1/deployments", "web", namespace=namespace) or {}
            return int(dep["spec"]["replicas"])

        def condition(ctype: str) -> dict[str, Any] | None:
            policy = admin.get(POLICIES, "web", namespace=namespace) or {}
            return next((c for c in (policy.get("status") or {}).get("conditions") or []
                         if c["type"] == ctype), None)

        try:
            wait(lambda: replicas() > 1, "the ServiceAccount's operator scaled web")
            wait(lambda: (c := condition("Ready")) and c["status"] == "True", "Ready=True")
        except AssertionError:
            raise AssertionError(log.read_text()[-4000:]) from None
        mine = [e for e in plane.audit() if e.username == SERVICE_ACCOUNT_USER]
        assert any(e.ref("subresource") == "scale" and e.code == 200 for e in mine)
        denied = [(e.verb, e.raw.get("requestURI")) for e in mine if e.code == 403]
        assert denied == [], f"the chart's RBAC denied the operator: {denied}"

        # Take "patch" off the chart's deployments/scale rule, then undo the operator's
        # scale-up: its next write is forbidden by the real authorizer.
        role = admin.get("rbac.authorization.k8s.io/v1/clusterroles", FULLNAME) or {}
        for rule in role["rules"]:
            if "deployments/scale" in rule.get("resources", []):
                rule["verbs"] = [v for v in rule["verbs"] if v != "patch"]
        original = admin.get("rbac.authorization.k8s.io/v1/clusterroles", FULLNAME) or {}
        admin.replace(role)
        plane.kubectl("scale", "deployment/web", "--replicas=1", "-n", namespace)
        try:
            blocked = wait(lambda: (c := condition("ScalingActive")) and
                           c["status"] == "False" and c, "ScalingActive=False")
        except AssertionError:
            raise AssertionError(log.read_text()[-4000:]) from None
        assert blocked["reason"] == "ScaleFailed", blocked
        assert "forbidden" in blocked["message"].lower(), blocked
        events = admin.list_objects("v1/events", namespace=namespace)
        assert any(e["reason"] == "ScaleFailed" and e["type"] == "Warning" and
                   "deployments/scale" in e["message"] for e in events), events
        assert process.poll() is None, "the operator exited"
        assert any(e.username == SERVICE_ACCOUNT_USER and e.code == 403 and
                   e.ref("subresource") == "scale" for e in plane.audit())
        assert replicas() == 1
        _stop(process)
        # Put the chart's rules back, or the next `helm upgrade` (server-side apply) would
        # meet a conflict over .rules with this test's edit.
        restored = admin.get("rbac.authorization.k8s.io/v1/clusterroles", FULLNAME) or {}
        admin.replace({**restored, "rules": original["rules"]})
        admin.patch(POLICIES, "web", {"metadata": {"finalizers": None}}, namespace=namespace)


def _kopf_crd(kind: str, scope: str) -> str:
    plural = f"{kind.lower()}s"
    return f"""
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: {plural}.kopf.dev}}
spec:
  scope: {scope}
  group: kopf.dev
  names: {{kind: {kind}, plural: {plural}, singular: {kind.lower()}}}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            status: {{type: object, x-kubernetes-preserve-unknown-fields: true}}
"""


#: kopf's peering CRDs, as kopf's peering.yaml defines them (without its example objects).
KOPF_PEERING_CRDS = _kopf_crd("ClusterKopfPeering", "Cluster") + "---" + \
    _kopf_crd("KopfPeering", "Namespaced")


def test_peering_needs_kopfs_crds_installed_first(plane: ControlPlane, admin: Cluster,
                                                  installed: Any) -> None:
    """peering.enabled: without kopf's CRDs the install fails at once with what to run (not
    with "resource mapping not found"); with them (installed by hand, as a cluster shared
    with other kopf operators has them) it creates the peering object and never takes the
    CRDs over. A second release beside the shared one, without the ScalingPolicy CRD."""
    release = "peer"
    install = ("install", release, str(CHART), "--namespace", release, "--create-namespace",
               "--set", "replicaCount=1", "--set", "peering.enabled=true",
               "--set", "crds.install=false")
    refused = plane.helm(*install, check=False)
    assert refused.returncode != 0
    assert "peering.enabled needs kopf's peering CRDs" in refused.stderr, refused.stderr
    assert "kubectl apply -f https://github.com/nolar/kopf/raw/main/peering.yaml" in \
        refused.stderr

    plane.kubectl("apply", "-f", "-", input_text=KOPF_PEERING_CRDS)
    crds = "apiextensions.k8s.io/v1/customresourcedefinitions"
    for name in ("clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"):
        wait(lambda name=name: any(
            c["type"] == "Established" and c["status"] == "True"
            for c in (admin.get(crds, name) or {}).get("status", {}).get("conditions", [])),
            f"{name} Established")
    peerings = "kopf.dev/v1/clusterkopfpeerings"
    try:
        done = plane.helm(*install, check=False)
        assert done.returncode == 0, done.stderr
        peering = admin.get(peerings, "forescale")
        assert peering is not None
        assert peering["metadata"]["annotations"]["meta.helm.sh/release-name"] == release
        for name in ("clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"):
            assert "meta.helm.sh/release-name" not in \
                ((admin.get(crds, name) or {})["metadata"].get("annotations") or {})
    finally:
        plane.helm("uninstall", release, "--namespace", release, check=False)
    assert admin.get(peerings, "forescale") is None
    assert admin.get(crds, "clusterkopfpeerings.kopf.dev") is not None


def test_helm_upgrade_then_uninstall(plane: ControlPlane, admin: Cluster,
                                     installed: Any) -> None:
    """Last in the file: it changes and then removes the release the others share."""
    roles = "rbac.authorization.k8s.io/v1/clusterroles"
    chart_rules = (admin.get(roles, FULLNAME) or {})["rules"]
    # Someone edits the chart's ClusterRole by hand. Helm 4 upgrades by server-side apply:
    # the server refuses to let it silently take the field back ...
    plane.kubectl("patch", "clusterrole", FULLNAME, "--type=json",
                  "-p", '[{"op": "remove", "path": "/rules/0"}]')
    refused = plane.helm("upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE,
                         "--set", "replicaCount=1", check=False)
    assert refused.returncode != 0, refused.stdout
    assert "conflict" in refused.stderr and "kubectl-patch" in refused.stderr, refused.stderr
    # ... until the upgrade is told to (--force-conflicts), which restores the chart's rules.
    upgraded = plane.helm("upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE,
                          "--set", "replicaCount=1", "--force-conflicts", check=False)
    assert upgraded.returncode == 0, upgraded.stderr
    assert (admin.get(roles, FULLNAME) or {})["rules"] == chart_rules
    dep = admin.get("apps/v1/deployments", FULLNAME, namespace=NAMESPACE) or {}
    assert dep["spec"]["replicas"] == 1
    history = json.loads(plane.helm("history", RELEASE, "--namespace", NAMESPACE,
                                    "--output", "json").stdout)
    assert [(h["revision"], h["status"]) for h in history] == [
        (1, "superseded"), (2, "failed"), (3, "deployed")], history

    removed = plane.helm("uninstall", RELEASE, "--namespace", NAMESPACE, check=False)
    assert removed.returncode == 0, removed.stderr
    for resource, name, ns in (("apps/v1/deployments", FULLNAME, NAMESPACE),
                               ("v1/serviceaccounts", FULLNAME, NAMESPACE),
                               (roles, FULLNAME, None),
                               ("rbac.authorization.k8s.io/v1/clusterrolebindings", FULLNAME,
                                None)):
        assert admin.get(resource, name, namespace=ns) is None, (resource, name)
    # The CRD stays (helm.sh/resource-policy: keep), and so do the users' policies.
    assert admin.get("apiextensions.k8s.io/v1/customresourcedefinitions", CRD_NAME)
    assert admin.get(POLICIES, "checkout", namespace="shop") is not None
    assert json.loads(plane.helm("list", "--all-namespaces", "--output", "json").stdout) == []
