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
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.image.podman import image_ref, podman, self_contained_kubeconfig
from tests.support.cluster import Cluster
from tests.support.kubeapi import HARNESS_IDENTITY, EmulatorHandle, run_emulator
from tests.support.prometheus import (
    CounterSeries,
    LiveCounter,
    PrometheusServer,
    running_prometheus,
)

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "scalingpolicies.forescale.dev.yaml"
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
    """The API server the containerised operator talks to (the in-process emulator)."""

    kube: Cluster
    emulator: EmulatorHandle
    tmp: Path

    def kubeconfig_for(self, identity: str, namespace: str) -> Path:
        """A self-contained kubeconfig (one file to mount) whose writes the emulator's audit
        log records as ``identity``."""
        directory = self.tmp / f"kubeconfig-{identity}"
        directory.mkdir(exist_ok=True)
        return self_contained_kubeconfig(
            self.emulator.kubeconfig_path(identity, namespace=namespace), directory)

    def scale_writes(self, namespace: str) -> list[tuple[str, str, int]]:
        """(identity, target, replicas) of every successful /scale write in ``namespace``."""
        return [(e.identity, str(e.name), int(e.request_body["spec"]["replicas"]))
                for e in self.emulator.audit()
                if e.namespace == namespace and e.subresource == "scale"
                and e.method in ("PATCH", "PUT") and e.status_code < 300
                and isinstance(e.request_body, dict)]


@pytest.fixture
def api_server(tmp_path: Path) -> Iterator[ApiServer]:
    with run_emulator() as emulator:
        kube = Cluster(emulator.kubeconfig_path(HARNESS_IDENTITY))
        try:
            kube.apply_crd(yaml.safe_load(CRD.read_text()))
            yield ApiServer(kube=kube, emulator=emulator, tmp=tmp_path)
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
