"""The only module that talks to the Kubernetes API (besides kopf itself).

Every call goes through :meth:`KubeClient._request` with the official client's
configuration (loaded explicitly from a kubeconfig, never from ``$KUBECONFIG`` at import
time) and answers plain JSON dicts: the typed models add nothing here and their
deserialisation of MicroTime and Scale objects has varied across client versions.
Each method that calls the API declares its permissions with ``@requires``, which is where
the operator's RBAC comes from (:mod:`forescale.controller.rbac`).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from forescale.controller.rbac import requires

JSON = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"
#: The field manager of our writes: a real apiserver records it in the target's
#: managedFields (without it the manager is the client library's User-Agent,
#: "OpenAPI-Generator", which names nobody).
FIELD_MANAGER = {"fieldManager": "forescale"}

#: Scalable built-ins: the ones whose /scale the operator's default RBAC allows.
SCALABLE_BUILTINS = {("apps", "Deployment"): "deployments",
                     ("apps", "StatefulSet"): "statefulsets",
                     ("apps", "ReplicaSet"): "replicasets"}
#: How long a group version's discovery answer is reused: a CRD installed, changed or
#: removed while the operator runs is seen within this (no restart needed).
DISCOVERY_TTL_SECONDS = 60.0
#: How long "this group version is not served" (404) is reused: shorter, because a KEDA
#: installed after the operator started must show as ConflictingAutoscaler quickly.
DISCOVERY_MISSING_TTL_SECONDS = 10.0


class KubeError(Exception):
    """A failed API call: ``status`` is the HTTP status (0 when there was no answer)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{reason} ({status}): {message}")
        self.status = status
        self.reason = reason
        self.message = message


class NotFound(KubeError):  # noqa: N818 (named as the API's reason)
    pass


class Conflict(KubeError):  # noqa: N818 (named as the API's reason)
    pass


@dataclass(frozen=True)
class ScaleResource:
    """Where a scale target's ``/scale`` lives."""

    group: str
    version: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str, name: str, subresource: str | None = None) -> str:
        base = "/api/v1" if not self.group else f"/apis/{self.group}/{self.version}"
        path = f"{base}/namespaces/{namespace}/{self.plural}/{name}"
        return f"{path}/{subresource}" if subresource else path


def _group_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


def _base(group: str, version: str) -> str:
    return "/api/v1" if not group else f"/apis/{group}/{version}"


def rfc3339_micro(seconds: float) -> str:
    """A Kubernetes MicroTime, e.g. ``2024-05-01T12:00:00.123456Z``."""
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class KubeClient:
    """A synchronous client; the worker calls it from threads (``asyncio.to_thread``)."""

    def __init__(self, *, kubeconfig: str | None, timeout_seconds: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.configuration = client.Configuration()
        if kubeconfig:
            config.load_kube_config(config_file=kubeconfig,  # type: ignore[no-untyped-call]
                                    client_configuration=self.configuration,
                                    persist_config=False)
        else:
            try:
                config.load_incluster_config(  # type: ignore[no-untyped-call]
                    client_configuration=self.configuration)
            except config.ConfigException:
                config.load_kube_config(  # type: ignore[no-untyped-call]
                    client_configuration=self.configuration, persist_config=False)
        self._api = client.ApiClient(self.configuration)
        self._timeout = timeout_seconds
        #: group/version → (when it was read, the listing or None if not served).
        self._discovery: dict[str, tuple[float, JSON | None]] = {}
        self._clock = clock
        self._lock = threading.Lock()

    def close(self) -> None:
        self._api.close()  # type: ignore[no-untyped-call]

    # -- connection, for kopf's login handler --------------------------------------------

    def connection_params(self) -> dict[str, Any]:
        """The same server and credentials for kopf (``kopf.ConnectionInfo(**params)``).

        The token as it is now: in a cluster the client re-reads the projected token file
        through its refresh hook, which a plain read of ``api_key`` skips — kopf logging in
        again after a 401 would get the expired one back."""
        cfg = self.configuration
        if cfg.refresh_api_key_hook is not None:
            cfg.refresh_api_key_hook(cfg)
        token = None
        auth = (cfg.api_key or {}).get("authorization") or (cfg.api_key or {}).get(
            "BearerToken")
        if auth:
            token = auth.split(" ", 1)[1] if auth.lower().startswith("bearer ") else auth
        return {"server": cfg.host, "ca_path": cfg.ssl_ca_cert,
                "insecure": not cfg.verify_ssl, "token": token, "scheme": "Bearer" if token
                else None, "certificate_path": cfg.cert_file,
                "private_key_path": cfg.key_file,
                "username": cfg.username or None, "password": cfg.password or None}

    # -- the one request path ------------------------------------------------------------

    def _request(self, method: str, path: str, *, body: Any = None,
                 query: Mapping[str, str] | None = None,
                 content_type: str = "application/json") -> JSON:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        try:
            _, url, sent_headers, sent_body, _ = self._api.param_serialize(
                method, path, query_params=list((query or {}).items()),
                header_params=headers, body=body, auth_settings=["BearerToken"])
            response = self._api.call_api(method, url, header_params=sent_headers,
                                          body=sent_body, _request_timeout=self._timeout)
            response.read()  # type: ignore[no-untyped-call]
            status, data = response.status, response.data
        except ApiException as exc:
            status, data = int(exc.status or 0), (exc.body or b"")
        except Exception as exc:
            # urllib3's connection errors and timeouts: no answer at all.
            raise KubeError(0, "Unreachable", f"{type(exc).__name__}: {exc}") from None
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data or "")
        try:
            payload: Any = json.loads(text) if text else {}
        except (ValueError, RecursionError):
            payload = None
        if status < 400 and not (text and isinstance(payload, dict)):
            # A success must carry an object: a body cut short, a proxy's page or nothing
            # at all is no answer (a truncated HPA list read as "no HPA" let the operator
            # scale a workload an HPA scales; a page read as a Scale had 0 replicas).
            raise KubeError(status, "InvalidResponse",
                            f"{method} {path} answered {status} without a JSON object: "
                            f"{text[:200]!r}")
        if payload is None:
            payload = {"message": text[:200]}
        if status >= 400:
            reason = str(payload.get("reason") or "Error") if isinstance(payload, dict) \
                else "Error"
            message = str(payload.get("message") or text[:200]) if isinstance(payload, dict) \
                else text[:200]
            error = {404: NotFound, 409: Conflict}.get(status, KubeError)
            raise error(status, reason, message)
        return payload  # type: ignore[no-any-return]

    # -- discovery (non-resource URLs: allowed to every authenticated user) ---------------

    def _resources(self, group: str, version: str) -> JSON | None:
        """The group version's resource list, None if it is not served; reused for
        :data:`DISCOVERY_TTL_SECONDS` (:data:`DISCOVERY_MISSING_TTL_SECONDS` when not
        served), so that an API installed or removed later is seen without a restart."""
        key = f"{group}/{version}"
        now = self._clock()
        with self._lock:
            cached = self._discovery.get(key)
        if cached is not None:
            read_at, listing = cached
            ttl = DISCOVERY_TTL_SECONDS if listing is not None else \
                DISCOVERY_MISSING_TTL_SECONDS
            if 0 <= now - read_at < ttl:
                return listing
        try:
            found: JSON | None = self._request("GET", _base(group, version))
        except NotFound:
            found = None
        with self._lock:
            self._discovery[key] = (now, found)
        return found

    def forget_discovery(self) -> None:
        with self._lock:
            self._discovery.clear()

    def has_resource(self, group: str, version: str, plural: str) -> bool:
        listing = self._resources(group, version) or {}
        return any(r.get("name") == plural for r in listing.get("resources", []))

    def resolve_scale(self, api_version: str, kind: str) -> ScaleResource | None:
        """The resource of ``kind`` if it has a ``/scale`` subresource, else None."""
        group, version = _group_version(api_version)
        listing = self._resources(group, version) or {}
        names = {r.get("name") for r in listing.get("resources", [])}
        for res in listing.get("resources", []):
            plural = str(res.get("name", ""))
            if res.get("kind") == kind and "/" not in plural and f"{plural}/scale" in names:
                return ScaleResource(group, version, plural, bool(res.get("namespaced", True)))
        return None

    # -- the scale target ------------------------------------------------------------------

    @requires("apps", "deployments/scale", ["get"])
    @requires("apps", "statefulsets/scale", ["get"])
    @requires("apps", "replicasets/scale", ["get"])
    def get_scale(self, resource: ScaleResource, namespace: str, name: str) -> JSON:
        return self._request("GET", resource.path(namespace, name, "scale"))

    @requires("apps", "deployments/scale", ["patch"])
    @requires("apps", "statefulsets/scale", ["patch"])
    @requires("apps", "replicasets/scale", ["patch"])
    def patch_scale(self, resource: ScaleResource, namespace: str, name: str, *,
                    replicas: int, resource_version: str) -> JSON:
        """Set replicas through ``/scale``; 409 if the Scale changed since it was read."""
        body = {"metadata": {"resourceVersion": resource_version},
                "spec": {"replicas": replicas}}
        return self._request("PATCH", resource.path(namespace, name, "scale"), body=body,
                             content_type=MERGE_PATCH, query=FIELD_MANAGER)

    # -- other autoscalers -----------------------------------------------------------------

    @requires("autoscaling", "horizontalpodautoscalers", ["list"])
    def list_hpas(self, namespace: str) -> list[JSON]:
        for version in ("v2", "v1"):
            if self.has_resource("autoscaling", version, "horizontalpodautoscalers"):
                path = f"/apis/autoscaling/{version}/namespaces/{namespace}/" \
                       f"horizontalpodautoscalers"
                return list(self._request("GET", path).get("items", []))
        return []

    @requires("keda.sh", "scaledobjects", ["list"])
    def list_scaled_objects(self, namespace: str) -> list[JSON]:
        """KEDA ScaledObjects, only where the API exists (discovery), else none."""
        if not self.has_resource("keda.sh", "v1alpha1", "scaledobjects"):
            return []
        path = f"/apis/keda.sh/v1alpha1/namespaces/{namespace}/scaledobjects"
        return list(self._request("GET", path).get("items", []))

    # -- leases ----------------------------------------------------------------------------

    @staticmethod
    def _lease_path(namespace: str, name: str | None = None) -> str:
        path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        return f"{path}/{name}" if name else path

    @requires("coordination.k8s.io", "leases", ["list"])
    def list_leases(self, namespace: str, *, label_selector: str) -> list[JSON]:
        """The Leases of ``namespace`` with these labels (the replicas' membership)."""
        return list(self._request("GET", self._lease_path(namespace),
                                  query={"labelSelector": label_selector}).get("items", []))

    @requires("coordination.k8s.io", "leases", ["get"])
    def get_lease(self, namespace: str, name: str) -> JSON | None:
        try:
            return self._request("GET", self._lease_path(namespace, name))
        except NotFound:
            return None

    @requires("coordination.k8s.io", "leases", ["create"])
    def create_lease(self, namespace: str, name: str, spec: JSON, *,
                     labels: Mapping[str, str], annotations: Mapping[str, str]) -> JSON:
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": namespace, "labels": dict(labels),
                             "annotations": dict(annotations)},
                "spec": spec}
        return self._request("POST", self._lease_path(namespace), body=body,
                             query=FIELD_MANAGER)

    @requires("coordination.k8s.io", "leases", ["update"])
    def replace_lease(self, lease: JSON, spec: JSON) -> JSON:
        """PUT with the lease's resourceVersion: 409 (Conflict) if anyone wrote since."""
        meta = lease["metadata"]
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {k: meta[k] for k in ("name", "namespace", "resourceVersion",
                                                  "labels", "annotations", "uid")
                             if k in meta},
                "spec": spec}
        return self._request("PUT", self._lease_path(meta["namespace"], meta["name"]),
                             body=body, query=FIELD_MANAGER)

    @requires("coordination.k8s.io", "leases", ["delete"])
    def delete_lease(self, lease: JSON) -> None:
        """Delete only this version of the lease (a precondition), never a newer one."""
        meta = lease["metadata"]
        body = {"apiVersion": "v1", "kind": "DeleteOptions",
                "preconditions": {"resourceVersion": meta["resourceVersion"]}}
        with contextlib.suppress(NotFound):
            self._request("DELETE", self._lease_path(meta["namespace"], meta["name"]),
                          body=body)

    # -- the policy's status, and events ---------------------------------------------------

    @requires("forescale.dev", "scalingpolicies/status", ["patch"])
    def patch_policy_status(self, namespace: str, name: str, status: JSON) -> JSON:
        path = (f"/apis/forescale.dev/v1alpha1/namespaces/{namespace}/scalingpolicies/"
                f"{name}/status")
        return self._request("PATCH", path, body={"status": status}, content_type=MERGE_PATCH,
                             query=FIELD_MANAGER)

    @requires("", "events", ["create"])
    def create_event(self, *, involved: Mapping[str, Any], type_: str, reason: str,
                     message: str, now: float, component: str, instance: str) -> None:
        meta = involved.get("metadata", {})
        namespace = str(meta.get("namespace") or "default")
        stamp = rfc3339_micro(now)
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{meta.get('name', 'x')}.{uuid.uuid4().hex[:16]}",
                         "namespace": namespace},
            "involvedObject": {"apiVersion": involved.get("apiVersion"),
                               "kind": involved.get("kind"), "name": meta.get("name"),
                               "namespace": namespace, "uid": meta.get("uid")},
            "type": type_, "reason": reason, "message": message[:1024],
            "firstTimestamp": stamp.split(".")[0] + "Z", "lastTimestamp":
                stamp.split(".")[0] + "Z", "count": 1,
            "source": {"component": component},
            "reportingComponent": component, "reportingInstance": instance,
        }
        self._request("POST", f"/api/v1/namespaces/{namespace}/events", body=body)
