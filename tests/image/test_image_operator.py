"""The operator image, run as the chart runs it, scales a Deployment under its Lease.

The container (user 65532, read-only root, no capabilities, /tmp the only writable mount,
host network) gets what the chart's pod gets: the args and environment of the chart's
Deployment, rendered for this test (tests/image/conftest.py ``chart_pod``), the API server
(through a mounted kubeconfig instead of the in-cluster ServiceAccount; on the real control
plane with exactly the chart's RBAC) and a real Prometheus. The test then checks, from the
outside, what an operator in a cluster is judged by: the Deployment is scaled up to what
the traffic needs, every /scale write comes from the container's identity while it holds
the target's Lease, and /metrics and the chart's liveness and readiness probe paths answer
on the chart's metrics port.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

import pytest

from forescale.controller.lease import lease_name
from tests.image.conftest import RATE, SELECTOR, ApiServer, ChartPod
from tests.image.podman import Container

KUBECONFIG = "/var/run/forescale/kubeconfig"
SERVICE_RATE = 10.0
#: Cold start in the container (importing torch and statsmodels, the first ARIMA fit) on a
#: loaded 2-core machine takes tens of seconds; the predicates are what the test proves.
WAIT = 240.0


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def _metric(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.fixture
def operator(image: str, api_server: ApiServer, chart_pod: ChartPod) -> Any:
    """The container with the chart's args and environment. Two flags are added: the
    kubeconfig (the chart's pod uses its ServiceAccount in-cluster instead), and the
    metrics address on loopback (the chart listens on all of the pod's addresses; here the
    pod's network is the host's)."""
    container = Container.start(
        image, [*chart_pod.args, f"--kubeconfig={KUBECONFIG}", "--metrics-address=127.0.0.1"],
        volumes=[(api_server.kubeconfig(chart_pod.env["POD_NAMESPACE"]), KUBECONFIG)],
        env=chart_pod.env)
    try:
        yield container
    finally:
        container.remove()


def test_the_image_scales_a_deployment_under_its_lease(
        operator: Container, api_server: ApiServer, namespace: str,
        chart_pod: ChartPod) -> None:
    kube = api_server.kube
    labels = {"app": "web"}
    pod = {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}
    kube.create({"apiVersion": "apps/v1", "kind": "Deployment",
                 "metadata": {"name": "web", "namespace": namespace},
                 "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                          "template": {"metadata": {"labels": labels}, "spec": pod}}})
    kube.create({"apiVersion": "forescale.dev/v1alpha1", "kind": "ScalingPolicy",
                 "metadata": {"name": "web", "namespace": namespace},
                 "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": "web"},
                          "metrics": {"query": f"sum(rate({SELECTOR}[2m]))"},
                          "serviceRatePerReplica": SERVICE_RATE,
                          "minReplicas": 1, "maxReplicas": 50, "decisionPeriodSeconds": 5,
                          "leadTimeSeconds": 600,
                          "forecast": {"models": ["arima", "ma"], "historySeconds": 3600},
                          "behavior": {"scaleUp": {"policies": [
                              {"type": "Percent", "value": 1000, "periodSeconds": 5}]}}}})

    def replicas() -> int:
        dep = kube.get("apps/v1/deployments", "web", namespace=namespace) or {}
        return int(dep.get("spec", {}).get("replicas", 0))

    # RATE req/s at SERVICE_RATE per replica needs at least RATE / SERVICE_RATE replicas
    # busy all the time; Erlang C sizing for a latency target asks for more, never fewer.
    needed = int(RATE / SERVICE_RATE)
    try:
        kube.wait_for(lambda: operator.running() and replicas() >= needed, timeout=WAIT,
                      interval=1.0, what=f"the Deployment scaled to >= {needed} replicas")
    except AssertionError:
        raise AssertionError(f"{api_server.kind}: replicas={replicas()}, container running="
                             f"{operator.running()}, log tail:\n{operator.logs(tail=60)}"
                             ) from None

    # Every /scale write in the namespace came from the container's identity...
    writes = api_server.scale_writes(namespace)
    assert writes, "the Deployment changed but no /scale write was recorded"
    assert {w[0] for w in writes} == {api_server.identity}, (api_server.kind, writes)
    # ...which holds the target's Lease.
    # Where the chart's environment keeps Leases (FORESCALE_LEASE_NAMESPACE, the operator's
    # own namespace), named as the operator names them.
    lease_namespace = chart_pod.env.get("FORESCALE_LEASE_NAMESPACE")
    lease = kube.get("coordination.k8s.io/v1/leases",
                     lease_name("Deployment", "web",
                                namespace=namespace if lease_namespace else None),
                     namespace=lease_namespace or namespace)
    assert lease is not None and lease["spec"]["holderIdentity"] == api_server.identity, lease

    # The chart's probes, on the chart's metrics port.
    base = f"http://127.0.0.1:{chart_pod.metrics_port}"
    assert _get(f"{base}{chart_pod.liveness_path}")[0] == 200
    assert _get(f"{base}{chart_pod.readiness_path}")[0] == 200
    status, metrics = _get(f"{base}/metrics")
    assert status == 200
    desired = _metric(metrics, "forescale_desired_replicas", namespace=namespace, policy="web")
    assert desired is not None and desired >= needed, desired
    written = _metric(metrics, "forescale_scale_writes_total", direction="up")
    assert written is not None and written >= 1, written

    # SIGTERM, as the kubelet stops a pod: the operator exits cleanly within the grace.
    assert operator.stop(timeout_seconds=30) == 0, operator.logs(tail=40)
