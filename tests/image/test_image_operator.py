"""The operator image, run as the chart runs it, scales a Deployment under its Lease.

The container (user 65532, read-only root, no capabilities, /tmp the only writable mount,
host network) gets what the chart's pod gets: the API server (here through a mounted
kubeconfig instead of the in-cluster ServiceAccount), a real Prometheus, and the chart's
flags. The test then checks, from the outside, what an operator in a cluster is judged
by: the Deployment is scaled up to what the traffic needs, every /scale write comes from
the container's identity while it holds the target's Lease, and /metrics and /healthz
answer on the metrics port.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.image.conftest import RATE, SELECTOR, ApiServer, Traffic
from tests.image.podman import Container
from tests.support.prometheus import free_port

KUBECONFIG = "/var/run/forescale/kubeconfig"
IDENTITY = "forescale-image-0"
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
def operator(image: str, api_server: ApiServer, namespace: str,
             traffic: Traffic) -> Any:
    port = free_port()
    kubeconfig = api_server.kubeconfig_for(IDENTITY, namespace)
    # The chart's args (templates/deployment.yaml), with this test's namespace, Prometheus
    # and port; a short Lease extra so the test does not wait on defaults meant for
    # production.
    container = Container.start(image, [
        f"--namespace={namespace}", f"--prometheus-url={traffic.prometheus.url}",
        "--models-dir=/models", f"--metrics-port={port}", "--metrics-address=127.0.0.1",
        f"--identity={IDENTITY}", "--standalone", "--log-format=text", "--log-level=info",
        f"--kubeconfig={KUBECONFIG}", "--lease-extra-seconds=3"],
        volumes=[(kubeconfig, KUBECONFIG)],
        env={"POD_NAME": IDENTITY, "POD_NAMESPACE": namespace})
    container.port = port  # type: ignore[attr-defined]
    try:
        yield container
    finally:
        container.remove()


def test_the_image_scales_a_deployment_under_its_lease(
        operator: Container, api_server: ApiServer, namespace: str) -> None:
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
        raise AssertionError(f"replicas={replicas()}, container running="
                             f"{operator.running()}, log tail:\n{operator.logs(tail=60)}"
                             ) from None

    # Every /scale write in the namespace came from the container's identity...
    writes = api_server.scale_writes(namespace)
    assert writes, "the Deployment changed but no /scale write was recorded"
    assert {w[0] for w in writes} == {IDENTITY}, writes
    # ...which holds the target's Lease.
    lease = kube.get("coordination.k8s.io/v1/leases", "forescale-deployment-web",
                     namespace=namespace)
    assert lease is not None and lease["spec"]["holderIdentity"] == IDENTITY, lease

    base = f"http://127.0.0.1:{operator.port}"  # type: ignore[attr-defined]
    assert _get(f"{base}/healthz")[0] == 200
    status, metrics = _get(f"{base}/metrics")
    assert status == 200
    desired = _metric(metrics, "forescale_desired_replicas", namespace=namespace, policy="web")
    assert desired is not None and desired >= needed, desired
    written = _metric(metrics, "forescale_scale_writes_total", direction="up")
    assert written is not None and written >= 1, written

    # SIGTERM, as the kubelet stops a pod: the operator exits cleanly within the grace.
    assert operator.stop(timeout_seconds=30) == 0, operator.logs(tail=40)
