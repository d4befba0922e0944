"""The image tier: the operator image that ``make image`` built, run with podman as the
chart runs it (see ``tests/image/podman.py``), against the test API server and a real
Prometheus on loopback.

It runs as its own target, ``make image-test`` (which builds the image first), and CI runs
it after ``make test``: a cold image build takes minutes and several GB (torch), which
``make test`` must not pay on a developer's machine. So unless ``FORESCALE_IMAGE_TESTS=1``
(set by ``make image-test``) only the tests that need no image are collected here.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from forescale.controller.kube import Conflict, KubeError
from tests.image.podman import image_ref, podman, self_contained_kubeconfig
from tests.support.cluster import Cluster
from tests.support.kubeapi import HARNESS_IDENTITY, run_emulator
from tests.support.prometheus import (
    CounterSeries,
    LiveCounter,
    PrometheusServer,
    free_port,
    running_prometheus,
)

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "scalingpolicies.forescale.dev.yaml"
CHART = REPO / "charts" / "forescale"
IMAGE_TESTS = os.environ.get("FORESCALE_IMAGE_TESTS") == "1"

# Not collected without the image (see the module docstring); test_release_metadata.py
# needs no image and always runs.
collect_ignore = [] if IMAGE_TESTS else ["test_image_contents.py", "test_image_operator.py"]
# After `make release` (which sets FORESCALE_RELEASE_TESTS=1): dist/ is checked.
if os.environ.get("FORESCALE_RELEASE_TESTS") != "1":
    collect_ignore.append("test_release.py")

LABELS = {"job": "web"}
SELECTOR = 'http_requests_total{job="web"}'
#: The steady arrival rate (req/s), backfilled for two hours and continued live.
RATE = 80.0
STEP = 60.0


@pytest.fixture(scope="session")
def image() -> str:
    """The built image; its absence is a failure, not a skip: ``make image-test`` builds it."""
    ref = image_ref()
    if podman("image", "exists", ref, check=False).returncode != 0:
        pytest.fail(f"no image {ref} in the local container storage: run 'make image'")
    return ref


@dataclass
class ApiServer:
    """The API server the containerised operator talks to: the real control plane of the
    tests (etcd + kube-apiserver with RBAC, ``tests/support/controlplane.py``) when its
    binaries are built, else the in-process emulator."""

    kind: str
    kube: Cluster
    #: The operator's identity: the Lease holder, and the user its writes are audited as.
    identity: str
    kubeconfig_source: Callable[[str], Path]
    scale_writes_source: Callable[[str], list[tuple[str, str, int]]]
    tmp: Path

    def kubeconfig(self, namespace: str) -> Path:
        """A self-contained kubeconfig (one file to mount) for the operator's identity."""
        directory = self.tmp / f"kubeconfig-{namespace}"
        directory.mkdir(exist_ok=True)
        return self_contained_kubeconfig(self.kubeconfig_source(namespace), directory)

    def scale_writes(self, namespace: str) -> list[tuple[str, str, int]]:
        """(identity, target, replicas) of every successful /scale write in ``namespace``."""
        return self.scale_writes_source(namespace)


def _control_plane_module() -> Any:
    """tests.support.controlplane with its binaries located, or None (then: the emulator).

    ``FORESCALE_IMAGE_API`` chooses: ``auto`` (default: the control plane when its binaries
    are built), ``emulator``, or ``controlplane`` (missing binaries are then an error, as
    under ``FORESCALE_REQUIRE_CONTROLPLANE=1``)."""
    choice = os.environ.get("FORESCALE_IMAGE_API", "auto")
    if choice not in ("auto", "emulator", "controlplane"):
        raise ValueError(f"FORESCALE_IMAGE_API must be auto, emulator or controlplane, "
                         f"not {choice!r}")
    if choice == "emulator":
        return None
    try:
        from tests.support import controlplane
    except ImportError:
        if choice == "controlplane":
            raise
        return None
    try:
        controlplane.Binaries.locate()
    except FileNotFoundError:
        if choice == "controlplane" or os.environ.get("FORESCALE_REQUIRE_CONTROLPLANE"):
            raise
        return None
    return controlplane


@pytest.fixture(scope="session")
def control_plane() -> Iterator[Any]:
    module = _control_plane_module()
    if module is None:
        yield None
        return
    with module.running_control_plane() as plane:
        admin = Cluster(plane.admin_kubeconfig)
        try:
            admin.apply_crd(yaml.safe_load(CRD.read_text()))
        finally:
            admin.close()
        yield plane


@pytest.fixture
def api_server(tmp_path: Path, control_plane: Any) -> Iterator[ApiServer]:
    if control_plane is not None:
        from tests.support import controlplane

        plane = control_plane
        identity = controlplane.OPERATOR_IDENTITIES[0]
        kube = Cluster(plane.admin_kubeconfig)

        def writes(namespace: str) -> list[tuple[str, str, int]]:
            return [(e.username, str(e.ref("name")), int(e.request_object["spec"]["replicas"]))
                    for e in plane.scale_writes(namespace=namespace) if e.code < 300]

        try:
            yield ApiServer(kind="kube-apiserver", kube=kube, identity=identity,
                            kubeconfig_source=lambda ns: plane.kubeconfig_for(identity,
                                                                              namespace=ns),
                            scale_writes_source=writes, tmp=tmp_path)
        finally:
            kube.close()
        return
    with run_emulator() as emulator:
        kube = Cluster(emulator.kubeconfig_path(HARNESS_IDENTITY))
        identity = "forescale-image-0"

        def emulator_writes(namespace: str) -> list[tuple[str, str, int]]:
            return [(e.identity, str(e.name), int(e.request_body["spec"]["replicas"]))
                    for e in emulator.audit()
                    if e.namespace == namespace and e.subresource == "scale"
                    and e.method in ("PATCH", "PUT") and e.status_code < 300
                    and isinstance(e.request_body, dict)]

        try:
            kube.apply_crd(yaml.safe_load(CRD.read_text()))
            yield ApiServer(kind="emulator", kube=kube, identity=identity,
                            kubeconfig_source=lambda ns: emulator.kubeconfig_path(
                                identity, namespace=ns),
                            scale_writes_source=emulator_writes, tmp=tmp_path)
        finally:
            kube.close()
        emulator.assert_healthy()


@pytest.fixture
def namespace(api_server: ApiServer) -> Iterator[str]:
    name = f"forescale-image-{uuid.uuid4().hex[:8]}"
    api_server.kube.create({"apiVersion": "v1", "kind": "Namespace",
                            "metadata": {"name": name}})
    yield name
    with contextlib.suppress(Exception):
        api_server.kube.delete("v1/namespaces", name)


@dataclass
class Traffic:
    prometheus: PrometheusServer
    live: LiveCounter


class _Continuing(LiveCounter):
    """A live counter that continues the backfilled one from its last value (no reset)."""

    offset = 0.0

    @property
    def count(self) -> float:
        return self.offset + float(LiveCounter.count.fget(self))  # type: ignore[attr-defined]


@pytest.fixture
def traffic() -> Iterator[Traffic]:
    """A real Prometheus with two hours of history at RATE req/s ending now, scraped every
    30 s, continued by a live counter scraped every second."""
    now = time.time()
    minutes = 120
    history = CounterSeries.from_counts(np.full(minutes, RATE * STEP),
                                        start_seconds=now - minutes * STEP, step_seconds=STEP,
                                        labels=LABELS, scrape_interval_seconds=30)
    live = _Continuing(labels=LABELS, rate_per_second=RATE)
    live.offset = float(history.values[-1]) + RATE * (time.time() - history.end_seconds)
    with live, running_prometheus(series=[history], scrape_targets=[live.target],
                                  scrape_interval_seconds=1.0) as prom:
        prom.wait_for_query(f"timestamp({SELECTOR}) > {history.end_seconds}",
                            timeout_seconds=60)
        yield Traffic(prometheus=prom, live=live)


@dataclass
class ChartPod:
    """The operator container as the chart's Deployment defines it (rendered with Helm's
    SDK for this test's namespace, Prometheus and port): its args and environment with the
    Downward API resolved, and its probes' paths."""

    args: list[str]
    env: dict[str, str]
    metrics_port: int
    liveness_path: str
    readiness_path: str


def render_chart(values: dict[str, Any], namespace: str) -> list[dict[str, Any]]:
    import helm_python

    chart = helm_python.Chart.load(str(CHART))
    try:
        rendered = chart.render(values, name="forescale", namespace=namespace)
    finally:
        chart.close()
    return [d for path, text in rendered.items() if path.endswith(".yaml")
            for d in yaml.safe_load_all(text) if d]


@pytest.fixture
def chart_pod(api_server: ApiServer, namespace: str, traffic: Traffic) -> Iterator[ChartPod]:
    """The chart installed as far as this test needs: the Deployment's container spec for
    the podman run and, on the real control plane, the chart's RBAC (ClusterRole, the
    Lease Role in the operator's namespace) bound to the operator's identity instead of
    the ServiceAccount, so the real authorizer enforces exactly the chart's permissions."""
    port = free_port()
    docs = render_chart({"watchNamespaces": [namespace], "replicaCount": 1,
                         "logFormat": "text", "prometheus": {"url": traffic.prometheus.url},
                         "metrics": {"port": port}}, namespace)
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    fields = {"metadata.name": api_server.identity, "metadata.namespace": namespace}
    env = {e["name"]: e.get("value") or fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
           for e in container.get("env", [])}
    args = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in container["args"]]
    created: list[tuple[str, str]] = []
    if api_server.kind == "kube-apiserver":
        from tests.support import controlplane

        group = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                 "name": controlplane.OPERATORS_GROUP}
        for doc in docs:
            if doc["kind"] not in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
                continue
            if doc["kind"].endswith("Binding"):
                doc["subjects"] = [group]
            if doc["kind"] == "ClusterRoleBinding":
                doc["metadata"]["name"] = f"forescale-image-{namespace}"
                created.append(("rbac.authorization.k8s.io/v1/clusterrolebindings",
                                doc["metadata"]["name"]))
            with contextlib.suppress(Conflict):  # the ClusterRoles: once per session
                api_server.kube.create(doc)
    yield ChartPod(args=args, env=env, metrics_port=port,
                   liveness_path=container["livenessProbe"]["httpGet"]["path"],
                   readiness_path=container["readinessProbe"]["httpGet"]["path"])
    for resource, name in created:
        with contextlib.suppress(KubeError):
            api_server.kube.delete(resource, name)
