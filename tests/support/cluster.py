"""A small test client for *any* Kubernetes API server, given only a kubeconfig.

The integration scenarios talk to the cluster through this, whether it is the in-process
API emulator or a real cluster (kind, k3d, or the standalone emulator posing as one): it
uses nothing but the public API (discovery, CRUD, watch), through the operator's own
``KubeClient`` so TLS, client certificates and tokens from a kubeconfig all work. It
mirrors the subset of :class:`tests.support.kubeapi.EmulatorHandle` the scenarios use
(``get``/``list_objects``/``create``/``patch``/``delete``/``wait_for``), plus
``apply_crd`` (wait until Established) and :class:`WatchRecorder`, which records every
event of a watch with its arrival time (what the real-cluster checks are built on).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from forescale.controller.kube import JSON, MERGE_PATCH, KubeClient, KubeError, NotFound
from tests.support import polling

T = TypeVar("T")


def _split(resource: str) -> tuple[str, str, str]:
    """``"apps/v1/deployments"`` → (apps, v1, deployments); ``"v1/events"`` → ('', v1, events)."""
    parts = resource.split("/")
    if len(parts) == 2:
        return "", parts[0], parts[1]
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    raise ValueError(f"resource {resource!r} must be [group/]version/plural")


def _base(group: str, version: str) -> str:
    return f"/api/{version}" if not group else f"/apis/{group}/{version}"


class Cluster:
    """The API server a kubeconfig points at, seen as an opaque cluster."""

    def __init__(self, kubeconfig: str | Path, *, timeout_seconds: float = 15.0) -> None:
        self.kubeconfig = Path(kubeconfig)
        self.client = KubeClient(kubeconfig=str(kubeconfig), timeout_seconds=timeout_seconds)
        self._discovery: dict[tuple[str, str], list[JSON]] = {}

    def close(self) -> None:
        self.client.close()

    # -- requests -------------------------------------------------------------------------

    def request(self, method: str, path: str, *, body: Any = None,
                query: Mapping[str, str] | None = None,
                content_type: str = "application/json") -> JSON:
        """One request; raises ``KubeError`` (``NotFound``, ``Conflict``) on an error status."""
        return self.client._request(method, path, body=body, query=query,
                                    content_type=content_type)

    def _resources(self, group: str, version: str) -> list[JSON]:
        key = (group, version)
        if key not in self._discovery:
            listing = self.request("GET", _base(group, version))
            self._discovery[key] = list(listing.get("resources") or [])
        return self._discovery[key]

    def resource_for(self, api_version: str, kind: str) -> str:
        group, _, version = api_version.rpartition("/")
        for _ in range(2):
            for res in self._resources(group, version):
                if res.get("kind") == kind and "/" not in str(res.get("name")):
                    return f"{group}/{version}/{res['name']}" if group else \
                        f"{version}/{res['name']}"
            self._discovery.pop((group, version), None)  # a CRD registered meanwhile
        raise LookupError(f"no resource of kind {kind} in {api_version}")

    @staticmethod
    def path(resource: str, *, namespace: str | None = None, name: str | None = None,
             subresource: str | None = None) -> str:
        group, version, plural = _split(resource)
        path = _base(group, version)
        if namespace:
            path += f"/namespaces/{namespace}"
        path += f"/{plural}"
        if name:
            path += f"/{name}"
        if subresource:
            path += f"/{subresource}"
        return path

    def get(self, resource: str, name: str, *, namespace: str | None = None,
            subresource: str | None = None) -> JSON | None:
        try:
            return self.request("GET", self.path(resource, namespace=namespace, name=name,
                                                 subresource=subresource))
        except NotFound:
            return None

    def list_objects(self, resource: str, *, namespace: str | None = None,
                     label_selector: str | None = None) -> list[JSON]:
        query = {"labelSelector": label_selector} if label_selector else None
        return list(self.request("GET", self.path(resource, namespace=namespace),
                                 query=query).get("items") or [])

    def create(self, obj: JSON, *, namespace: str | None = None) -> JSON:
        resource = self.resource_for(obj["apiVersion"], obj["kind"])
        namespace = namespace or (obj.get("metadata") or {}).get("namespace")
        return self.request("POST", self.path(resource, namespace=namespace), body=obj)

    def replace(self, obj: JSON) -> JSON:
        resource = self.resource_for(obj["apiVersion"], obj["kind"])
        meta = obj["metadata"]
        return self.request("PUT", self.path(resource, namespace=meta.get("namespace"),
                                             name=meta["name"]), body=obj)

    def patch(self, resource: str, name: str, patch: Any, *, namespace: str | None = None,
              subresource: str | None = None, content_type: str = MERGE_PATCH) -> JSON:
        return self.request("PATCH", self.path(resource, namespace=namespace, name=name,
                                               subresource=subresource),
                            body=patch, content_type=content_type)

    def delete(self, resource: str, name: str, *, namespace: str | None = None) -> JSON | None:
        try:
            return self.request("DELETE", self.path(resource, namespace=namespace, name=name))
        except NotFound:
            return None

    @staticmethod
    def wait_for(predicate: Callable[[], T | None], *, timeout: float = 10.0,
                 interval: float = 0.2, what: str = "the condition") -> T:
        """Poll ``predicate`` until it returns something truthy; return that, or fail."""
        return polling.wait_for(predicate, timeout=timeout, interval=interval, what=what)

    # -- the CRD -------------------------------------------------------------------------

    def apply_crd(self, crd: JSON, *, timeout: float = 60.0) -> JSON:
        """Create the CRD, or replace an existing one with this schema; wait until it is
        Established (a real apiserver needs a moment before its objects can be created)."""
        name = crd["metadata"]["name"]
        resource = "apiextensions.k8s.io/v1/customresourcedefinitions"
        try:
            self.create(crd)
        except KubeError as exc:
            if exc.status != 409:
                raise
            current = self.get(resource, name) or {}
            body = {**crd, "metadata": {**crd["metadata"], "resourceVersion":
                                        current["metadata"]["resourceVersion"]}}
            self.replace(body)

        def established() -> JSON | None:
            got = self.get(resource, name) or {}
            conditions = (got.get("status") or {}).get("conditions") or []
            ok = any(c.get("type") == "Established" and c.get("status") == "True"
                     for c in conditions)
            return got if ok else None

        found = self.wait_for(established, timeout=timeout, what=f"CRD {name} Established")
        group = crd["spec"]["group"]
        for version in crd["spec"]["versions"]:
            self._discovery.pop((group, version["name"]), None)
        return found

    # -- watches ---------------------------------------------------------------------------

    def watch(self, resource: str, *, namespace: str | None = None) -> WatchRecorder:
        """Start recording every event of ``resource`` (from the current state on)."""
        recorder = WatchRecorder(self, resource, namespace)
        recorder.start()
        return recorder


@dataclass(frozen=True)
class WatchEvent:
    type: str  # ADDED, MODIFIED, DELETED
    object: JSON
    #: Wall time at which the event arrived (``time.time()``).
    received: float

    @property
    def name(self) -> str:
        return str(self.object["metadata"]["name"])

    @property
    def resource_version(self) -> str:
        return str(self.object["metadata"].get("resourceVersion"))


@dataclass
class WatchRecorder:
    """Every event of one watch, in order; reconnects from the last resourceVersion, and
    notes it (``gaps``) if the server says that history is gone (410), so that a check
    built on the events can refuse to conclude from an incomplete record."""

    cluster: Cluster
    resource: str
    namespace: str | None
    events: list[WatchEvent] = field(default_factory=list)
    gaps: int = 0
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _response: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        listing = self.cluster.request("GET", self.cluster.path(self.resource,
                                                                namespace=self.namespace))
        now = time.time()
        self._rv = str((listing.get("metadata") or {}).get("resourceVersion") or "")
        for obj in listing.get("items") or []:
            self.events.append(WatchEvent("ADDED", obj, now))
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"watch-{self.resource}")
        self._thread.start()
        self._ready.wait(10)

    def snapshot(self) -> list[WatchEvent]:
        with self._lock:
            return list(self.events)

    def _run(self) -> None:
        client = self.cluster.client
        while not self._stop.is_set():
            query = [("watch", "true"), ("resourceVersion", self._rv),
                     ("allowWatchBookmarks", "true"), ("timeoutSeconds", "300")]
            try:
                _, url, headers, _, _ = client._api.param_serialize(
                    "GET", self.cluster.path(self.resource, namespace=self.namespace),
                    query_params=query, header_params={"Accept": "application/json"},
                    auth_settings=["BearerToken"])
                response = client._api.call_api("GET", url, header_params=headers,
                                                _request_timeout=(10, 330))
                self._response = response.response
                self._ready.set()
                if response.status >= 400:
                    raise RuntimeError(f"watch answered {response.status}")
                buffer = b""
                for chunk in response.response.stream(4096, decode_content=True):
                    buffer += chunk
                    while b"\n" in buffer:
                        line, buffer = buffer.split(b"\n", 1)
                        if line.strip():
                            self._handle(json.loads(line))
            except Exception as exc:  # reconnect; a closed stream at stop() lands here too
                if self._stop.is_set():
                    return
                self.errors.append(repr(exc))
                time.sleep(0.2)
            finally:
                self._ready.set()

    def _handle(self, event: JSON) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:  # history gone: relist, and remember the gap
                self.gaps += 1
                listing = self.cluster.request("GET", self.cluster.path(
                    self.resource, namespace=self.namespace))
                self._rv = str((listing.get("metadata") or {}).get("resourceVersion") or "")
            return
        self._rv = str((obj.get("metadata") or {}).get("resourceVersion") or self._rv)
        if kind == "BOOKMARK":
            return
        with self._lock:
            self.events.append(WatchEvent(str(kind), obj, time.time()))

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(Exception):
            if self._response is not None:
                self._response.shutdown() if hasattr(self._response, "shutdown") else \
                    self._response.release_conn()
        if self._thread is not None:
            self._thread.join(timeout=5)
