"""Discovery answers are reused for a while, not for ever: an API installed after the
operator started (KEDA, a CRD with /scale) is seen without a restart. The client's one
request path is replaced by a small in-memory API whose served group versions a test
changes; the injected clock moves the time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from forescale.controller.kube import (
    DISCOVERY_MISSING_TTL_SECONDS,
    DISCOVERY_TTL_SECONDS,
    JSON,
    KubeClient,
    NotFound,
    ScaleResource,
)
from tests.support.kubeconfig import write_kubeconfig

KEDA = {"resources": [{"name": "scaledobjects", "kind": "ScaledObject", "namespaced": True}]}
WIDGETS = {"resources": [{"name": "widgets", "kind": "Widget", "namespaced": True},
                         {"name": "widgets/scale", "kind": "Scale", "namespaced": True}]}
SCALED_OBJECT = {"metadata": {"name": "web-so"},
                 "spec": {"scaleTargetRef": {"name": "web"}}}


class Api:
    """Served group versions (path → listing) and how often discovery was asked."""

    def __init__(self) -> None:
        self.served: dict[str, JSON] = {}
        self.discovery_reads = 0

    def request(self, method: str, path: str, **_: Any) -> JSON:
        if path in self.served:
            self.discovery_reads += 1
            return self.served[path]
        if path.startswith("/apis/keda.sh/v1alpha1/") and "/apis/keda.sh/v1alpha1" in \
                self.served:
            return {"items": [SCALED_OBJECT]}
        if path.count("/") <= 3:
            self.discovery_reads += 1
        raise NotFound(404, "NotFound", "the server could not find the requested resource")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def kube(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[KubeClient, Api, Clock]:
    config = write_kubeconfig(tmp_path / "kubeconfig", server="http://127.0.0.1:1",
                              identity="op")
    api, clock = Api(), Clock()
    client = KubeClient(kubeconfig=str(config), clock=clock)
    monkeypatch.setattr(client, "_request", api.request)
    return client, api, clock


def test_keda_installed_after_start_is_seen(kube: tuple[KubeClient, Api, Clock]) -> None:
    client, api, clock = kube
    assert client.list_scaled_objects("shop") == []
    api.served["/apis/keda.sh/v1alpha1"] = KEDA  # KEDA installed while the operator runs
    clock.now += 1
    assert client.list_scaled_objects("shop") == []  # "not served" is reused briefly
    assert api.discovery_reads == 1
    clock.now += DISCOVERY_MISSING_TTL_SECONDS
    assert client.list_scaled_objects("shop") == [SCALED_OBJECT]


def test_a_crd_installed_later_becomes_a_scale_target(
        kube: tuple[KubeClient, Api, Clock]) -> None:
    client, api, clock = kube
    assert client.resolve_scale("example.com/v1", "Widget") is None
    api.served["/apis/example.com/v1"] = WIDGETS
    clock.now += DISCOVERY_MISSING_TTL_SECONDS
    assert client.resolve_scale("example.com/v1", "Widget") == ScaleResource(
        "example.com", "v1", "widgets")


def test_a_served_listing_is_reused_then_read_again(
        kube: tuple[KubeClient, Api, Clock]) -> None:
    client, api, clock = kube
    api.served["/apis/example.com/v1"] = WIDGETS
    for _ in range(5):
        assert client.resolve_scale("example.com/v1", "Widget") is not None
        clock.now += DISCOVERY_TTL_SECONDS / 10
    assert api.discovery_reads == 1  # one read serves every cycle within the TTL
    del api.served["/apis/example.com/v1"]  # the CRD is deleted
    clock.now += DISCOVERY_TTL_SECONDS
    assert client.resolve_scale("example.com/v1", "Widget") is None
    # A clock stepped back never makes an old answer fresh for longer.
    api.served["/apis/example.com/v1"] = WIDGETS
    clock.now -= 3600
    assert client.resolve_scale("example.com/v1", "Widget") is not None
