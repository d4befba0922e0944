"""A slow Prometheus: the operator's read times out, it holds the replicas and says why.

In process and fast: one decision cycle (``Controller.cycle``) against the session's real
kube-apiserver (the in-process emulator with FORESCALE_TEST_API=emulator), with the
policy's ``metrics.prometheusUrl`` pointing at a tiny local server that answers only after
the operator's Prometheus timeout.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import yaml

from forescale.controller.kube import KubeClient
from forescale.controller.metrics import OperatorMetrics
from forescale.controller.settings import ControllerSettings
from forescale.controller.worker import Controller
from tests.integration.conftest import CRD, QUERY, chart_rbac
from tests.support.cluster import Cluster
from tests.support.controlplane import ControlPlane
from tests.support.kubeapi import run_emulator

TIMEOUT = 0.5
POLICIES = "forescale.dev/v1alpha1/scalingpolicies"


class _Slow(BaseHTTPRequestHandler):
    delay = 3 * TIMEOUT
    requests = 0

    def do_GET(self) -> None:
        type(self).requests += 1
        time.sleep(self.delay)
        body = b'{"status":"success","data":{"resultType":"matrix","result":[]}}'
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the client gave up, as it should

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def slow_prometheus() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class API:
    """The little the tests need from the API server, on either server."""

    ns: str
    create: Callable[..., Any]
    get: Callable[..., Any]
    list_objects: Callable[..., Any]
    kubeconfig: str
    #: Every write request to a /scale subresource in ``ns`` (from the audit log).
    scale_writes: Callable[[], list[Any]]


@pytest.fixture
def kube(control_plane: ControlPlane | None, real_cluster: Cluster | None) -> Iterator[API]:
    if control_plane is not None and real_cluster is not None:
        plane, cluster = control_plane, real_cluster
        ns = f"forescale-slow-{uuid.uuid4().hex[:8]}"
        cluster.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        chart_rbac().grant_namespace(cluster, ns)
        yield API(ns=ns, create=cluster.create, get=cluster.get,
                  list_objects=cluster.list_objects,
                  kubeconfig=str(plane.kubeconfig_for("operator-a", namespace=ns)),
                  scale_writes=lambda: plane.scale_writes(namespace=ns))
        cluster.delete("v1/namespaces", ns)
        return
    if real_cluster is not None:
        pytest.skip("needs the control plane's or the emulator's audit log")
    with run_emulator() as handle:
        handle.create(yaml.safe_load(CRD.read_text()))
        yield API(ns="default", create=handle.create, get=handle.get,
                  list_objects=handle.list_objects,
                  kubeconfig=str(handle.kubeconfig_path("operator-a")),
                  scale_writes=lambda: [e for e in handle.audit()
                                        if e.path.endswith("/scale")])
        handle.assert_healthy()


def _one_slow_cycle(kube: API, slow_prometheus: str) -> tuple[
        float, float, dict[str, Any], ControllerSettings]:
    kube.create({"apiVersion": "apps/v1", "kind": "Deployment",
                 "metadata": {"name": "web", "namespace": kube.ns},
                 "spec": {"replicas": 7, "selector": {"matchLabels": {"app": "web"}},
                          "template": {"metadata": {"labels": {"app": "web"}},
                                       "spec": {"containers": [{"name": "c", "image": "x"}]}}}})
    kube.create({"apiVersion": "forescale.dev/v1alpha1", "kind": "ScalingPolicy",
                 "metadata": {"name": "web", "namespace": kube.ns},
                 "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": "web"},
                          "metrics": {"query": QUERY, "prometheusUrl": slow_prometheus},
                          "serviceRatePerReplica": 10, "minReplicas": 1, "maxReplicas": 50,
                          "decisionPeriodSeconds": 30,
                          "forecast": {"models": ["ma"], "historySeconds": 3600}}})
    settings = ControllerSettings(identity="op-a", prometheus_timeout_seconds=TIMEOUT,
                                  step_seconds=60.0, allowed_prometheus_urls=(slow_prometheus,))
    client = KubeClient(kubeconfig=kube.kubeconfig)
    controller = Controller(settings, client, OperatorMetrics())
    policy = kube.get(POLICIES, "web", namespace=kube.ns)
    assert policy is not None

    began = time.monotonic()
    delay = controller.cycle(policy)
    elapsed = time.monotonic() - began
    status = (kube.get(POLICIES, "web", namespace=kube.ns) or {})["status"]
    return elapsed, delay, status, settings


def test_a_slow_prometheus_times_out_holds_the_replicas_and_reports_it(
        kube: API, slow_prometheus: str) -> None:
    elapsed, delay, status, settings = _one_slow_cycle(kube, slow_prometheus)

    # The timeout is applied (no retry on a read timeout): one slow request, not a hang.
    assert _Slow.requests >= 1
    assert elapsed < _Slow.delay + 2, elapsed
    conditions = {c["type"]: c for c in status["conditions"]}
    metrics = conditions["MetricsAvailable"]
    assert (metrics["status"], metrics["reason"]) == ("False", "PrometheusUnavailable")
    assert conditions["ScalingActive"]["reason"] == "HoldingReplicas"
    assert conditions["Ready"]["reason"] == "MetricsUnavailable"
    # Never scale down on missing data: the replicas stay, nothing wrote /scale.
    assert status["desiredReplicas"] == 7
    assert (kube.get("apps/v1/deployments", "web", namespace=kube.ns) or {})[
        "spec"]["replicas"] == 7
    assert not kube.scale_writes()
    # Retried with backoff, sooner than the next period.
    assert delay == settings.retry_seconds
    events = kube.list_objects("v1/events", namespace=kube.ns)
    assert any(e["reason"] == "PrometheusUnavailable" for e in events)


def test_the_condition_names_the_timeout_as_the_cause(
        kube: API, slow_prometheus: str) -> None:
    _, _, status, _ = _one_slow_cycle(kube, slow_prometheus)
    metrics = {c["type"]: c for c in status["conditions"]}["MetricsAvailable"]
    assert f"did not answer within {TIMEOUT:g}s" in metrics["message"]
