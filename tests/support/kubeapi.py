"""A stateful Kubernetes API emulator with real semantics, served over HTTP on loopback.

The operator runs as a real process (kopf + the official ``kubernetes`` client, both
configured by a kubeconfig) against this emulator. It is built on PyPI ``kmock`` (pinned to
0.8), whose ``KubernetesEmulator`` keeps objects in memory and whose docs invite subclassing
for "special" semantics. What is kmock's and what is ours:

kmock's, used as is
    * the request entry point and its error capture (``RawHandler``), the parsed request
      type (``kmock.Request``) and the request log (``emulator.requests``);
    * discovery: ``/api``, ``/apis``, ``/api/v1``, ``/apis/<group>[/<version>]``,
      ``/version`` (``KubernetesScaffold``), fed by kmock's bundled list of built-in
      resources plus every CRD registered here (API group versions re-ordered by
      Kubernetes priority, which kmock leaves to set order);
    * object storage with full version history (``emulator.objects``, kmock's
      ``ObjectsArray``), and the resource registry (``emulator.resources``);
    * the kmock DSL for ad-hoc reactions on non-resource paths.

Ours, because kmock 0.8 cannot be configured into them (see ENVIRONMENT.md)
    * every request on a resource path (``.../<plural>[/<name>[/<subresource>]]``):
      ``KubernetesEmulator`` mutates its store in ``_handle`` *before* any reaction runs,
      unconditionally, with no resourceVersion, no preconditions, no PUT, no subresources.
      Preconditions must be checked before a write, so that path is replaced, not
      wrapped. We skip ``KubernetesEmulator.__attrs_post_init__`` (its CRUD reactions)
      and ``KubernetesEmulator._handle`` (its eager mutation) and serve resource paths
      ourselves, still storing into kmock's ``objects``;
    * request path parsing: kmock's parser raises on ``/api/v1/namespaces`` and reads
      ``/api/v1/namespaces/<name>`` as a namespace scope, so Namespace objects cannot be
      addressed. ``__call__`` is re-stated with our parser (same steps as kmock's);
    * kmock's ``Server`` is not used: it installs a process-wide aiohttp DNS interceptor
      that must be exited in strict LIFO order, which emulators in background threads (and
      a kopf running in the same process) cannot guarantee. aiohttp's low-level server
      serves the same handler, with handler cancellation so that closed watches end.

Semantics (those of kube-apiserver unless stated):
    * ``metadata.resourceVersion`` from one global counter, new on every write that changes
      an object (create, update, patch, status/scale writes, deletion marking, deletion).
      A write that changes nothing is a no-op: same resourceVersion, no watch event, as on
      a real apiserver; the audit log still records it (``changed=False``);
    * 409 ``Conflict`` on a stale ``metadata.resourceVersion`` in a PUT or PATCH body (also
      on /status and /scale), 409 ``AlreadyExists`` on create, 404 ``NotFound``,
      422 ``Invalid`` for a failed JSON-patch ``test``/op, for custom-resource schema
      violations and for a PUT of a custom resource without a resourceVersion;
    * PATCH as ``merge-patch``, ``json-patch`` and ``strategic-merge-patch`` (built-ins
      only; custom resources answer 415 like a real server). The strategic merge knows the
      common merge keys (containers/env/volumes by name, conditions by type, finalizers as
      a set, ...) and the ``$patch``/``$deleteFromPrimitiveList`` directives, not the full
      per-type schema. Server-side apply answers 415;
    * ``/status`` isolated from the rest for resources registered with it (built-ins and
      CRDs); status is dropped on create; ``/scale`` as ``autoscaling/v1`` Scale for
      built-ins that have it (deployments, statefulsets, replicasets, RCs) and for CRDs
      with ``subresources.scale``; only ``spec.replicas`` is writable through it;
    * ``metadata.generation`` for custom resources and built-in API-group resources with a
      status subresource: bumped when anything but metadata (and status, where it is a
      subresource) changes, and when deletion is marked;
    * uid, creationTimestamp, generateName, name validation, required namespaces
      (``default``, ``kube-system``, ``kube-public``, ``kube-node-lease`` exist at start);
    * finalizers: DELETE marks ``deletionTimestamp``; the object goes away when the last
      finalizer is removed; no new finalizers while deleting; delete preconditions;
    * list with labelSelector (full syntax), fieldSelector (``metadata.name``,
      ``metadata.namespace``, plus the event fields), limit/continue (a consistent
      snapshot); watch from a resourceVersion (only later events), with selectors
      (objects leaving a selector arrive as DELETED, entering as ADDED), initial events
      (``sendInitialEvents`` ends with the ``k8s.io/initial-events-end`` BOOKMARK),
      ``timeoutSeconds``, and 410 ``Expired`` beyond the retained history;
    * CRDs: creating one registers its served versions (discovery, subresources, scale
      paths); its objects are pruned, defaulted and validated against
      ``openAPIV3Schema`` (jsonschema; CEL rules are not evaluated); all versions share
      storage (no conversion webhooks); deleting a CRD deletes its objects;
    * not emulated: admission, RBAC (identities are recorded, not authorised), garbage
      collection by ownerReferences, server-side apply, dryRun beyond skipping the commit,
      controllers (except the opt-in deployment controller: ``deployment_controller=True``
      mirrors ``spec.replicas`` into the status, as identity ``CONTROLLER_IDENTITY``).

Audit log: every write request on a resource path (and every injected fault on a write)
is recorded with a monotonic sequence number, wall time, method, path, resource, kind,
namespace/name, the requesting identity, the resulting resourceVersion and the status
code. The identity is the bearer token (``Impersonate-User`` wins if sent; basic-auth user
name otherwise; ``system:anonymous`` without credentials): see ``tests/support/kubeconfig.py``
for why. Read it in-process (``EmulatorHandle.audit()``) or over HTTP
(``GET /_emulator/audit?since=<seq>``).

Fault injection: ``EmulatorHandle.inject_fault(path=<regex>, status=500, count=N)`` (or
``POST /_emulator/faults``) answers the next N matching requests with that status and a
proper Status body, without touching any state.

Threading: ``run_emulator()`` serves from a background thread with its own event loop,
so a synchronous pytest test, the operator process and kopf's own loop never share one.
All state lives in that loop; the handle crosses over with ``call()``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import bisect
import collections
import concurrent.futures
import contextlib
import copy
import dataclasses
import datetime
import itertools
import json
import logging
import pathlib
import random
import re
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import aiohttp.web
import attrs
import jsonpatch
import jsonpointer
import jsonschema
import kmock
import pytest
from jsonschema.protocols import Validator

# Private kmock modules: the request parser hook and the DSL dispatcher have no public
# name in 0.8. kmock is pinned (pyproject: kmock==0.8), and the semantics tests go over
# HTTP, so a kmock upgrade that moves these fails loudly instead of weakening anything.
from kmock._internal import apps, parsing, rendering

from tests.support import polling
from tests.support.kubeconfig import write_kubeconfig

logger = logging.getLogger(__name__)

JSON = dict[str, Any]
T = TypeVar("T")

KMOCK_VERSION = "0.8"
ANONYMOUS_IDENTITY = "system:anonymous"
HARNESS_IDENTITY = "test-harness"
CONTROLLER_IDENTITY = "system:serviceaccount:kube-system:deployment-controller"
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
EMULATED_SUBRESOURCES = frozenset({"status", "scale"})
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

NAMESPACES = kmock.resource("", "v1", "namespaces")
CRDS = kmock.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
DEPLOYMENTS = kmock.resource("apps", "v1", "deployments")

# Server-owned metadata: clients cannot change it through updates or patches.
_SERVER_OWNED_METADATA = (
    "name",
    "namespace",
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "resourceVersion",
)
_CUSTOM_RESOURCE_VERBS = (
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
)
_STATUS_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_STALE = (
    "the object has been modified; please apply your changes to the latest version and try again"
)
_NAMESPACE_MISMATCH = (
    "the namespace of the provided object does not match the namespace sent on the request"
)
_GENERATE_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the apiserver's: no vowels, no 0/1/3


# --------------------------------------------------------------------------------------
# Errors, answered as metav1 Status bodies.
# --------------------------------------------------------------------------------------


class ApiError(Exception):
    """A failure the way kube-apiserver reports it: an HTTP code and a metav1 Status."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        reason: str | None = None,
        details: JSON | None = None,
        retry_after_seconds: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or _STATUS_REASONS.get(code, "Unknown")
        self.details = details
        self.retry_after_seconds = retry_after_seconds

    def status(self) -> JSON:
        body: JSON = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body

    def headers(self) -> dict[str, str]:
        if self.retry_after_seconds is None:
            return {}
        return {"Retry-After": str(self.retry_after_seconds)}


def _status_response(error: ApiError) -> aiohttp.web.Response:
    return aiohttp.web.json_response(error.status(), status=error.code, headers=error.headers())


# --------------------------------------------------------------------------------------
# Small pure helpers.
# --------------------------------------------------------------------------------------


def _now_rfc3339() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _api_version(group: str, version: str) -> str:
    return version if group == "" else f"{group}/{version}"


def _qualified(group: str, plural: str) -> str:
    return plural if group == "" else f"{plural}.{group}"


def _metadata(obj: Mapping[str, Any]) -> JSON:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _get_path(obj: Any, dotted: str) -> Any:
    """Read a CRD-style JSON path such as ``.spec.replicas``; None where absent."""
    value = obj
    for part in dotted.strip(".").split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _set_path(obj: JSON, dotted: str, value: Any) -> JSON:
    """Return a copy of ``obj`` with ``value`` at a CRD-style JSON path."""
    result = copy.deepcopy(obj)
    node = result
    parts = dotted.strip(".").split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value
    return result


def _version_priority(version: str) -> tuple[int, int, int, str]:
    """Sort key for API versions, highest priority first: v2 > v1 > v1beta2 > v1alpha1 > x."""
    match = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if match is None:
        return (3, 0, 0, version)
    major = int(match.group(1))
    stability = {None: 0, "beta": 1, "alpha": 2}[match.group(2)]
    minor = int(match.group(3) or 0)
    return (stability, -major, -minor, version)


def _int_param(params: Mapping[str, str], name: str) -> int:
    try:
        return int(params.get(name) or 0)
    except ValueError as e:
        raise ApiError(400, f"invalid {name}: {params.get(name)!r}") from e


def request_identity(headers: Mapping[str, str]) -> str:
    """Who is asking: Impersonate-User, else the bearer token, else the basic-auth user."""
    impersonated = headers.get("Impersonate-User")
    if impersonated:
        return impersonated
    scheme, _, credentials = headers.get("Authorization", "").partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer" and credentials:
        return credentials
    if scheme.lower() == "basic" and credentials:
        with contextlib.suppress(ValueError):
            user, _, _ = base64.b64decode(credentials).decode("utf-8").partition(":")
            if user:
                return user
    return ANONYMOUS_IDENTITY


# --------------------------------------------------------------------------------------
# Selectors.
# --------------------------------------------------------------------------------------

_LABEL_KEY = re.compile(
    r"([A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
)
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
_SET_REQUIREMENT = re.compile(r"(?P<key>[^\s!=()]+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)")


@dataclasses.dataclass(frozen=True, kw_only=True)
class LabelRequirement:
    """One clause of a label selector, as kube-apiserver interprets it."""

    key: str
    operator: str  # "=", "!=", "in", "notin", "exists", "!"
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        match self.operator:
            case "exists":
                return present
            case "!":
                return not present
            case "=" | "in":
                return present and value in self.values
            case "!=" | "notin":
                return not present or value not in self.values
        raise AssertionError(self.operator)  # pragma: no cover


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside parentheses (set-based clauses contain commas)."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


def parse_label_selector(text: str) -> tuple[LabelRequirement, ...]:
    """Parse the labelSelector query syntax; raise ApiError(400) like the apiserver."""

    def check(key: str, values: Iterable[str]) -> None:
        if not _LABEL_KEY.fullmatch(key):
            raise ApiError(400, f"unable to parse requirement: invalid label key {key!r}")
        for value in values:
            if not _LABEL_VALUE.fullmatch(value):
                raise ApiError(400, f"unable to parse requirement: invalid label value {value!r}")

    requirements: list[LabelRequirement] = []
    for clause in _split_top_level(text):
        set_match = _SET_REQUIREMENT.fullmatch(clause)
        if set_match:
            values = frozenset(v.strip() for v in set_match["values"].split(",") if v.strip())
            check(set_match["key"], values)
            requirements.append(
                LabelRequirement(key=set_match["key"], operator=set_match["op"], values=values)
            )
            continue
        for operator in ("!=", "==", "="):
            if operator in clause:
                key, _, value = (part.strip() for part in clause.partition(operator))
                check(key, [value])
                normalised = "=" if operator == "==" else operator
                requirements.append(
                    LabelRequirement(key=key, operator=normalised, values=frozenset({value}))
                )
                break
        else:
            negated = clause.startswith("!")
            key = clause[1:].strip() if negated else clause
            check(key, [])
            requirements.append(LabelRequirement(key=key, operator="!" if negated else "exists"))
    return tuple(requirements)


def label_selector_matches(
    requirements: Sequence[LabelRequirement], obj: Mapping[str, Any]
) -> bool:
    labels = _metadata(obj).get("labels") or {}
    return all(requirement.matches(labels) for requirement in requirements)


def format_label_selector(selector: Mapping[str, Any] | None) -> str:
    """Render a metav1.LabelSelector (or an RC's plain map) as the query syntax."""
    if not selector:
        return ""
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        selector = {"matchLabels": selector}  # ReplicationController: a plain map
    clauses = [
        f"{key}={value}" for key, value in sorted((selector.get("matchLabels") or {}).items())
    ]
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression.get("key"), expression.get("operator")
        values = ",".join(sorted(expression.get("values") or []))
        match operator:
            case "In":
                clauses.append(f"{key} in ({values})")
            case "NotIn":
                clauses.append(f"{key} notin ({values})")
            case "Exists":
                clauses.append(f"{key}")
            case "DoesNotExist":
                clauses.append(f"!{key}")
    return ",".join(clauses)


# Field selectors are per resource on a real apiserver; anything else is a 400 there, so
# it is a 400 here too (a lenient emulator would hide an operator bug until production).
_COMMON_FIELD_LABELS = frozenset({"metadata.name", "metadata.namespace"})
_EXTRA_FIELD_LABELS: dict[tuple[str, str], frozenset[str]] = {
    ("", "events"): frozenset(
        {
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        }
    ),
    ("events.k8s.io", "events"): frozenset(
        {
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "regarding.apiVersion",
            "reason",
            "reportingController",
            "type",
        }
    ),
    ("", "pods"): frozenset(
        {"spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "status.phase"}
    ),
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class FieldRequirement:
    field: str
    equal: bool
    value: str

    def matches(self, obj: Mapping[str, Any]) -> bool:
        path = "source.component" if self.field == "source" else self.field
        actual = _get_path(obj, path)
        actual_text = "" if actual is None else str(actual)
        return (actual_text == self.value) == self.equal


def parse_field_selector(text: str, *, group: str, plural: str) -> tuple[FieldRequirement, ...]:
    supported = _COMMON_FIELD_LABELS | _EXTRA_FIELD_LABELS.get((group, plural), frozenset())
    requirements: list[FieldRequirement] = []
    for clause in _split_top_level(text):
        for operator in ("!=", "==", "="):
            if operator in clause:
                field, _, value = (part.strip() for part in clause.partition(operator))
                break
        else:
            raise ApiError(400, f"invalid selector: '{clause}'; can't understand '{clause}'")
        if field not in supported:
            raise ApiError(400, f"field label not supported: {field}")
        requirements.append(FieldRequirement(field=field, equal=operator != "!=", value=value))
    return tuple(requirements)


# --------------------------------------------------------------------------------------
# Patches.
# --------------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: dicts merge, null deletes, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# The patchMergeKey of the list fields most often patched. The real strategic merge reads
# them from each type's Go struct tags; this is the common subset, keyed by field name.
_SMP_MERGE_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "env": ("name",),
    "envFrom": (),  # atomic
    "volumes": ("name",),
    "volumeMounts": ("mountPath",),
    "volumeDevices": ("devicePath",),
    "imagePullSecrets": ("name",),
    "conditions": ("type",),
    "ownerReferences": ("uid",),
    "hostAliases": ("ip",),
    "topologySpreadConstraints": ("topologyKey",),
    "ports": ("containerPort", "port"),
    "resourceClaims": ("name",),
}
_SMP_PRIMITIVE_SETS = frozenset({"finalizers"})


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """An approximation of Kubernetes' strategic merge patch (see the module docstring)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    result = dict(target) if isinstance(target, dict) else {}
    deletions: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            deletions[key.partition("/")[2]] = list(value or [])
            continue
        if key.startswith("$"):  # $setElementOrder/..., $retainKeys: ordering/pruning hints
            continue
        current = result.get(key)
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            merged = strategic_merge_patch(current, value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list) and key in _SMP_PRIMITIVE_SETS:
            existing = list(current) if isinstance(current, list) else []
            result[key] = existing + [item for item in value if item not in existing]
        elif isinstance(value, list) and _SMP_MERGE_KEYS.get(key) and isinstance(current, list):
            result[key] = _merge_keyed_list(current, value, _SMP_MERGE_KEYS[key])
        else:
            result[key] = copy.deepcopy(value)
    for key, removed in deletions.items():
        if isinstance(result.get(key), list):
            result[key] = [item for item in result[key] if item not in removed]
    return result


def _merge_keyed_list(
    current: list[Any], patch: list[Any], candidates: tuple[str, ...]
) -> list[Any]:
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        return [
            copy.deepcopy(item)
            for item in patch
            if not (isinstance(item, dict) and "$patch" in item)
        ]
    present = [
        key for key in candidates if any(isinstance(item, dict) and key in item for item in patch)
    ]
    if not present:
        return copy.deepcopy(patch)
    merge_key = present[0]
    result = [copy.deepcopy(item) for item in current]
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            result.append(copy.deepcopy(item))
            continue
        index = next(
            (
                i
                for i, old in enumerate(result)
                if isinstance(old, dict) and old.get(merge_key) == item[merge_key]
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
        elif index is None:
            result.append(strategic_merge_patch({}, item))
        else:
            result[index] = strategic_merge_patch(result[index], item)
    return result


def apply_json_patch(document: JSON, operations: Any) -> JSON:
    """RFC 6902 JSON patch; a failed ``test`` or an impossible op is 422, as kopf expects."""
    if not isinstance(operations, list):
        raise ApiError(400, "json patch must be a list of operations")
    try:
        patched = jsonpatch.apply_patch(copy.deepcopy(document), operations, in_place=False)
    except jsonpatch.JsonPatchTestFailed as e:
        raise ApiError(
            422, f"the server rejected our request due to an error in our request: {e}"
        ) from e
    except (
        jsonpatch.JsonPatchException,
        jsonpointer.JsonPointerException,
        KeyError,
        IndexError,
        TypeError,
    ) as e:
        raise ApiError(
            422, f"the server rejected our request due to an error in our request: {e}"
        ) from e
    if not isinstance(patched, dict):
        raise ApiError(422, "the patch replaced the whole object with a non-object")
    return patched


# --------------------------------------------------------------------------------------
# Structural schemas of custom resources: pruning, defaulting, validation.
# --------------------------------------------------------------------------------------

_ROOT_KEYS = ("apiVersion", "kind", "metadata")


def _prune(value: Any, schema: Any) -> Any:
    """Drop fields the structural schema does not declare (and non-nullable nulls)."""
    if not isinstance(schema, dict):
        return value
    if isinstance(value, list):
        items = schema.get("items")
        return [_prune(item, items) for item in value] if isinstance(items, dict) else value
    if not isinstance(value, dict):
        return value
    properties: dict[str, Any] = schema.get("properties") or {}
    additional = schema.get("additionalProperties")
    preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
    embedded = bool(schema.get("x-kubernetes-embedded-resource"))
    result: JSON = {}
    for key, item in value.items():
        child = (
            properties.get(key)
            if key in properties
            else additional
            if isinstance(additional, dict)
            else None
        )
        nullable = isinstance(child, dict) and bool(child.get("nullable"))
        if item is None and not nullable and (child is not None or not preserve):
            continue  # nulls of non-nullable fields are pruned before defaulting
        if child is not None:
            result[key] = _prune(item, child)
        elif preserve or additional is True or (embedded and key in _ROOT_KEYS):
            result[key] = item
    return result


def _apply_defaults(value: Any, schema: Any) -> Any:
    if not isinstance(schema, dict):
        return value
    if isinstance(value, list):
        items = schema.get("items")
        return (
            [_apply_defaults(item, items) for item in value] if isinstance(items, dict) else value
        )
    if not isinstance(value, dict):
        return value
    properties: dict[str, Any] = schema.get("properties") or {}
    additional = schema.get("additionalProperties")
    result = dict(value)
    for key, child in properties.items():
        if key not in result and isinstance(child, dict) and "default" in child:
            result[key] = copy.deepcopy(child["default"])
        if key in result:
            result[key] = _apply_defaults(result[key], child)
    if isinstance(additional, dict):
        for key, item in result.items():
            if key not in properties:
                result[key] = _apply_defaults(item, additional)
    return result


def _to_jsonschema(schema: Any) -> Any:
    """Translate an OpenAPI v3 structural schema into draft-4 JSON schema terms."""
    if isinstance(schema, list):
        return [_to_jsonschema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result: JSON = {}
    for key, value in schema.items():
        if key.startswith("x-kubernetes-") or key in (
            "nullable",
            "default",
            "example",
            "externalDocs",
        ):
            continue
        if key in ("properties", "patternProperties", "definitions"):
            result[key] = {name: _to_jsonschema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not", "allOf", "anyOf", "oneOf"):
            result[key] = _to_jsonschema(value)
        else:
            result[key] = value
    if schema.get("x-kubernetes-int-or-string") and "type" not in result:
        result["type"] = ["integer", "string"]
    if schema.get("nullable") and isinstance(result.get("type"), str):
        result["type"] = [result["type"], "null"]
    return result


def _build_validator(schema: JSON | None) -> Validator | None:
    if not schema:
        return None
    converted = _to_jsonschema(schema)
    # Metadata is validated by the apiserver itself, not by the CRD's schema.
    properties = {
        k: v for k, v in (converted.get("properties") or {}).items() if k not in _ROOT_KEYS
    }
    converted = {**converted, "properties": properties}
    if "required" in converted:
        converted["required"] = [k for k in converted["required"] if k not in _ROOT_KEYS]
        if not converted["required"]:
            del converted["required"]
    jsonschema.Draft4Validator.check_schema(converted)
    validator: Validator = jsonschema.Draft4Validator(converted)
    return validator


@dataclasses.dataclass(frozen=True, kw_only=True)
class CustomResource:
    """What a served version of a CRD means to the emulator."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    storage_version: str
    schema: JSON | None
    scale: (
        JSON | None
    )  # subresources.scale: specReplicasPath, statusReplicasPath, labelSelectorPath
    validator: Validator | None = dataclasses.field(repr=False, compare=False)

    @property
    def storage(self) -> kmock.resource:
        return kmock.resource(self.group, self.storage_version, self.plural)


# --------------------------------------------------------------------------------------
# Audit log and fault injection.
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class AuditEntry:
    """One write request as the emulator answered it."""

    seq: int
    wall_time: float
    monotonic_time: float
    method: str
    path: str
    query: str
    group: str | None
    version: str | None
    resource: str | None
    subresource: str | None
    kind: str | None
    namespace: str | None
    name: str | None
    identity: str
    user_agent: str | None
    status_code: int
    resource_version: str | None  # the object's resourceVersion after the request
    changed: bool  # whether this request wrote a new resourceVersion
    fault: bool  # answered by an injected fault, state untouched
    request_body: Any
    result: JSON | None  # the object as stored after the request (for /scale: the owner)

    def to_json(self) -> JSON:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AuditEntry:
        fields: dict[str, Any] = {
            field.name: data.get(field.name) for field in dataclasses.fields(cls)
        }
        return cls(**fields)


@dataclasses.dataclass(kw_only=True)
class Fault:
    """Answer the next ``count`` requests whose path fully matches ``path`` with ``status``."""

    path: str
    status: int
    count: int = 1
    methods: frozenset[str] | None = None  # None: every method
    message: str | None = None
    fault_id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex[:12])

    def __post_init__(self) -> None:
        self._pattern = re.compile(self.path)
        if self.methods is not None:
            self.methods = frozenset(method.upper() for method in self.methods)

    def matches(self, *, method: str, path: str) -> bool:
        method_ok = self.methods is None or method.upper() in self.methods
        return method_ok and self.count > 0 and self._pattern.fullmatch(path) is not None

    def error(self, *, method: str, path: str) -> ApiError:
        message = self.message or f"injected fault: {method} {path} answered {self.status}"
        retry = 1 if self.status in (429, 503) else None
        return ApiError(self.status, message, retry_after_seconds=retry)

    def to_json(self) -> JSON:
        return {
            "fault_id": self.fault_id,
            "path": self.path,
            "status": self.status,
            "count": self.count,
            "methods": sorted(self.methods) if self.methods is not None else None,
            "message": self.message,
        }


# --------------------------------------------------------------------------------------
# Request parsing (kmock's parser cannot address Namespace objects).
# --------------------------------------------------------------------------------------


def parse_api_path(path: str) -> parsing.ParsedPath:
    """Split an API path into group/version/namespace/plural/name/subresource.

    Same result shape as kmock's ``parsing.parse_path``, but ``/api/v1/namespaces`` and
    ``/api/v1/namespaces/<name>[/status|/finalize]`` address Namespace objects, as on a
    real apiserver, instead of failing or being read as a namespace scope.
    """
    parts = [part for part in path.strip("/").split("/") if part]
    version: str | None
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 2 and parts[0] == "apis":
        group, version, rest = parts[1], (parts[2] if len(parts) >= 3 else None), parts[3:]
    else:
        return parsing.ParsedPath()
    namespace: str | None = None
    namespace_object = rest[:1] == ["namespaces"] and (
        len(rest) < 3 or (len(rest) == 3 and rest[2] in ("status", "finalize"))
    )
    if rest[:1] == ["namespaces"] and len(rest) >= 3 and not namespace_object:
        namespace, rest = rest[1], rest[2:]
    plural = rest[0] if rest else None
    name = rest[1] if len(rest) >= 2 else None
    subresource = "/".join(rest[2:]) or None
    return parsing.ParsedPath(group, version, plural, namespace, name, subresource)


async def _parse_request(
    raw_request: aiohttp.web.BaseRequest, *, request_id: int
) -> rendering.Request:
    """Build a kmock Request the way ``kmock.Request._parse`` does, with our path parser."""
    body = await raw_request.read()
    text = body.decode("utf-8", errors="replace")
    data: Any
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = None
    parsed = parse_api_path(raw_request.path)
    resource = (
        None
        if parsed.group is None
        else kmock.resource(group=parsed.group, version=parsed.version, plural=parsed.plural)
    )
    method = kmock.method(raw_request.method)
    action = parsing.guess_k8s(parsed, method, dict(raw_request.query))
    return rendering.Request(
        id=request_id,
        raw_request=raw_request,
        url=raw_request.url,
        method=raw_request.method,
        params=dict(raw_request.query),
        headers=dict(raw_request.headers),
        cookies=dict(raw_request.cookies),
        data=data,
        body=body,
        text=text,
        action=action,
        resource=resource,
        namespace=parsed.namespace,
        name=parsed.name,
        subresource=parsed.subresource,
    )


# --------------------------------------------------------------------------------------
# The emulator.
# --------------------------------------------------------------------------------------

ObjectKey = tuple[kmock.resource, str | None, str]


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Target:
    """A resolved resource request: what it addresses and how that resource behaves."""

    resource: kmock.resource  # as requested
    storage: kmock.resource  # where its objects live (CRDs: the storage version)
    info: kmock.ResourceInfo
    custom: CustomResource | None
    namespace: str | None
    name: str | None
    subresource: str | None

    @property
    def group(self) -> str:
        return self.resource.group or ""

    @property
    def version(self) -> str:
        return self.resource.version or ""

    @property
    def plural(self) -> str:
        return self.resource.plural or ""

    @property
    def kind(self) -> str:
        return self.info.kind or self.plural.capitalize()

    @property
    def api_version(self) -> str:
        return _api_version(self.group, self.version)

    @property
    def qualified(self) -> str:
        return _qualified(self.group, self.plural)

    @property
    def has_status(self) -> bool:
        return "status" in self.info.subresources

    @property
    def tracks_generation(self) -> bool:
        return self.custom is not None or (self.group != "" and self.has_status)

    def key(self, name: str | None = None) -> ObjectKey:
        object_name = name if name is not None else self.name
        assert object_name is not None
        return (self.storage, self.namespace, object_name)

    def with_(self, **changes: Any) -> _Target:
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(kw_only=True)
class _Outcome:
    """What a request did, for the audit log."""

    name: str | None = None
    namespace: str | None = None
    resource_version: str | None = None
    changed: bool = False
    result: JSON | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class _WatchEvent:
    resource_version: int
    storage: kmock.resource
    namespace: str | None
    type: str
    obj: JSON
    old: JSON | None


@attrs.define(kw_only=True)
class KubeApiEmulator(kmock.KubernetesEmulator):
    """kmock's KubernetesEmulator with the semantics an operator's correctness depends on."""

    deployment_controller: bool = False
    watch_history: int = 10_000
    bootstrap_namespaces: tuple[str, ...] = DEFAULT_NAMESPACES

    _resource_version: int = attrs.field(default=0, init=False)
    _events: list[_WatchEvent] = attrs.field(factory=list, init=False)
    _event_versions: list[int] = attrs.field(factory=list, init=False)
    _compacted_version: int = attrs.field(default=0, init=False)
    _changed: asyncio.Event = attrs.field(factory=asyncio.Event, init=False)
    _closing: bool = attrs.field(default=False, init=False)
    _custom: dict[kmock.resource, CustomResource] = attrs.field(factory=dict, init=False)
    _audit: list[AuditEntry] = attrs.field(factory=list, init=False)
    _audit_sequence: Iterator[int] = attrs.field(factory=lambda: itertools.count(1), init=False)
    _faults: list[Fault] = attrs.field(factory=list, init=False)
    _continuations: collections.OrderedDict[str, tuple[int, list[JSON]]] = attrs.field(
        factory=collections.OrderedDict, init=False
    )

    def __attrs_post_init__(self) -> None:
        # Skip KubernetesEmulator's own post-init on purpose: it registers kmock's CRUD
        # reactions, which we replace. The scaffold's discovery reactions stay.
        kmock.KubernetesScaffold.__attrs_post_init__(self)
        with warnings.catch_warnings():  # kmock 0.8 reads its bundle with a deprecated call
            warnings.simplefilter("ignore", DeprecationWarning)
            self.resources.load_bundled()
        for namespace in self.bootstrap_namespaces:
            target = self._resolve_parts(NAMESPACES, namespace=None, name=None, subresource=None)
            self._create(target, {"metadata": {"name": namespace}}, _Outcome(), dry_run=False)

    # ---------------------------------------------------------------- request entry --

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # The same steps as kmock's RawHandler.__call__ (0.8), with parse_api_path().
        await raw_request.read()
        raw_response: aiohttp.web.StreamResponse | None = None
        try:
            if self.limit is not None and len(self._requests) >= self.limit:
                raise apps.KMockError("Too many requests have been served so far.")
            request = await _parse_request(raw_request, request_id=len(self._requests))
            self._requests.append(request)
            try:
                return await self._handle(request)
            except rendering.StreamingError as e:
                raw_response = e.args[0]
                if e.__cause__ is not None:
                    raise e.__cause__ from None
                raise
        except Exception as e:
            if not self._errors:
                raise
            if not (isinstance(e, kmock.KubernetesError) and e.status < 500):  # kmock's 404s
                logger.exception(
                    "The emulator failed on %s %s", raw_request.method, raw_request.path
                )
            self._errors[-1].append(e)
            if raw_response is None or not raw_response.prepared:
                return await self._render_error(e)
            await self._stream_error(e, raw_response)
            await raw_response.write_eof()
            return raw_response

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        path = request.url.path
        if path == "/_emulator" or path.startswith("/_emulator/"):
            return await self._serve_control(request)

        method = str(request.method.value).upper()
        fault = self._take_fault(method=method, path=path)
        if fault is not None:
            error = fault.error(method=method, path=path)
            if method in WRITE_METHODS:
                self._record_audit(
                    request, target=None, status=error.code, outcome=_Outcome(), fault=True
                )
            return _status_response(error)

        if request.resource is not None and request.resource.plural is not None:
            return await self._serve_resource(request, method=method)

        # Discovery, /version, user-declared kmock reactions and the 404 fallback: kmock's
        # DSL. KubernetesEmulator._handle is bypassed on purpose (see the module docstring).
        return await apps.RawHandler._handle(self, request)

    async def _serve_resource(
        self, request: rendering.Request, *, method: str
    ) -> aiohttp.web.StreamResponse:
        target: _Target | None = None
        outcome = _Outcome()
        status = 500  # if the emulator itself fails, the audit log says so too
        try:
            target = self._resolve(request)
            if method == "GET" and request.params.get("watch") in ("true", "1"):
                return await self._stream_watch(request, target)
            status, body = self._dispatch(request, target, method=method, outcome=outcome)
            return aiohttp.web.json_response(body, status=status)
        except ApiError as e:
            status = e.code
            return _status_response(e)
        finally:
            if method in WRITE_METHODS:
                self._record_audit(
                    request, target=target, status=status, outcome=outcome, fault=False
                )

    def _dispatch(
        self, request: rendering.Request, target: _Target, *, method: str, outcome: _Outcome
    ) -> tuple[int, JSON]:
        """Serve one non-watch request. Synchronous on purpose: every write is atomic."""
        params = request.params
        dry_run = bool(params.get("dryRun"))
        if method == "GET":
            if target.name is None:
                return 200, self._list(target, params)
            return 200, self._read(target)
        body = self._body(request, required=method != "DELETE")
        if method == "POST" and target.name is None and target.subresource is None:
            if target.info.namespaced and target.namespace is None:
                raise ApiError(
                    405, "the server does not allow this method on the requested resource"
                )
            return 201, self._create(target, body, outcome, dry_run=dry_run)
        if method == "PUT" and target.name is not None:
            return 200, self._replace(target, body, outcome, dry_run=dry_run)
        if method == "PATCH" and target.name is not None:
            content_type = (
                request._raw_request.content_type if request._raw_request is not None else ""
            )
            return 200, self._patch(target, body, content_type, outcome, dry_run=dry_run)
        if method == "DELETE" and target.name is not None and target.subresource is None:
            body_dry_run = isinstance(body, dict) and bool(body.get("dryRun"))
            return 200, self._delete(target, body, outcome, dry_run=dry_run or body_dry_run)
        if method == "DELETE" and target.name is None:
            return 200, self._delete_collection(target, params, body, dry_run=dry_run)
        raise ApiError(405, "the server does not allow this method on the requested resource")

    @staticmethod
    def _body(request: rendering.Request, *, required: bool) -> Any:
        if not request.body:
            if required:
                raise ApiError(400, "the request body is empty")
            return None
        try:
            return json.loads(request.body)
        except ValueError as e:
            raise ApiError(400, f"the request body is not JSON: {e}") from e

    # ----------------------------------------------------------------- resolution --

    def _resolve(self, request: rendering.Request) -> _Target:
        assert request.resource is not None
        return self._resolve_parts(
            request.resource,
            namespace=request.namespace,
            name=request.name,
            subresource=request.subresource,
        )

    def _resolve_parts(
        self,
        resource: kmock.resource,
        *,
        namespace: str | None,
        name: str | None,
        subresource: str | None,
    ) -> _Target:
        if resource not in self.resources:
            raise ApiError(404, "the server could not find the requested resource")
        info = self.resources[resource]
        custom = self._custom.get(resource)
        storage = custom.storage if custom is not None else resource
        if not info.namespaced and namespace is not None:
            raise ApiError(404, "the server could not find the requested resource")
        if info.namespaced and namespace is None and name is not None:
            raise ApiError(404, "the server could not find the requested resource")
        if subresource is not None and (
            name is None
            or subresource not in EMULATED_SUBRESOURCES
            or subresource not in info.subresources
        ):
            raise ApiError(
                404,
                f"the server could not find the requested resource ({subresource} is not served)",
            )
        return _Target(
            resource=resource,
            storage=storage,
            info=info,
            custom=custom,
            namespace=namespace,
            name=name,
            subresource=subresource,
        )

    def resource_path(
        self,
        resource: kmock.resource,
        *,
        namespace: str | None = None,
        name: str | None = None,
        subresource: str | None = None,
    ) -> str:
        """The URL path of a resource, collection or object (for the test harness)."""
        if resource not in self.resources:
            raise KeyError(f"Unknown resource: {resource!r}")
        info = self.resources[resource]
        prefix = (
            f"/api/{resource.version}"
            if resource.group == ""
            else f"/apis/{resource.group}/{resource.version}"
        )
        if info.namespaced and namespace is not None:
            prefix += f"/namespaces/{namespace}"
        parts = [prefix, resource.plural or ""]
        if name is not None:
            parts.append(name)
            if subresource is not None:
                parts.append(subresource)
        return "/".join(parts)

    def resource_for(self, api_version: str, kind: str) -> kmock.resource:
        """The resource serving ``kind`` in ``api_version`` (for the test harness)."""
        group, _, version = api_version.rpartition("/")
        for key in list(self.resources):
            resource = kmock.resource(key)
            info = self.resources[resource]
            if resource.group == group and resource.version == version and info.kind == kind:
                return resource
        raise KeyError(f"No resource serves {kind} in {api_version}")

    # ---------------------------------------------------------------- storage core --

    def _live(self, key: ObjectKey) -> JSON | None:
        if key not in self.objects:
            return None
        stored = self.objects[key]
        return None if stored.deleted else stored.raw

    def _live_or_404(self, target: _Target) -> JSON:
        current = self._live(target.key())
        if current is None:
            raise self._not_found(target, target.name or "")
        return current

    def _live_items(
        self, storage: kmock.resource, namespace: str | None
    ) -> list[tuple[ObjectKey, JSON]]:
        items = [
            (key, stored.raw)
            for key, stored in self.objects.items()
            if key[0] == storage
            and not stored.deleted
            and (namespace is None or key[1] == namespace)
        ]
        return sorted(items, key=lambda item: (item[0][1] or "", item[0][2]))

    def _commit(self, key: ObjectKey, new: JSON, old: JSON | None, *, event_type: str) -> JSON:
        """Store a new state under a fresh resourceVersion and tell the watchers."""
        self._resource_version += 1
        version = self._resource_version
        stored = {**new, "metadata": {**_metadata(new), "resourceVersion": str(version)}}
        if key in self.objects:
            self.objects[key].history.append(stored)
        else:
            self.objects[key] = stored
        if event_type == "DELETED":
            self.objects[key].delete()
        self._record_event(
            _WatchEvent(
                resource_version=version,
                storage=key[0],
                namespace=key[1],
                type=event_type,
                obj=stored,
                old=old,
            )
        )
        if key[0] == DEPLOYMENTS and self.deployment_controller and event_type != "DELETED":
            with contextlib.suppress(RuntimeError):  # no loop: bootstrap, nothing to reconcile
                asyncio.get_running_loop().call_soon(self._reconcile_deployment, key)
        return stored

    def _record_event(self, event: _WatchEvent) -> None:
        self._events.append(event)
        self._event_versions.append(event.resource_version)
        if len(self._events) > self.watch_history:
            # What etcd compaction does: older versions can no longer be watched from.
            dropped = len(self._events) - self.watch_history
            self._compacted_version = self._event_versions[dropped - 1]
            del self._events[:dropped]
            del self._event_versions[:dropped]
        self._notify()

    def _notify(self) -> None:
        # Swap-and-set: watchers capture the event before scanning, so none is missed.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _present(self, target: _Target, obj: JSON) -> JSON:
        """An object as seen through the requested version (CRD versions share storage)."""
        if target.custom is not None and obj.get("apiVersion") != target.api_version:
            return {**obj, "apiVersion": target.api_version}
        return obj

    # ---------------------------------------------------------------------- errors --

    @staticmethod
    def _details(target: _Target, name: str) -> JSON:
        return {"name": name, "group": target.group, "kind": target.plural}

    def _not_found(self, target: _Target, name: str) -> ApiError:
        return ApiError(
            404, f'{target.qualified} "{name}" not found', details=self._details(target, name)
        )

    def _conflict(self, target: _Target, name: str, why: str) -> ApiError:
        return ApiError(
            409,
            f'Operation cannot be fulfilled on {target.qualified} "{name}": {why}',
            reason="Conflict",
            details=self._details(target, name),
        )

    def _invalid(self, target: _Target, name: str, causes: Sequence[tuple[str, str]]) -> ApiError:
        text = "; ".join(f"{field}: {message}" for field, message in causes)
        group_suffix = f".{target.group}" if target.group else ""
        return ApiError(
            422,
            f'{target.kind}{group_suffix} "{name}" is invalid: {text}',
            details={
                **self._details(target, name),
                "kind": target.kind,
                "causes": [
                    {"reason": "FieldValueInvalid", "message": m, "field": f} for f, m in causes
                ],
            },
        )

    # ----------------------------------------------------------------------- reads --

    def _read(self, target: _Target) -> JSON:
        current = self._live_or_404(target)
        if target.subresource == "scale":
            return self._scale_of(target, current)
        return self._present(target, current)

    def _list(self, target: _Target, params: Mapping[str, str]) -> JSON:
        labels = parse_label_selector(params.get("labelSelector", ""))
        fields = parse_field_selector(
            params.get("fieldSelector", ""), group=target.group, plural=target.plural
        )
        token = params.get("continue")
        if token:
            if token not in self._continuations:
                raise ApiError(
                    410,
                    "The provided continue parameter is too old"
                    " to display a consistent list result.",
                )
            version, items = self._continuations.pop(token)
        else:
            version = self._resource_version
            items = [
                self._present(target, obj)
                for _, obj in self._live_items(target.storage, target.namespace)
                if label_selector_matches(labels, obj) and all(f.matches(obj) for f in fields)
            ]
        metadata: JSON = {"resourceVersion": str(version)}
        limit = _int_param(params, "limit")
        if limit > 0 and len(items) > limit:
            items, rest = items[:limit], items[limit:]
            token = uuid.uuid4().hex
            self._continuations[token] = (version, rest)
            while len(self._continuations) > 256:
                self._continuations.popitem(last=False)
            metadata["continue"] = token
            metadata["remainingItemCount"] = len(rest)
        return {
            "apiVersion": target.api_version,
            "kind": f"{target.kind}List",
            "metadata": metadata,
            "items": items,
        }

    # ---------------------------------------------------------------------- create --

    def _create(self, target: _Target, body: Any, outcome: _Outcome, *, dry_run: bool) -> JSON:
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object")
        obj = copy.deepcopy(body)
        meta: JSON = obj["metadata"] if isinstance(obj.get("metadata"), dict) else {}
        obj["metadata"] = meta
        self._check_type(target, obj)
        if target.info.namespaced:
            if meta.get("namespace") not in (None, "", target.namespace):
                raise ApiError(400, _NAMESPACE_MISMATCH)
            meta["namespace"] = target.namespace
            if self._live((NAMESPACES, None, target.namespace or "")) is None:
                raise ApiError(
                    404,
                    f'namespaces "{target.namespace}" not found',
                    details={"name": target.namespace, "kind": "namespaces"},
                )
        else:
            meta.pop("namespace", None)
        if meta.get("resourceVersion"):
            # The apiserver's storage layer answers this with a plain 500, and so do we.
            raise ApiError(500, "resourceVersion should not be set on objects to be created")
        name = meta.get("name") or ""
        if not name:
            prefix = meta.get("generateName") or ""
            if not prefix:
                raise self._invalid(
                    target,
                    "",
                    [("metadata.name", "Required value: name or generateName is required")],
                )
            while not name or self._live(target.key(name)) is not None:
                name = prefix + "".join(random.choices(_GENERATE_NAME_ALPHABET, k=5))
        pattern = _DNS_LABEL if target.storage == NAMESPACES else _DNS_SUBDOMAIN
        if len(name) > 253 or not pattern.fullmatch(name):
            raise self._invalid(
                target,
                name,
                [("metadata.name", f"Invalid value: {name!r}: must be a lowercase RFC 1123 name")],
            )
        meta["name"] = name
        key = target.key(name)
        if self._live(key) is not None:
            raise ApiError(
                409,
                f'{target.qualified} "{name}" already exists',
                reason="AlreadyExists",
                details=self._details(target, name),
            )
        for field in (*_SERVER_OWNED_METADATA[2:], "selfLink", "managedFields"):
            meta.pop(field, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now_rfc3339()
        if target.tracks_generation:
            meta["generation"] = 1
        obj["apiVersion"] = _api_version(target.storage.group or "", target.storage.version or "")
        obj["kind"] = target.kind
        if target.has_status:
            obj.pop("status", None)  # status is the controllers' to write, through /status
        obj = self._builtin_defaults(target, obj)
        if target.storage == NAMESPACES:
            obj["spec"] = {"finalizers": ["kubernetes"], **(obj.get("spec") or {})}
            obj["status"] = {"phase": "Active"}
        if target.storage == CRDS:
            self._validate_crd(target, obj)
            obj["status"] = self._crd_status(obj)
        if target.custom is not None:
            obj = self._structural(target, obj)
        # The conventional key order, whatever order the client sent.
        obj = {k: obj.pop(k) for k in _ROOT_KEYS} | obj
        outcome.name, outcome.namespace = name, meta.get("namespace")
        if dry_run:
            return self._present(target, obj)
        stored = self._commit(key, obj, None, event_type="ADDED")
        self._after_write(target, stored, previous=None)
        outcome.resource_version, outcome.changed, outcome.result = (
            _metadata(stored)["resourceVersion"],
            True,
            stored,
        )
        return self._present(target, stored)

    def _check_type(self, target: _Target, obj: JSON) -> None:
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        if api_version and api_version not in (
            target.api_version,
            _api_version(target.storage.group or "", target.storage.version or ""),
        ):
            raise ApiError(
                400,
                f"the API version in the data ({api_version}) does not match"
                f" the expected API version ({target.api_version})",
            )
        if kind and kind != target.kind:
            raise ApiError(
                400,
                f"the kind in the data ({kind}) does not match the expected kind ({target.kind})",
            )

    @staticmethod
    def _builtin_defaults(target: _Target, obj: JSON) -> JSON:
        # The one built-in default operators lean on: workloads with /scale default to 1 replica.
        if target.custom is None and "scale" in target.info.subresources:
            spec = obj.get("spec")
            if isinstance(spec, dict) and "replicas" not in spec:
                return {**obj, "spec": {**spec, "replicas": 1}}
        return obj

    def _structural(self, target: _Target, obj: JSON) -> JSON:
        """Prune, default and validate a custom resource against its CRD version's schema."""
        custom = target.custom
        if custom is None or not custom.schema:
            return obj
        content = {k: v for k, v in obj.items() if k not in _ROOT_KEYS}
        content = _apply_defaults(_prune(content, custom.schema), custom.schema)
        if custom.validator is not None:
            causes = [
                (
                    ".".join(str(p) for p in error.absolute_path) or "<root>",
                    f"Invalid value: {json.dumps(error.instance)[:80]}: {error.message}",
                )
                for error in sorted(
                    custom.validator.iter_errors(content),
                    key=lambda e: list(map(str, e.absolute_path)),
                )
            ]
            if causes:
                raise self._invalid(target, _metadata(obj).get("name", ""), causes)
        return {**{k: obj[k] for k in _ROOT_KEYS if k in obj}, **content}

    # ------------------------------------------------------------ update and patch --

    def _replace(self, target: _Target, body: Any, outcome: _Outcome, *, dry_run: bool) -> JSON:
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object")
        current = self._live_or_404(target)
        meta = _metadata(body)
        if meta.get("name") not in (None, target.name):
            raise ApiError(
                400,
                f"the name of the object ({meta.get('name')})"
                f" does not match the name on the URL ({target.name})",
            )
        if target.info.namespaced and meta.get("namespace") not in (None, "", target.namespace):
            raise ApiError(400, _NAMESPACE_MISMATCH)
        if target.subresource == "scale":
            return self._write_scale(target, current, body, outcome, dry_run=dry_run)
        self._check_type(target, body)
        if target.custom is not None and not meta.get("resourceVersion"):
            raise self._invalid(
                target,
                target.name or "",
                [
                    (
                        "metadata.resourceVersion",
                        "Invalid value: 0x0: must be specified for an update",
                    )
                ],
            )
        stored = self._write(target, current, body, outcome, dry_run=dry_run)
        return self._present(target, stored)

    def _patch(
        self, target: _Target, body: Any, content_type: str, outcome: _Outcome, *, dry_run: bool
    ) -> JSON:
        current = self._live_or_404(target)
        base = (
            self._scale_of(target, current)
            if target.subresource == "scale"
            else self._present(target, current)
        )
        if content_type == JSON_PATCH:
            patched = apply_json_patch(base, body)
        elif content_type == MERGE_PATCH:
            if not isinstance(body, dict):
                raise ApiError(400, "a merge patch must be a JSON object")
            patched = merge_patch(base, body)
        elif content_type == STRATEGIC_MERGE_PATCH and (
            target.custom is None or target.subresource == "scale"
        ):
            if not isinstance(body, dict):
                raise ApiError(400, "a strategic merge patch must be a JSON object")
            patched = strategic_merge_patch(base, body) or {}
        else:
            accepted = [JSON_PATCH, MERGE_PATCH, APPLY_PATCH] + (
                [STRATEGIC_MERGE_PATCH] if target.custom is None else []
            )
            hint = " (server-side apply is not emulated)" if content_type == APPLY_PATCH else ""
            raise ApiError(
                415,
                "the body of the request was in an unknown format"
                f" - accepted media types include: {', '.join(accepted)}{hint}",
            )
        if target.subresource == "scale":
            return self._write_scale(target, current, patched, outcome, dry_run=dry_run)
        stored = self._write(target, current, patched, outcome, dry_run=dry_run)
        return self._present(target, stored)

    def _write(
        self, target: _Target, current: JSON, candidate: JSON, outcome: _Outcome, *, dry_run: bool
    ) -> JSON:
        """Turn a client's desired object into the next stored state; commit if it differs."""
        name = target.name or ""
        current_meta = _metadata(current)
        candidate_meta = _metadata(candidate)
        requested_version = candidate_meta.get("resourceVersion")
        if requested_version not in (None, "") and str(requested_version) != current_meta.get(
            "resourceVersion"
        ):
            raise self._conflict(
                target,
                name,
                _STALE,
            )
        if candidate_meta.get("uid") not in (None, "", current_meta.get("uid")):
            raise self._conflict(
                target,
                name,
                f"Precondition failed: UID in precondition: {candidate_meta.get('uid')},"
                f" UID in object meta: {current_meta.get('uid')}",
            )

        if target.subresource == "status":
            new = copy.deepcopy(current)
            if "status" in candidate:
                new["status"] = copy.deepcopy(candidate["status"])
            else:
                new.pop("status", None)
        else:
            new = copy.deepcopy(candidate)
            if target.has_status:  # the main resource ignores status where /status exists
                if "status" in current:
                    new["status"] = copy.deepcopy(current["status"])
                else:
                    new.pop("status", None)
            meta = dict(_metadata(new))
            for field in _SERVER_OWNED_METADATA:
                if field in current_meta:
                    meta[field] = current_meta[field]
                else:
                    meta.pop(field, None)
            for field in ("selfLink", "managedFields"):
                meta.pop(field, None)
            new["metadata"] = meta
        new["apiVersion"], new["kind"] = current["apiVersion"], current["kind"]

        if current_meta.get("deletionTimestamp"):
            added = set(_metadata(new).get("finalizers") or []) - set(
                current_meta.get("finalizers") or []
            )
            if added:
                raise self._invalid(
                    target,
                    name,
                    [
                        (
                            "metadata.finalizers",
                            "Forbidden: no new finalizers can be added if the object is"
                            f" being deleted, found new finalizers {sorted(added)!r}",
                        )
                    ],
                )
        if target.storage == CRDS and target.subresource is None:
            self._validate_crd(target, new)
        new = self._builtin_defaults(target, new)
        new = self._structural(target, new)
        if target.tracks_generation:
            ignored = {"metadata", "status"} if target.has_status else {"metadata"}
            before = {k: v for k, v in current.items() if k not in ignored}
            after = {k: v for k, v in new.items() if k not in ignored}
            if before != after:
                new["metadata"] = {
                    **_metadata(new),
                    "generation": int(current_meta.get("generation") or 0) + 1,
                }

        outcome.name, outcome.namespace = name, current_meta.get("namespace")
        if new == current:
            # A no-op write: the apiserver keeps the resourceVersion and sends no event.
            outcome.resource_version, outcome.result = current_meta.get("resourceVersion"), current
            return current
        if dry_run:
            return new
        released = bool(_metadata(new).get("deletionTimestamp")) and not _metadata(new).get(
            "finalizers"
        )
        stored = self._commit(
            target.key(), new, current, event_type="DELETED" if released else "MODIFIED"
        )
        self._after_write(target, None if released else stored, previous=current)
        outcome.resource_version, outcome.changed, outcome.result = (
            _metadata(stored)["resourceVersion"],
            True,
            stored,
        )
        return stored

    # ----------------------------------------------------------------------- scale --

    def _scale_paths(self, target: _Target) -> tuple[str, str, str | None]:
        if target.custom is not None:
            scale = target.custom.scale or {}
            return (
                scale.get("specReplicasPath", ".spec.replicas"),
                scale.get("statusReplicasPath", ".status.replicas"),
                scale.get("labelSelectorPath"),
            )
        return ".spec.replicas", ".status.replicas", None

    def _scale_of(self, target: _Target, obj: JSON) -> JSON:
        spec_path, status_path, selector_path = self._scale_paths(target)
        meta = _metadata(obj)
        if target.custom is not None:
            selector = _get_path(obj, selector_path) if selector_path else None
        else:
            selector = format_label_selector(_get_path(obj, ".spec.selector"))
        status: JSON = {"replicas": int(_get_path(obj, status_path) or 0)}
        if selector:
            status["selector"] = selector
        return {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {
                key: meta[key]
                for key in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if key in meta
            },
            "spec": {"replicas": int(_get_path(obj, spec_path) or 0)},
            "status": status,
        }

    def _write_scale(
        self, target: _Target, current: JSON, scale: Any, outcome: _Outcome, *, dry_run: bool
    ) -> JSON:
        if not isinstance(scale, dict):
            raise ApiError(400, "the request body must be a JSON object")
        requested_version = _metadata(scale).get("resourceVersion")
        if requested_version not in (None, "") and str(requested_version) != _metadata(current).get(
            "resourceVersion"
        ):
            raise self._conflict(
                target,
                target.name or "",
                _STALE,
            )
        replicas = (scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise self._invalid(
                target,
                target.name or "",
                [
                    (
                        "spec.replicas",
                        f"Invalid value: {replicas!r}: must be greater than or equal to 0",
                    )
                ],
            )
        spec_path, _, _ = self._scale_paths(target)
        candidate = _set_path(current, spec_path, replicas)
        stored = self._write(
            target.with_(subresource=None), current, candidate, outcome, dry_run=dry_run
        )
        return self._scale_of(target, stored)

    # ---------------------------------------------------------------------- delete --

    def _delete(self, target: _Target, options: Any, outcome: _Outcome, *, dry_run: bool) -> JSON:
        current = self._live_or_404(target)
        meta = _metadata(current)
        preconditions = (
            (options or {}).get("preconditions") or {} if isinstance(options, dict) else {}
        )
        name = target.name or ""
        if preconditions.get("uid") not in (None, "", meta.get("uid")):
            raise self._conflict(
                target,
                name,
                f"Precondition failed: UID in precondition: {preconditions['uid']},"
                f" UID in object meta: {meta.get('uid')}",
            )
        if preconditions.get("resourceVersion") not in (None, "", meta.get("resourceVersion")):
            raise self._conflict(
                target,
                name,
                "Precondition failed: ResourceVersion in precondition:"
                f" {preconditions['resourceVersion']},"
                f" ResourceVersion in object meta: {meta.get('resourceVersion')}",
            )
        outcome.name, outcome.namespace = name, meta.get("namespace")
        stored = self._delete_object(target, target.key(), current, dry_run=dry_run)
        if stored is current or dry_run:
            outcome.resource_version, outcome.result = meta.get("resourceVersion"), current
        else:
            outcome.resource_version, outcome.changed, outcome.result = (
                _metadata(stored)["resourceVersion"],
                True,
                stored,
            )
        return self._present(target, stored)

    def _delete_object(
        self, target: _Target, key: ObjectKey, current: JSON, *, dry_run: bool
    ) -> JSON:
        meta = _metadata(current)
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return current  # already being deleted: nothing new to write
            marked_meta = {
                **meta,
                "deletionTimestamp": _now_rfc3339(),
                "deletionGracePeriodSeconds": 0,
            }
            if target.tracks_generation:
                marked_meta["generation"] = int(meta.get("generation") or 0) + 1
            marked = {**current, "metadata": marked_meta}
            return marked if dry_run else self._commit(key, marked, current, event_type="MODIFIED")
        if dry_run:
            return current
        stored = self._commit(key, current, current, event_type="DELETED")
        self._after_write(target.with_(namespace=key[1], name=key[2]), None, previous=current)
        return stored

    def _delete_collection(
        self, target: _Target, params: Mapping[str, str], options: Any, *, dry_run: bool
    ) -> JSON:
        labels = parse_label_selector(params.get("labelSelector", ""))
        fields = parse_field_selector(
            params.get("fieldSelector", ""), group=target.group, plural=target.plural
        )
        deleted = []
        for key, obj in self._live_items(target.storage, target.namespace):
            if label_selector_matches(labels, obj) and all(f.matches(obj) for f in fields):
                item_target = target.with_(namespace=key[1], name=key[2])
                deleted.append(
                    self._present(
                        target, self._delete(item_target, options, _Outcome(), dry_run=dry_run)
                    )
                )
        return {
            "apiVersion": target.api_version,
            "kind": f"{target.kind}List",
            "metadata": {"resourceVersion": str(self._resource_version)},
            "items": deleted,
        }

    def _after_write(self, target: _Target, stored: JSON | None, *, previous: JSON | None) -> None:
        """Side effects of some resources: namespaces cascade, CRDs (un)register."""
        if target.storage == NAMESPACES and stored is None and previous is not None:
            namespace = _metadata(previous).get("name")
            for key, obj in [
                (k, o) for k, o in self.objects.items() if k[1] == namespace and not o.deleted
            ]:
                info = self.resources[key[0]] if key[0] in self.resources else kmock.ResourceInfo()
                custom = self._custom.get(key[0])
                item = _Target(
                    resource=key[0],
                    storage=key[0],
                    info=info,
                    custom=custom,
                    namespace=key[1],
                    name=key[2],
                    subresource=None,
                )
                self._delete_object(item, key, obj.raw, dry_run=False)
        if target.storage == CRDS:
            self._sync_crd(stored, previous=previous)

    # ------------------------------------------------------------------------ CRDs --

    def _validate_crd(self, target: _Target, crd: JSON) -> None:
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        group, plural, kind = spec.get("group"), names.get("plural"), names.get("kind")
        versions = spec.get("versions") or []
        name = _metadata(crd).get("name", "")
        causes: list[tuple[str, str]] = []
        if not group or not plural or not kind:
            causes.append(
                ("spec", "Required value: group, names.plural and names.kind are required")
            )
        elif name != f"{plural}.{group}":
            causes.append(
                (
                    "metadata.name",
                    f'Invalid value: {name!r}: must be spec.names.plural+"."+spec.group',
                )
            )
        if spec.get("scope") not in ("Namespaced", "Cluster"):
            causes.append(("spec.scope", "Unsupported value: must be Namespaced or Cluster"))
        if sum(1 for v in versions if v.get("storage")) != 1:
            causes.append(
                (
                    "spec.versions",
                    "Invalid value: must have exactly one version marked as storage version",
                )
            )
        for index, version in enumerate(versions):
            schema = (version.get("schema") or {}).get("openAPIV3Schema")
            try:
                _build_validator(schema)
            except jsonschema.SchemaError as e:
                causes.append(
                    (
                        f"spec.versions[{index}].schema.openAPIV3Schema",
                        f"Invalid value: {e.message}",
                    )
                )
        if causes:
            raise self._invalid(target, name, causes)

    @staticmethod
    def _crd_status(crd: JSON) -> JSON:
        spec = crd.get("spec") or {}
        names = dict(spec.get("names") or {})
        names.setdefault("singular", str(names.get("kind", "")).lower())
        names.setdefault("listKind", f"{names.get('kind')}List")
        now = _now_rfc3339()
        return {
            "acceptedNames": names,
            "conditions": [
                {
                    "type": "NamesAccepted",
                    "status": "True",
                    "reason": "NoConflicts",
                    "message": "no conflicts found",
                    "lastTransitionTime": now,
                },
                {
                    "type": "Established",
                    "status": "True",
                    "reason": "InitialNamesAccepted",
                    "message": "the initial names have been accepted",
                    "lastTransitionTime": now,
                },
            ],
            "storedVersions": [v["name"] for v in spec.get("versions") or [] if v.get("storage")],
        }

    def _sync_crd(self, crd: JSON | None, *, previous: JSON | None) -> None:
        """Make the served versions of a CRD (none if deleted) what the registry serves."""
        wanted: dict[kmock.resource, tuple[kmock.ResourceInfo, CustomResource]] = {}
        if crd is not None:
            spec = crd.get("spec") or {}
            names = spec.get("names") or {}
            group, plural, kind = spec["group"], names["plural"], names["kind"]
            storage_version = next(v["name"] for v in spec["versions"] if v.get("storage"))
            for version in spec["versions"]:
                if not version.get("served", True):
                    continue
                subresources = version.get("subresources") or {}
                schema = (version.get("schema") or {}).get("openAPIV3Schema")
                resource = kmock.resource(group, version["name"], plural)
                info = kmock.ResourceInfo(
                    namespaced=spec.get("scope") == "Namespaced",
                    kind=kind,
                    singular=names.get("singular") or kind.lower(),
                    verbs=set(_CUSTOM_RESOURCE_VERBS),
                    shortnames=set(names.get("shortNames") or []),
                    categories=set(names.get("categories") or []),
                    subresources={s for s in EMULATED_SUBRESOURCES if s in subresources},
                )
                custom = CustomResource(
                    group=group,
                    version=version["name"],
                    plural=plural,
                    kind=kind,
                    namespaced=spec.get("scope") == "Namespaced",
                    storage_version=storage_version,
                    schema=schema,
                    scale=subresources.get("scale"),
                    validator=_build_validator(schema),
                )
                wanted[resource] = (info, custom)
        if previous is not None:
            old_spec = previous.get("spec") or {}
            for version in old_spec.get("versions") or []:
                resource = kmock.resource(
                    old_spec.get("group"),
                    version.get("name"),
                    (old_spec.get("names") or {}).get("plural"),
                )
                if resource not in wanted:
                    self._custom.pop(resource, None)
                    if resource in self.resources:
                        del self.resources[resource]
            if crd is None:
                self._drop_custom_objects(previous)
        for resource, (info, custom) in wanted.items():
            self.resources[resource] = info
            self._custom[resource] = custom

    def _drop_custom_objects(self, crd: JSON) -> None:
        spec = crd.get("spec") or {}
        group, plural = spec.get("group"), (spec.get("names") or {}).get("plural")
        for key in [k for k in self.objects if k[0].group == group and k[0].plural == plural]:
            stored = self.objects[key]
            if not stored.deleted:
                self._commit(key, stored.raw, stored.raw, event_type="DELETED")
            # Hard-delete: kmock's discovery lists resources of any stored object, even gone ones.
            del self.objects[key]

    # ---------------------------------------------------------------------- watch --

    async def _stream_watch(
        self, request: rendering.Request, target: _Target
    ) -> aiohttp.web.StreamResponse:
        params = request.params
        labels = parse_label_selector(params.get("labelSelector", ""))
        fields = parse_field_selector(
            params.get("fieldSelector", ""), group=target.group, plural=target.plural
        )
        if target.name is not None:
            fields += (FieldRequirement(field="metadata.name", equal=True, value=target.name),)
        timeout_text = params.get("timeoutSeconds")
        requested = params.get("resourceVersion") or ""
        send_initial = params.get("sendInitialEvents") == "true"
        try:
            timeout = float(timeout_text) if timeout_text else None
            since = int(requested) if requested not in ("", "0") else None
        except ValueError as e:
            raise ApiError(400, f"invalid watch parameter: {e}") from e

        def matches(obj: JSON | None) -> bool:
            return (
                obj is not None
                and label_selector_matches(labels, obj)
                and all(f.matches(obj) for f in fields)
            )

        initial: list[JSON] = []
        if since is None or send_initial:
            # No resourceVersion ("most recent") or "0" ("any"): start with the current state.
            initial = [
                obj for _, obj in self._live_items(target.storage, target.namespace) if matches(obj)
            ]
            since = self._resource_version
        cursor = since
        assert request._raw_request is not None
        response = aiohttp.web.StreamResponse(
            status=200, headers={"Content-Type": "application/json"}
        )
        await response.prepare(request._raw_request)
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout

        async def send(event_type: str, obj: JSON) -> None:
            await response.write(json.dumps({"type": event_type, "object": obj}).encode() + b"\n")

        try:
            for obj in initial:
                await send("ADDED", self._present(target, obj))
            if send_initial:
                await send(
                    "BOOKMARK",
                    {
                        "apiVersion": target.api_version,
                        "kind": target.kind,
                        "metadata": {
                            "resourceVersion": str(cursor),
                            "annotations": {"k8s.io/initial-events-end": "true"},
                        },
                    },
                )
            while not self._closing:
                if cursor < self._compacted_version:
                    expired = ApiError(
                        410,
                        f"too old resource version: {cursor} ({self._compacted_version})",
                        reason="Expired",
                    )
                    await send("ERROR", expired.status())
                    break
                waiter = self._changed
                start = bisect.bisect_right(self._event_versions, cursor)
                for event in self._events[start:]:
                    cursor = event.resource_version
                    translated = self._translate(event, target, matches)
                    if translated is not None:
                        await send(translated, self._present(target, event.obj))
                if self._closing:
                    break
                remaining = (
                    None if deadline is None else deadline - asyncio.get_running_loop().time()
                )
                if remaining is not None and remaining <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter.wait(), timeout=remaining)
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away; nothing to tell it
        return response

    @staticmethod
    def _translate(
        event: _WatchEvent, target: _Target, matches: Callable[[JSON | None], bool]
    ) -> str | None:
        """The event type a watcher with these filters sees for this change, if any."""
        if event.storage != target.storage:
            return None
        if target.namespace is not None and event.namespace != target.namespace:
            return None
        now, before = matches(event.obj), matches(event.old)
        if event.type == "MODIFIED":
            if now and before:
                return "MODIFIED"
            if now:
                return "ADDED"  # entered the selection
            if before:
                return "DELETED"  # left the selection
            return None
        return event.type if now else None

    def close(self) -> None:
        """End all watch streams (before the server shuts down)."""
        self._closing = True
        self._notify()

    # ----------------------------------------------------------- deployment control --

    def _reconcile_deployment(self, key: ObjectKey) -> None:
        """The opt-in stand-in for the deployment controller: status follows spec.replicas."""
        current = self._live(key)
        if current is None or _metadata(current).get("deletionTimestamp"):
            return
        replicas = int(_get_path(current, ".spec.replicas") or 0)
        status = dict(current.get("status") or {})
        status.update(
            observedGeneration=_metadata(current).get("generation"),
            replicas=replicas,
            updatedReplicas=replicas,
            readyReplicas=replicas,
            availableReplicas=replicas,
        )
        if status == current.get("status"):
            return
        stored = self._commit(key, {**current, "status": status}, current, event_type="MODIFIED")
        path = self.resource_path(DEPLOYMENTS, namespace=key[1], name=key[2], subresource="status")
        self._append_audit(
            method="PUT",
            path=path,
            query="",
            resource=DEPLOYMENTS,
            subresource="status",
            kind="Deployment",
            namespace=key[1],
            name=key[2],
            identity=CONTROLLER_IDENTITY,
            user_agent=None,
            status_code=200,
            resource_version=_metadata(stored)["resourceVersion"],
            changed=True,
            fault=False,
            request_body=None,
            result=stored,
        )

    # ------------------------------------------------------------------ audit, faults --

    def _record_audit(
        self,
        request: rendering.Request,
        *,
        target: _Target | None,
        status: int,
        outcome: _Outcome,
        fault: bool,
    ) -> None:
        raw = request._raw_request
        headers: Mapping[str, str] = raw.headers if raw is not None else request.headers
        resource = (
            request.resource if request.resource is not None and request.resource.plural else None
        )
        try:
            body = json.loads(request.body) if request.body else None
        except ValueError:
            body = request.text
        self._append_audit(
            method=str(request.method.value).upper(),
            path=request.url.path,
            query=request.url.query_string,
            resource=resource,
            subresource=request.subresource,
            kind=target.kind if target is not None else None,
            namespace=outcome.namespace if outcome.namespace is not None else request.namespace,
            name=outcome.name if outcome.name is not None else request.name,
            identity=request_identity(headers),
            user_agent=headers.get("User-Agent"),
            status_code=status,
            resource_version=outcome.resource_version,
            changed=outcome.changed,
            fault=fault,
            request_body=body,
            result=outcome.result,
        )

    def _append_audit(self, *, resource: kmock.resource | None, **fields: Any) -> None:
        self._audit.append(
            AuditEntry(
                seq=next(self._audit_sequence),
                wall_time=time.time(),
                monotonic_time=time.monotonic(),
                group=resource.group if resource is not None else None,
                version=resource.version if resource is not None else None,
                resource=resource.plural if resource is not None else None,
                **fields,
            )
        )

    def audit_entries(self, *, since: int = 0) -> list[AuditEntry]:
        start = bisect.bisect_right([entry.seq for entry in self._audit], since)
        return list(self._audit[start:])

    def add_fault(self, fault: Fault) -> Fault:
        self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        self._faults.clear()

    def _take_fault(self, *, method: str, path: str) -> Fault | None:
        for fault in self._faults:
            if fault.matches(method=method, path=path):
                fault.count -= 1
                if fault.count <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def internal_errors(self) -> list[BaseException]:
        """Exceptions the emulator itself raised while serving (its bugs, not API errors)."""
        errors = [e for level in self._errors for e in level]
        return [e for e in errors if not (isinstance(e, kmock.KubernetesError) and e.status < 500)]

    async def _serve_control(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        """``/_emulator/*``: the audit log and fault injection for out-of-process tests."""
        path = request.url.path.rstrip("/")
        method = str(request.method.value).upper()
        try:
            if path == "/_emulator/healthz" and method == "GET":
                return aiohttp.web.json_response(
                    {"status": "ok", "resourceVersion": str(self._resource_version)}
                )
            if path == "/_emulator/audit" and method == "GET":
                since = int(request.params.get("since") or 0)
                return aiohttp.web.json_response(
                    {"items": [e.to_json() for e in self.audit_entries(since=since)]}
                )
            if path == "/_emulator/faults" and method == "GET":
                return aiohttp.web.json_response({"items": [f.to_json() for f in self._faults]})
            if path == "/_emulator/faults" and method == "POST":
                spec = self._body(request, required=True)
                methods = spec.get("methods")
                fault = self.add_fault(
                    Fault(
                        path=str(spec["path"]),
                        status=int(spec["status"]),
                        count=int(spec.get("count", 1)),
                        methods=frozenset(methods) if methods else None,
                        message=spec.get("message"),
                    )
                )
                return aiohttp.web.json_response(fault.to_json(), status=201)
            if path == "/_emulator/faults" and method == "DELETE":
                self.clear_faults()
                return aiohttp.web.json_response({"items": []})
        except (KeyError, TypeError, ValueError, re.error) as e:
            return _status_response(ApiError(400, f"bad emulator control request: {e!r}"))
        return _status_response(ApiError(404, f"no emulator control endpoint {method} {path}"))

    # ------------------------------------------------------------------ discovery --

    async def _serve_apis(self, request: rendering.Request) -> rendering.Payload:
        # kmock picks the preferred version from a set (random order); the apiserver
        # prefers by priority (v1 > v1beta1 > v1alpha1), and clients resolve by it.
        payload = await super()._serve_apis(request)
        assert isinstance(payload, dict)
        for group in payload["groups"]:
            self._order_versions(group)
        payload["groups"].sort(key=lambda group: group["name"])
        return payload

    async def _serve_group(self, request: rendering.Request) -> rendering.Payload:
        payload = await super()._serve_group(request)
        assert isinstance(payload, dict)
        self._order_versions(payload)
        return payload

    @staticmethod
    def _order_versions(group: JSON) -> None:
        group["versions"].sort(key=lambda v: _version_priority(v["version"]))
        group["preferredVersion"] = dict(group["versions"][0])


# --------------------------------------------------------------------------------------
# Serving it: a background thread for tests, the foreground for the CLI.
# --------------------------------------------------------------------------------------


async def serve(
    emulator: KubeApiEmulator,
    *,
    host: str,
    port: int,
    stop: asyncio.Event,
    started: Callable[[str], None],
) -> None:
    """Serve ``emulator`` on host:port until ``stop`` is set; report the URL via ``started``."""
    async with emulator:
        # handler_cancellation: a client that closes a watch cancels its handler at once.
        server = aiohttp.web.Server(emulator, handler_cancellation=True)
        runner = aiohttp.web.ServerRunner(server, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = aiohttp.web.TCPSite(runner, host, port)
            await site.start()
            bound_host, bound_port = runner.addresses[0][:2]
            started(f"http://{bound_host}:{bound_port}")
            await stop.wait()
        finally:
            emulator.close()
            await runner.cleanup()


class EmulatorHTTPError(Exception):
    def __init__(self, status: int, body: Any, *, method: str, path: str) -> None:
        super().__init__(f"{method} {path} answered {status}: {body}")
        self.status = status
        self.body = body


@dataclasses.dataclass(frozen=True, kw_only=True)
class HttpResult:
    status: int
    body: Any
    headers: Mapping[str, str]


class EmulatorHandle:
    """A running emulator, seen from the test's thread.

    Reads and writes go over HTTP (the same semantics and audit log as any client); the
    emulator's own state is only touched inside its loop, through ``call()``.
    """

    def __init__(
        self,
        *,
        url: str,
        emulator: KubeApiEmulator,
        loop: asyncio.AbstractEventLoop,
        workdir: pathlib.Path,
    ) -> None:
        self.url = url
        self.emulator = emulator
        self._loop = loop
        self._workdir = workdir
        self._kubeconfigs: dict[tuple[str, str], pathlib.Path] = {}

    def call(self, fn: Callable[[KubeApiEmulator], T], /, *, timeout: float = 10.0) -> T:
        """Run ``fn(emulator)`` inside the emulator's loop (atomically) and return its result."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn(self.emulator))
            except BaseException as e:
                future.set_exception(e)

        self._loop.call_soon_threadsafe(run)
        return future.result(timeout=timeout)

    # ---------------------------------------------------------------- identities --

    def kubeconfig_path(
        self, identity: str = "forescale-test", *, namespace: str = "default"
    ) -> pathlib.Path:
        """A kubeconfig whose requests are recorded in the audit log as ``identity``."""
        key = (identity, namespace)
        if key not in self._kubeconfigs:
            path = self._workdir / f"kubeconfig-{len(self._kubeconfigs)}.json"
            self._kubeconfigs[key] = write_kubeconfig(
                path, server=self.url, identity=identity, namespace=namespace
            )
        return self._kubeconfigs[key]

    # --------------------------------------------------------------------- audit --

    def audit(self, *, since: int = 0) -> list[AuditEntry]:
        """Write requests so far (seq > ``since``), oldest first; deep copies, safe to keep."""
        return self.call(lambda emulator: copy.deepcopy(emulator.audit_entries(since=since)))

    def lease_holder_at(self, seq: int, *, namespace: str, name: str) -> str | None:
        """``spec.holderIdentity`` of a Lease as committed by the writes before ``seq``."""
        holder: str | None = None
        for entry in self.audit():
            if entry.seq >= seq:
                break
            if (
                entry.group == "coordination.k8s.io"
                and entry.resource == "leases"
                and entry.namespace == namespace
                and entry.name == name
                and entry.changed
            ):
                holder = (
                    None
                    if entry.method == "DELETE"
                    else ((entry.result or {}).get("spec") or {}).get("holderIdentity")
                )
        return holder

    # -------------------------------------------------------------------- faults --

    def inject_fault(
        self,
        *,
        path: str,
        status: int,
        count: int = 1,
        methods: Iterable[str] | None = None,
        message: str | None = None,
    ) -> Fault:
        """Answer the next ``count`` requests whose URL path fully matches the regex ``path``."""
        fault = Fault(
            path=path,
            status=status,
            count=count,
            methods=frozenset(methods) if methods else None,
            message=message,
        )
        return self.call(lambda emulator: emulator.add_fault(fault))

    def clear_faults(self) -> None:
        self.call(lambda emulator: emulator.clear_faults())

    def internal_errors(self) -> list[BaseException]:
        return self.call(lambda emulator: emulator.internal_errors())

    def assert_healthy(self) -> None:
        errors = self.internal_errors()
        assert not errors, f"The API emulator itself failed {len(errors)} time(s): {errors!r}"

    # ---------------------------------------------------------------- HTTP client --

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        identity: str | None = HARNESS_IDENTITY,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
    ) -> HttpResult:
        """One HTTP request as ``identity`` (None: anonymous); never raises for HTTP statuses."""
        url = self.url + path + (f"?{urllib.parse.urlencode(params)}" if params else "")
        data = None if body is None else json.dumps(body).encode()
        sent = {"Accept": "application/json", "User-Agent": "forescale-tests"}
        if identity is not None:
            sent["Authorization"] = f"Bearer {identity}"
        if data is not None:
            sent["Content-Type"] = content_type
        sent.update(headers or {})
        request = urllib.request.Request(url, data=data, method=method.upper(), headers=sent)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, raw, response_headers = (
                    response.status,
                    response.read(),
                    dict(response.headers),
                )
        except urllib.error.HTTPError as e:
            status, raw, response_headers = e.code, e.read(), dict(e.headers)
        try:
            parsed: Any = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode("utf-8", errors="replace")
        return HttpResult(status=status, body=parsed, headers=response_headers)

    def _checked(self, method: str, path: str, **kwargs: Any) -> Any:
        result = self.request(method, path, **kwargs)
        if result.status >= 400:
            raise EmulatorHTTPError(result.status, result.body, method=method, path=path)
        return result.body

    def path(
        self,
        resource: str | kmock.resource,
        *,
        namespace: str | None = None,
        name: str | None = None,
        subresource: str | None = None,
    ) -> str:
        """The URL path for ``resource`` such as ``"apps/v1/deployments"``, ``"v1/pods"``."""
        parsed = resource if isinstance(resource, kmock.resource) else kmock.resource(resource)
        if parsed.group is None or parsed.version is None or parsed.plural is None:
            raise ValueError(
                f"Resource {resource!r} must name group (may be empty), version and plural"
            )
        return self.call(
            lambda emulator: emulator.resource_path(
                parsed, namespace=namespace, name=name, subresource=subresource
            )
        )

    def get(
        self,
        resource: str,
        name: str,
        *,
        namespace: str | None = None,
        subresource: str | None = None,
    ) -> JSON | None:
        """The object, or None if it does not exist."""
        result = self.request(
            "GET", self.path(resource, namespace=namespace, name=name, subresource=subresource)
        )
        if result.status == 404:
            return None
        if result.status >= 400:
            raise EmulatorHTTPError(result.status, result.body, method="GET", path=resource)
        body: JSON = result.body
        return body

    def list_objects(
        self, resource: str, *, namespace: str | None = None, label_selector: str | None = None
    ) -> list[JSON]:
        params = {"labelSelector": label_selector} if label_selector else None
        body = self._checked("GET", self.path(resource, namespace=namespace), params=params)
        items: list[JSON] = body["items"]
        return items

    def create(
        self, obj: JSON, *, namespace: str | None = None, identity: str = HARNESS_IDENTITY
    ) -> JSON:
        """Create ``obj`` (its resource found from apiVersion and kind)."""
        resource = self.call(lambda emulator: emulator.resource_for(obj["apiVersion"], obj["kind"]))
        namespace = namespace or _metadata(obj).get("namespace")
        created: JSON = self._checked(
            "POST", self.path(resource, namespace=namespace), body=obj, identity=identity
        )
        return created

    def replace(
        self, obj: JSON, *, subresource: str | None = None, identity: str = HARNESS_IDENTITY
    ) -> JSON:
        resource = self.call(lambda emulator: emulator.resource_for(obj["apiVersion"], obj["kind"]))
        meta = _metadata(obj)
        path = self.path(
            resource, namespace=meta.get("namespace"), name=meta["name"], subresource=subresource
        )
        replaced: JSON = self._checked("PUT", path, body=obj, identity=identity)
        return replaced

    def patch(
        self,
        resource: str,
        name: str,
        patch: Any,
        *,
        namespace: str | None = None,
        subresource: str | None = None,
        content_type: str = MERGE_PATCH,
        identity: str = HARNESS_IDENTITY,
    ) -> JSON:
        path = self.path(resource, namespace=namespace, name=name, subresource=subresource)
        patched: JSON = self._checked(
            "PATCH", path, body=patch, content_type=content_type, identity=identity
        )
        return patched

    def delete(
        self,
        resource: str,
        name: str,
        *,
        namespace: str | None = None,
        identity: str = HARNESS_IDENTITY,
    ) -> JSON | None:
        """Delete; returns the final (or deletion-marked) object, or None if it was absent."""
        result = self.request(
            "DELETE", self.path(resource, namespace=namespace, name=name), identity=identity
        )
        if result.status == 404:
            return None
        if result.status >= 400:
            raise EmulatorHTTPError(result.status, result.body, method="DELETE", path=resource)
        body: JSON = result.body
        return body

    def create_namespace(self, name: str) -> JSON:
        return self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    @staticmethod
    def wait_for(
        predicate: Callable[[], T | None],
        *,
        timeout: float = 10.0,
        interval: float = 0.02,
        what: str = "the condition",
    ) -> T:
        """Poll ``predicate`` until it returns something truthy; return that, or fail."""
        return polling.wait_for(predicate, timeout=timeout, interval=interval, what=what)


@contextlib.contextmanager
def run_emulator(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    deployment_controller: bool = False,
    watch_history: int = 10_000,
    namespaces: Sequence[str] = DEFAULT_NAMESPACES,
    startup_timeout: float = 10.0,
) -> Iterator[EmulatorHandle]:
    """Serve an emulator from a background thread (own event loop) for the ``with`` block."""
    started = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        emulator = KubeApiEmulator(
            deployment_controller=deployment_controller,
            watch_history=watch_history,
            bootstrap_namespaces=tuple(namespaces),
        )
        state.update(loop=loop, stop=stop, emulator=emulator)

        def on_started(url: str) -> None:
            state["url"] = url
            started.set()

        await serve(emulator, host=host, port=port, stop=stop, started=on_started)

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as e:
            state["error"] = e
        finally:
            started.set()

    thread = threading.Thread(target=run, name="kube-api-emulator", daemon=True)
    thread.start()
    if not started.wait(startup_timeout) or "url" not in state:
        raise RuntimeError(
            f"The API emulator did not start: {state.get('error')!r}"
        ) from state.get("error")
    with tempfile.TemporaryDirectory(prefix="kubeapi-") as workdir:
        handle = EmulatorHandle(
            url=state["url"],
            emulator=state["emulator"],
            loop=state["loop"],
            workdir=pathlib.Path(workdir),
        )
        try:
            yield handle
        finally:
            state["loop"].call_soon_threadsafe(state["stop"].set)
            thread.join(timeout=10)


# --------------------------------------------------------------------------------------
# Pytest fixtures. Wire them into tests/conftest.py with:
#     from tests.support.kubeapi import kube_emulator, kube_emulator_factory
# --------------------------------------------------------------------------------------


@pytest.fixture
def kube_emulator() -> Iterator[EmulatorHandle]:
    """A fresh API emulator per test; the teardown fails if the emulator itself crashed."""
    with run_emulator() as handle:
        yield handle
        handle.assert_healthy()


@pytest.fixture
def kube_emulator_factory() -> Iterator[Callable[..., EmulatorHandle]]:
    """Start emulators with options, e.g. ``kube_emulator_factory(deployment_controller=True)``."""
    with contextlib.ExitStack() as stack:
        handles: list[EmulatorHandle] = []

        def start(**options: Any) -> EmulatorHandle:
            handle = stack.enter_context(run_emulator(**options))
            handles.append(handle)
            return handle

        yield start
        for handle in handles:
            handle.assert_healthy()


# --------------------------------------------------------------------------------------
# CLI: python -m tests.support.kubeapi --port 8080 [--kubeconfig PATH --identity NAME]
# --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.kubeapi", description=__doc__.split("\n", 1)[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--kubeconfig", type=pathlib.Path, help="write a kubeconfig for --identity here"
    )
    parser.add_argument("--identity", default="forescale-dev")
    parser.add_argument(
        "--deployment-controller", action="store_true", help="mirror spec.replicas into status"
    )
    args = parser.parse_args(argv)

    async def run() -> None:
        stop = asyncio.Event()
        emulator = KubeApiEmulator(deployment_controller=args.deployment_controller)

        def on_started(url: str) -> None:
            print(f"Kubernetes API emulator on {url}  (audit: {url}/_emulator/audit)", flush=True)
            if args.kubeconfig:
                write_kubeconfig(args.kubeconfig, server=url, identity=args.identity)
                print(f"kubeconfig for {args.identity!r}: {args.kubeconfig}", flush=True)

        await serve(emulator, host=args.host, port=args.port, stop=stop, started=on_started)

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
