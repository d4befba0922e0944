"""The API emulator's semantics, proven over real HTTP with the official ``kubernetes`` client.

These tests pin what the operator's integration tests rely on, independently of kmock's
internals: a kmock upgrade that weakens any of it fails here. Where the official client
cannot express a request (a given content type, a watch past compaction, raw headers),
the harness' plain HTTP client is used instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import itertools
import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import urllib3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes.client import ApiException

from tests.support.kubeapi import (
    CONTROLLER_IDENTITY,
    STRATEGIC_MERGE_PATCH,
    EmulatorHandle,
    kube_emulator,
    kube_emulator_factory,
)

__all__ = ["kube_emulator", "kube_emulator_factory"]  # fixtures, re-exported for pytest

GROUP = "emulator.forescale.test"
WIDGETS = f"{GROUP}/v1/widgets"


@dataclasses.dataclass(frozen=True)
class Clients:
    """The official client's API groups, all speaking as one identity."""

    api: kubernetes.client.ApiClient
    core: kubernetes.client.CoreV1Api
    apps: kubernetes.client.AppsV1Api
    custom: kubernetes.client.CustomObjectsApi
    coordination: kubernetes.client.CoordinationV1Api
    extensions: kubernetes.client.ApiextensionsV1Api
    events: kubernetes.client.EventsV1Api


@pytest.fixture
def clients(kube_emulator: EmulatorHandle) -> Iterator[Callable[[str], Clients]]:
    """Official clients configured from per-identity kubeconfigs, as an operator would be."""
    created: list[kubernetes.client.ApiClient] = []

    def make(identity: str = "alice") -> Clients:
        path = kube_emulator.kubeconfig_path(identity)
        api = kubernetes.config.new_client_from_config(config_file=str(path))
        created.append(api)
        return Clients(
            api=api,
            core=kubernetes.client.CoreV1Api(api),
            apps=kubernetes.client.AppsV1Api(api),
            custom=kubernetes.client.CustomObjectsApi(api),
            coordination=kubernetes.client.CoordinationV1Api(api),
            extensions=kubernetes.client.ApiextensionsV1Api(api),
            events=kubernetes.client.EventsV1Api(api),
        )

    yield make
    for api in created:
        api.close()


def as_dict(value: object) -> dict[str, Any]:
    """CustomObjectsApi answers untyped JSON objects."""
    assert isinstance(value, dict)
    return value


def status_of(error: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(error.body)
    return body


def deployment(name: str = "web", *, replicas: int | None = 2) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "main", "image": "nginx"}]},
        },
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return {"metadata": {"name": name, "labels": {"tier": "front"}}, "spec": spec}


def widget_crd() -> dict[str, Any]:
    """A CRD with status and scale subresources, defaults, bounds and two served versions."""
    schema = {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "default": {},
                "properties": {
                    "replicas": {"type": "integer", "minimum": 0, "default": 1},
                    "size": {"type": "string", "enum": ["small", "large"], "default": "small"},
                    "target": {"type": "string"},
                },
            },
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
    }
    subresources = {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "plural": "widgets",
                "singular": "widget",
                "kind": "Widget",
                "shortNames": ["wd"],
            },
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": subresources,
                },
                {
                    "name": "v1beta1",
                    "served": True,
                    "storage": False,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": subresources,
                },
            ],
        },
    }


def widget(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec}


def create_widget(c: Clients, name: str, **spec: Any) -> dict[str, Any]:
    created = as_dict(
        c.custom.create_namespaced_custom_object(
            GROUP, "v1", "default", "widgets", widget(name, **spec)
        )
    )
    return created


def rv(obj: Any) -> int:
    """The resourceVersion of a client model or a raw dict, as a number."""
    if isinstance(obj, dict):
        return int(obj["metadata"]["resourceVersion"])
    return int(obj.metadata.resource_version)


# ---------------------------------------------------------------------- versions --


def test_every_write_gets_the_next_global_resource_version(
    kube_emulator: EmulatorHandle, clients: Callable[[str], Clients]
) -> None:
    c = clients("alice")
    versions = [
        rv(
            c.core.create_namespaced_config_map(
                "default", {"metadata": {"name": "cfg"}, "data": {"a": "1"}}
            )
        ),
        rv(c.apps.create_namespaced_deployment("default", deployment())),
        rv(c.core.patch_namespaced_config_map("cfg", "default", {"data": {"a": "2"}})),
        rv(
            c.apps.patch_namespaced_deployment_status("web", "default", {"status": {"replicas": 2}})
        ),
        rv(c.apps.patch_namespaced_deployment_scale("web", "default", {"spec": {"replicas": 3}})),
        rv(
            c.core.replace_namespaced_config_map(
                "cfg", "default", {"metadata": {"name": "cfg"}, "data": {}}
            )
        ),
        rv(c.core.delete_namespaced_config_map("cfg", "default")),
    ]
    # One counter across resources and verbs: each write takes exactly the next value.
    assert versions == list(range(versions[0], versions[0] + len(versions)))
    listing = c.apps.list_namespaced_deployment("default")
    assert int(listing.metadata.resource_version) == versions[-1]

    # A write that changes nothing keeps the version, as on a real apiserver, but is audited.
    unchanged = c.apps.patch_namespaced_deployment(
        "web", "default", {"metadata": {"labels": {"tier": "front"}}}
    )
    assert rv(unchanged) == versions[4]
    last = kube_emulator.audit()[-1]
    assert (last.method, last.status_code, last.changed) == ("PATCH", 200, False)
    assert last.resource_version == str(versions[4])


# --------------------------------------------------------------------- conflicts --


def test_stale_writes_conflict_with_a_status_body(
    kube_emulator: EmulatorHandle, clients: Callable[[str], Clients]
) -> None:
    c = clients("alice")
    first = c.core.create_namespaced_config_map(
        "default", {"metadata": {"name": "cfg"}, "data": {"a": "1"}}
    )
    stale = first.metadata.resource_version
    second = c.core.replace_namespaced_config_map(
        "cfg",
        "default",
        {"metadata": {"name": "cfg", "resourceVersion": stale}, "data": {"a": "2"}},
    )
    assert rv(second) > int(stale)

    with pytest.raises(ApiException) as replace_error:
        c.core.replace_namespaced_config_map(
            "cfg",
            "default",
            {"metadata": {"name": "cfg", "resourceVersion": stale}, "data": {"a": "3"}},
        )
    body = status_of(replace_error.value)
    assert replace_error.value.status == 409
    assert body["kind"] == "Status" and body["status"] == "Failure"
    assert body["reason"] == "Conflict" and body["code"] == 409
    assert body["details"] == {"name": "cfg", "group": "", "kind": "configmaps"}

    with pytest.raises(ApiException) as patch_error:
        c.core.patch_namespaced_config_map(
            "cfg", "default", {"metadata": {"resourceVersion": stale}, "data": {"a": "4"}}
        )
    assert patch_error.value.status == 409

    # kopf's optimistic JSON patch: a failed `test` is 422, never 500.
    with pytest.raises(ApiException) as test_error:
        c.core.patch_namespaced_config_map(
            "cfg",
            "default",
            [
                {"op": "test", "path": "/metadata/resourceVersion", "value": stale},
                {"op": "replace", "path": "/data/a", "value": "5"},
            ],
        )
    assert test_error.value.status == 422

    current = c.core.read_namespaced_config_map("cfg", "default")
    assert current.data == {"a": "2"} and rv(current) == rv(second)  # failed writes wrote nothing
    assert [e.status_code for e in kube_emulator.audit()] == [201, 200, 409, 409, 422]


# ------------------------------------------------------------------- subresources --


def test_scale_reads_and_writes_only_replicas(clients: Callable[[str], Clients]) -> None:
    c = clients("alice")
    created = c.apps.create_namespaced_deployment("default", deployment(replicas=2))
    c.apps.patch_namespaced_deployment_status("web", "default", {"status": {"replicas": 2}})

    scale = c.apps.read_namespaced_deployment_scale("web", "default")
    assert (scale.api_version, scale.kind) == ("autoscaling/v1", "Scale")
    assert (scale.spec.replicas, scale.status.replicas, scale.status.selector) == (2, 2, "app=web")

    # Anything but spec.replicas in a Scale is ignored.
    patched = c.apps.patch_namespaced_deployment_scale(
        "web", "default", {"metadata": {"labels": {"sneaky": "yes"}}, "spec": {"replicas": 5}}
    )
    assert patched.spec.replicas == 5
    after = c.apps.read_namespaced_deployment("web", "default")
    assert after.spec.replicas == 5
    assert after.metadata.labels == {"tier": "front"}
    assert after.spec.template.spec.containers[0].image == "nginx"
    assert after.status.replicas == 2  # the controller's, untouched
    assert after.metadata.generation == created.metadata.generation + 1

    with pytest.raises(ApiException) as stale:
        c.apps.replace_namespaced_deployment_scale(
            "web",
            "default",
            {
                "metadata": {"name": "web", "resourceVersion": scale.metadata.resource_version},
                "spec": {"replicas": 1},
            },
        )
    assert stale.value.status == 409
    with pytest.raises(ApiException) as negative:
        c.apps.patch_namespaced_deployment_scale("web", "default", {"spec": {"replicas": -1}})
    assert negative.value.status == 422

    fresh = c.apps.read_namespaced_deployment_scale("web", "default")
    replaced = c.apps.replace_namespaced_deployment_scale(
        "web",
        "default",
        {
            "metadata": {"name": "web", "resourceVersion": fresh.metadata.resource_version},
            "spec": {"replicas": 1},
        },
    )
    assert replaced.spec.replicas == 1
    assert c.apps.read_namespaced_deployment("web", "default").spec.replicas == 1


def test_status_is_isolated_from_spec_and_only_spec_bumps_generation(
    clients: Callable[[str], Clients],
) -> None:
    c = clients("alice")
    with_status = {**deployment(replicas=2), "status": {"replicas": 9}}
    created = c.apps.create_namespaced_deployment("default", with_status)
    assert created.status is None or created.status.replicas is None  # status is dropped on create
    assert created.metadata.generation == 1

    # The main resource ignores status.
    main = c.apps.patch_namespaced_deployment(
        "web", "default", {"spec": {"replicas": 3}, "status": {"replicas": 7}}
    )
    assert main.spec.replicas == 3 and (main.status is None or main.status.replicas is None)
    assert main.metadata.generation == 2

    # /status ignores everything but status, and never bumps the generation.
    status = c.apps.patch_namespaced_deployment_status(
        "web",
        "default",
        {"spec": {"replicas": 8}, "metadata": {"labels": {"x": "y"}}, "status": {"replicas": 3}},
    )
    assert status.status.replicas == 3 and status.spec.replicas == 3
    assert status.metadata.labels == {"tier": "front"}
    assert status.metadata.generation == 2

    # Metadata-only changes do not bump the generation either.
    labelled = c.apps.patch_namespaced_deployment(
        "web", "default", {"metadata": {"labels": {"x": "y"}}}
    )
    assert labelled.metadata.generation == 2 and labelled.metadata.labels == {
        "tier": "front",
        "x": "y",
    }


def test_custom_resources_have_generation_and_isolated_status(
    clients: Callable[[str], Clients],
) -> None:
    c = clients("alice")
    c.extensions.create_custom_resource_definition(widget_crd())
    created = create_widget(c, "w1", replicas=2)
    assert created["metadata"]["generation"] == 1

    spec_changed = as_dict(
        c.custom.patch_namespaced_custom_object(
            GROUP, "v1", "default", "widgets", "w1", {"spec": {"replicas": 4}}
        )
    )
    assert spec_changed["metadata"]["generation"] == 2
    labelled = as_dict(
        c.custom.patch_namespaced_custom_object(
            GROUP,
            "v1",
            "default",
            "widgets",
            "w1",
            {"metadata": {"labels": {"a": "b"}}, "status": {"phase": "ignored"}},
        )
    )
    assert labelled["metadata"]["generation"] == 2 and "status" not in labelled

    status = as_dict(
        c.custom.patch_namespaced_custom_object_status(
            GROUP,
            "v1",
            "default",
            "widgets",
            "w1",
            {"spec": {"replicas": 9}, "status": {"phase": "Ready", "replicas": 4}},
        )
    )
    assert status["status"] == {"phase": "Ready", "replicas": 4}
    assert status["spec"]["replicas"] == 4 and status["metadata"]["generation"] == 2

    scale = as_dict(
        c.custom.get_namespaced_custom_object_scale(GROUP, "v1", "default", "widgets", "w1")
    )
    assert scale["spec"] == {"replicas": 4} and scale["status"]["replicas"] == 4
    scaled = as_dict(
        c.custom.patch_namespaced_custom_object_scale(
            GROUP, "v1", "default", "widgets", "w1", {"spec": {"replicas": 6}}
        )
    )
    assert scaled["spec"]["replicas"] == 6
    after = as_dict(c.custom.get_namespaced_custom_object(GROUP, "v1", "default", "widgets", "w1"))
    assert after["spec"]["replicas"] == 6 and after["metadata"]["generation"] == 3


# ----------------------------------------------------------------------------- CRDs --


def test_crd_registration_serves_discovery_and_shared_storage(
    kube_emulator: EmulatorHandle, clients: Callable[[str], Clients]
) -> None:
    c = clients("alice")
    assert kube_emulator.request("GET", f"/apis/{GROUP}/v1").status == 404
    crd = c.extensions.create_custom_resource_definition(widget_crd())
    conditions = {condition.type: condition.status for condition in crd.status.conditions}
    assert conditions == {"NamesAccepted": "True", "Established": "True"}

    groups = {
        group["name"]: group for group in kube_emulator.request("GET", "/apis").body["groups"]
    }
    assert groups[GROUP]["preferredVersion"]["version"] == "v1"
    assert [v["version"] for v in groups[GROUP]["versions"]] == ["v1", "v1beta1"]
    resources = {
        r["name"]: r for r in kube_emulator.request("GET", f"/apis/{GROUP}/v1").body["resources"]
    }
    assert set(resources) == {"widgets", "widgets/status", "widgets/scale"}
    assert resources["widgets"]["kind"] == "Widget" and resources["widgets"]["namespaced"] is True
    assert resources["widgets"]["shortNames"] == ["wd"]
    core = {r["name"] for r in kube_emulator.request("GET", "/api/v1").body["resources"]}
    assert {"namespaces", "configmaps", "events"} <= core  # kopf idles silently without namespaces

    create_widget(c, "w1", replicas=2)
    through_beta = as_dict(
        c.custom.get_namespaced_custom_object(GROUP, "v1beta1", "default", "widgets", "w1")
    )
    assert (
        through_beta["apiVersion"] == f"{GROUP}/v1beta1" and through_beta["spec"]["replicas"] == 2
    )

    c.extensions.delete_custom_resource_definition(f"widgets.{GROUP}")
    assert kube_emulator.request("GET", f"/apis/{GROUP}/v1").status == 404
    gone = kube_emulator.request("GET", f"/apis/{GROUP}/v1/namespaces/default/widgets")
    assert gone.status == 404 and gone.body["reason"] == "NotFound"


def test_custom_resources_are_pruned_defaulted_and_validated(
    kube_emulator: EmulatorHandle, clients: Callable[[str], Clients]
) -> None:
    c = clients("alice")
    c.extensions.create_custom_resource_definition(widget_crd())
    created = as_dict(
        c.custom.create_namespaced_custom_object(
            GROUP,
            "v1",
            "default",
            "widgets",
            {**widget("w1", replicas=2, unknown="dropped"), "extra": 1},
        )
    )
    assert created["spec"] == {"replicas": 2, "size": "small"}  # pruned, then defaulted
    assert "extra" not in created
    empty = create_widget(c, "w2")
    assert empty["spec"] == {"replicas": 1, "size": "small"}

    with pytest.raises(ApiException) as invalid:
        create_widget(c, "w3", replicas=-1, size="huge")
    body = status_of(invalid.value)
    assert invalid.value.status == 422 and body["reason"] == "Invalid"
    assert {cause["field"] for cause in body["details"]["causes"]} == {"spec.replicas", "spec.size"}

    # Custom resources need a resourceVersion to be replaced, and take no strategic merge.
    with pytest.raises(ApiException) as unconditional:
        c.custom.replace_namespaced_custom_object(
            GROUP, "v1", "default", "widgets", "w1", widget("w1", replicas=3)
        )
    assert unconditional.value.status == 422
    path = kube_emulator.path(WIDGETS, namespace="default", name="w1")
    smp = kube_emulator.request(
        "PATCH", path, body={"spec": {"replicas": 3}}, content_type=STRATEGIC_MERGE_PATCH
    )
    assert smp.status == 415


# ---------------------------------------------------------------------------- watch --


def test_watch_from_a_resource_version_gets_only_later_events_through_the_selector(
    clients: Callable[[str], Clients],
) -> None:
    c = clients("alice")

    def configmap(name: str, app: str) -> dict[str, Any]:
        return {"metadata": {"name": name, "labels": {"app": app}}, "data": {"v": "0"}}

    c.core.create_namespaced_config_map("default", configmap("a", "x"))
    c.core.create_namespaced_config_map("default", configmap("b", "y"))
    since = c.core.list_namespaced_config_map("default").metadata.resource_version

    writes = [
        ("ADDED", "c", rv(c.core.create_namespaced_config_map("default", configmap("c", "x")))),
        (
            "MODIFIED",
            "a",
            rv(c.core.patch_namespaced_config_map("a", "default", {"data": {"v": "1"}})),
        ),
        (
            "ADDED",
            "b",
            rv(
                c.core.patch_namespaced_config_map(
                    "b", "default", {"metadata": {"labels": {"app": "x"}}}
                )
            ),
        ),
        (
            "DELETED",
            "a",
            rv(
                c.core.patch_namespaced_config_map(
                    "a", "default", {"metadata": {"labels": {"app": "z"}}}
                )
            ),
        ),
        ("DELETED", "c", rv(c.core.delete_namespaced_config_map("c", "default"))),
    ]
    c.core.create_namespaced_config_map("default", configmap("d", "y"))  # never matches

    watch = kubernetes.watch.Watch()
    seen = []
    for event in watch.stream(
        c.core.list_namespaced_config_map,
        "default",
        resource_version=since,
        label_selector="app=x",
        timeout_seconds=5,
    ):
        seen.append((event["type"], event["object"].metadata.name, rv(event["object"])))
        if len(seen) == len(writes):
            watch.stop()
    assert seen == writes
    assert all(version > int(since) for _, _, version in seen)


_example_counter = itertools.count()


@settings(
    max_examples=25,
    deadline=None,
    # One emulator serves all examples; each example works in a namespace of its own.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    operations=st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from(["x", "y", None])),
        max_size=12,
    )
)
def test_watch_replay_through_a_selector_matches_a_reference_model(
    kube_emulator: EmulatorHandle,
    clients: Callable[[str], Clients],
    operations: list[tuple[str, str | None]],
) -> None:
    """Random creates, relabels (some of them no-ops) and deletes, replayed from a version."""
    c = clients("alice")
    namespace = f"example-{next(_example_counter)}"
    kube_emulator.create_namespace(namespace)
    since = c.core.list_namespaced_config_map(namespace).metadata.resource_version

    labels: dict[str, str] = {}  # the reference model: name -> app label of live objects
    expected: list[tuple[str, str, int]] = []
    for name, app in [*operations, ("zz-end", "x")]:  # the sentinel ends the replay
        was = labels.get(name) == "x"
        if app is None:
            if name not in labels:
                continue
            written = c.core.delete_namespaced_config_map(name, namespace)
            del labels[name]
            event = "DELETED" if was else None
        elif name not in labels:
            body = {"metadata": {"name": name, "labels": {"app": app}}}
            written = c.core.create_namespaced_config_map(namespace, body)
            labels[name] = app
            event = "ADDED" if app == "x" else None
        else:
            patch = {"metadata": {"labels": {"app": app}}}
            written = c.core.patch_namespaced_config_map(name, namespace, patch)
            changed = labels[name] != app
            labels[name] = app
            now = app == "x"
            event = (
                None
                if not changed  # a no-op write: no new version, no event
                else "MODIFIED"
                if was and now
                else "ADDED"
                if now
                else "DELETED"
                if was
                else None
            )
        if event is not None:
            expected.append((event, name, rv(written)))

    watch = kubernetes.watch.Watch()
    seen = []
    for received in watch.stream(
        c.core.list_namespaced_config_map,
        namespace,
        resource_version=since,
        label_selector="app=x",
        timeout_seconds=5,
    ):
        seen.append((received["type"], received["object"].metadata.name, rv(received["object"])))
        if seen[-1][1] == "zz-end":
            watch.stop()
    assert seen == expected


def test_watch_without_a_version_lists_then_streams_live_events(
    clients: Callable[[str], Clients],
) -> None:
    c = clients("alice")
    c.core.create_namespaced_config_map("default", {"metadata": {"name": "before"}})
    events: queue.Queue[tuple[str, str]] = queue.Queue()
    watch = kubernetes.watch.Watch()

    def consume() -> None:
        # kubernetes 37's Watch.stop() shuts the socket down under a reading thread.
        with contextlib.suppress(urllib3.exceptions.ProtocolError):
            for event in watch.stream(
                c.core.list_namespaced_config_map, "default", timeout_seconds=10
            ):
                events.put((event["type"], event["object"].metadata.name))

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    try:
        assert events.get(timeout=5) == ("ADDED", "before")  # the stream is open now
        c.core.create_namespaced_config_map("default", {"metadata": {"name": "after"}})
        assert events.get(timeout=5) == ("ADDED", "after")
    finally:
        watch.stop()
        consumer.join(timeout=5)


def test_watch_past_the_retained_history_is_gone(
    kube_emulator_factory: Callable[..., EmulatorHandle],
) -> None:
    emulator = kube_emulator_factory(watch_history=3)
    for index in range(6):
        emulator.create(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"c{index}", "namespace": "default"},
            }
        )
    path = emulator.path("v1/configmaps", namespace="default")
    answer = emulator.request(
        "GET", path, params={"watch": "true", "resourceVersion": "5", "timeoutSeconds": "2"}
    )
    first = json.loads(answer.body.splitlines()[0]) if isinstance(answer.body, str) else answer.body
    assert first["type"] == "ERROR"
    assert (first["object"]["code"], first["object"]["reason"]) == (410, "Expired")


def test_initial_events_end_with_a_bookmark_and_the_server_timeout_ends_the_stream(
    kube_emulator: EmulatorHandle,
) -> None:
    # kopf's watch with settings.watching.initial_streaming: no list, events then a bookmark.
    kube_emulator.create(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "default"}}
    )
    params = {
        "watch": "true",
        "sendInitialEvents": "true",
        "resourceVersionMatch": "NotOlderThan",
        "allowWatchBookmarks": "true",
        "timeoutSeconds": "1",
    }
    path = kube_emulator.path("v1/configmaps", namespace="default")
    answer = kube_emulator.request("GET", path, params=params, timeout=5)  # returns: server ended
    events = [json.loads(line) for line in answer.body.splitlines()]
    assert [event["type"] for event in events] == ["ADDED", "BOOKMARK"]
    bookmark = events[1]["object"]["metadata"]
    assert bookmark["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert bookmark["resourceVersion"] == events[0]["object"]["metadata"]["resourceVersion"]


def test_the_opt_in_deployment_controller_mirrors_replicas_into_status(
    kube_emulator_factory: Callable[..., EmulatorHandle],
) -> None:
    emulator = kube_emulator_factory(deployment_controller=True)
    emulator.create(
        {"apiVersion": "apps/v1", "kind": "Deployment", **deployment()}, namespace="default"
    )
    emulator.patch(
        "apps/v1/deployments",
        "web",
        {"spec": {"replicas": 4}},
        namespace="default",
        subresource="scale",
    )

    def settled() -> dict[str, Any] | None:
        scale = emulator.get("apps/v1/deployments", "web", namespace="default", subresource="scale")
        return scale if scale and scale["status"]["replicas"] == 4 else None

    emulator.wait_for(settled, what="the controller to catch up")
    web = emulator.get("apps/v1/deployments", "web", namespace="default") or {}
    assert web["status"]["observedGeneration"] == web["metadata"]["generation"] == 2
    assert web["status"]["readyReplicas"] == 4
    controller = [e for e in emulator.audit() if e.identity == CONTROLLER_IDENTITY]
    assert controller and all(e.subresource == "status" and e.changed for e in controller)


# ------------------------------------------------------------------------ finalizers --


def test_finalizers_delay_deletion_until_the_last_one_is_removed(
    clients: Callable[[str], Clients],
) -> None:
    c = clients("alice")
    c.core.create_namespaced_config_map(
        "default", {"metadata": {"name": "held", "finalizers": ["test/hold"]}}
    )
    since = c.core.list_namespaced_config_map("default").metadata.resource_version

    c.core.delete_namespaced_config_map("held", "default")
    held = c.core.read_namespaced_config_map("held", "default")
    assert held.metadata.deletion_timestamp is not None
    with pytest.raises(ApiException) as adding:
        c.core.patch_namespaced_config_map(
            "held", "default", [{"op": "add", "path": "/metadata/finalizers/-", "value": "x/y"}]
        )
    assert adding.value.status == 422

    # Strategic merge treats finalizers as a set: an empty list removes nothing (as for real).
    c.core.patch_namespaced_config_map("held", "default", {"metadata": {"finalizers": []}})
    assert c.core.read_namespaced_config_map("held", "default").metadata.finalizers == ["test/hold"]

    c.core.patch_namespaced_config_map(
        "held", "default", [{"op": "remove", "path": "/metadata/finalizers"}]
    )
    with pytest.raises(ApiException) as gone:
        c.core.read_namespaced_config_map("held", "default")
    assert gone.value.status == 404

    watch = kubernetes.watch.Watch()
    seen = []
    for event in watch.stream(
        c.core.list_namespaced_config_map, "default", resource_version=since, timeout_seconds=5
    ):
        seen.append((event["type"], bool(event["object"].metadata.deletion_timestamp)))
        if event["type"] == "DELETED":
            watch.stop()
    assert seen == [("MODIFIED", True), ("DELETED", True)]


# ---------------------------------------------------------------------------- leases --


def test_leases_conflict_on_create_and_exactly_one_racing_replace_wins(
    kube_emulator: EmulatorHandle, clients: Callable[[str], Clients]
) -> None:
    alice, bob = clients("alice"), clients("bob")
    lease = {"metadata": {"name": "leader"}, "spec": {"leaseDurationSeconds": 15}}
    alice.coordination.create_namespaced_lease("default", lease)
    with pytest.raises(ApiException) as exists:
        bob.coordination.create_namespaced_lease("default", lease)
    assert exists.value.status == 409 and status_of(exists.value)["reason"] == "AlreadyExists"

    rounds = 10
    for _ in range(rounds):
        barrier = threading.Barrier(2)
        outcomes: dict[str, int] = {}

        def acquire(
            identity: str, c: Clients, barrier: threading.Barrier, outcomes: dict[str, int]
        ) -> None:
            current = c.coordination.read_namespaced_lease("leader", "default")
            barrier.wait()  # both hold the same resourceVersion before either writes
            # As a leader elector does: always renew, so no attempt is a no-op write.
            current.spec.holder_identity = identity
            current.spec.renew_time = datetime.datetime.now(tz=datetime.UTC)
            try:
                c.coordination.replace_namespaced_lease("leader", "default", current)
                outcomes[identity] = 200
            except ApiException as e:
                outcomes[identity] = e.status

        threads = [
            threading.Thread(target=acquire, args=(name, client, barrier, outcomes))
            for name, client in (("alice", alice), ("bob", bob))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert sorted(outcomes.values()) == [200, 409]

    # Every successful lease write was made by the identity it names as the holder.
    replaces = [e for e in kube_emulator.audit() if e.resource == "leases" and e.method == "PUT"]
    assert len(replaces) == 2 * rounds
    winners = [e for e in replaces if e.status_code == 200]
    assert len(winners) == rounds
    assert all(e.identity == (e.result or {})["spec"]["holderIdentity"] for e in winners)
    last = winners[-1]
    assert (
        kube_emulator.lease_holder_at(last.seq + 1, namespace="default", name="leader")
        == last.identity
    )


# ----------------------------------------------------------------------------- audit --


def test_audit_log_records_each_clients_identity(
    kube_emulator: EmulatorHandle, clients: Callable[[str], Clients]
) -> None:
    alice, bob = clients("alice"), clients("operator-b")
    alice.core.create_namespaced_config_map("default", {"metadata": {"name": "from-alice"}})
    bob.core.create_namespaced_config_map("default", {"metadata": {"name": "from-bob"}})
    alice.core.list_namespaced_config_map("default")  # reads are not audited
    path = kube_emulator.path("v1/configmaps", namespace="default")
    kube_emulator.request("POST", path, body={"metadata": {"name": "raw"}}, identity="carol")
    impersonating = {"Impersonate-User": "dave"}  # kubectl --as; wins over the token
    kube_emulator.request("DELETE", f"{path}/raw", identity="carol", headers=impersonating)
    kube_emulator.request("POST", path, body={"metadata": {"name": "anon"}}, identity=None)

    entries = kube_emulator.audit()
    assert [(e.identity, e.method, e.name, e.status_code) for e in entries] == [
        ("alice", "POST", "from-alice", 201),
        ("operator-b", "POST", "from-bob", 201),
        ("carol", "POST", "raw", 201),
        ("dave", "DELETE", "raw", 200),
        ("system:anonymous", "POST", "anon", 201),
    ]
    assert [e.seq for e in entries] == sorted(e.seq for e in entries)
    assert entries[0].user_agent is not None and entries[0].user_agent.startswith(
        "OpenAPI-Generator/"
    )
    assert all(
        e.resource_version == e.result["metadata"]["resourceVersion"] for e in entries if e.result
    )

    # The same log, over HTTP, for tests whose emulator runs elsewhere.
    over_http = kube_emulator.request(
        "GET", "/_emulator/audit", params={"since": str(entries[1].seq)}
    ).body
    identities = [item["identity"] for item in over_http["items"]]
    assert identities == ["carol", "dave", "system:anonymous"]


# ---------------------------------------------------------------------------- faults --


def test_injected_faults_answer_without_touching_state(
    kube_emulator: EmulatorHandle, clients: Callable[[str], Clients]
) -> None:
    c = clients("alice")
    created = c.core.create_namespaced_config_map(
        "default", {"metadata": {"name": "cfg"}, "data": {"a": "1"}}
    )
    path = kube_emulator.path("v1/configmaps", namespace="default", name="cfg")
    kube_emulator.inject_fault(path=path, status=500, count=2, methods=["PATCH"])
    for _ in range(2):
        with pytest.raises(ApiException) as failure:
            c.core.patch_namespaced_config_map("cfg", "default", {"data": {"a": "2"}})
        assert failure.value.status == 500 and status_of(failure.value)["reason"] == "InternalError"
    assert rv(c.core.read_namespaced_config_map("cfg", "default")) == rv(created)
    assert c.core.patch_namespaced_config_map("cfg", "default", {"data": {"a": "2"}}).data == {
        "a": "2"
    }

    # Over HTTP too, for an operator process's perspective: a 409 on the next replace.
    added = kube_emulator.request(
        "POST", "/_emulator/faults", body={"path": f"{path}", "status": 409, "methods": ["PUT"]}
    )
    assert added.status == 201
    with pytest.raises(ApiException) as conflict:
        c.core.replace_namespaced_config_map(
            "cfg", "default", {"metadata": {"name": "cfg"}, "data": {}}
        )
    assert conflict.value.status == 409 and status_of(conflict.value)["reason"] == "Conflict"

    faults = [e for e in kube_emulator.audit() if e.fault]
    assert [(e.method, e.status_code, e.changed) for e in faults] == [("PATCH", 500, False)] * 2 + [
        ("PUT", 409, False)
    ]


# ------------------------------------------------------------------ namespaces, lists --


def test_namespaces_exist_and_scope_creation(clients: Callable[[str], Clients]) -> None:
    c = clients("alice")
    names = {ns.metadata.name for ns in c.core.list_namespace().items}
    assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= names
    assert c.core.read_namespace("default").status.phase == "Active"

    with pytest.raises(ApiException) as missing:
        c.core.create_namespaced_config_map("team-a", {"metadata": {"name": "cfg"}})
    assert (
        missing.value.status == 404
        and 'namespaces "team-a" not found' in status_of(missing.value)["message"]
    )
    c.core.create_namespace({"metadata": {"name": "team-a"}})
    c.core.create_namespaced_config_map("team-a", {"metadata": {"name": "cfg"}})
    assert [cm.metadata.name for cm in c.core.list_config_map_for_all_namespaces().items] == ["cfg"]

    c.core.delete_namespace("team-a")  # cascades to the objects in it
    assert c.core.list_config_map_for_all_namespaces().items == []


def test_lists_filter_by_label_and_field_selectors_and_paginate(
    clients: Callable[[str], Clients],
) -> None:
    c = clients("alice")
    labels = {
        "a": {"tier": "web", "env": "prod"},
        "b": {"tier": "db", "env": "prod"},
        "c": {"tier": "web"},
    }
    for name, label_set in labels.items():
        c.core.create_namespaced_config_map(
            "default", {"metadata": {"name": name, "labels": label_set}}
        )

    def names(**query: Any) -> list[str | None]:
        return [
            cm.metadata.name for cm in c.core.list_namespaced_config_map("default", **query).items
        ]

    assert names(label_selector="tier=web") == ["a", "c"]
    assert names(label_selector="tier in (web,db),env") == ["a", "b"]
    assert names(label_selector="tier notin (db),!env") == ["c"]
    assert names(label_selector="env!=prod") == ["c"]
    assert names(field_selector="metadata.name=b") == ["b"]
    assert names(field_selector="metadata.name!=b", label_selector="tier=web") == ["a", "c"]
    with pytest.raises(ApiException) as unsupported:
        names(field_selector="data.x=y")
    assert unsupported.value.status == 400

    first = c.core.list_namespaced_config_map("default", limit=2)
    assert [cm.metadata.name for cm in first.items] == ["a", "b"]
    assert first.metadata.remaining_item_count == 1
    c.core.create_namespaced_config_map(
        "default", {"metadata": {"name": "aa"}}
    )  # after the snapshot
    rest = c.core.list_namespaced_config_map("default", limit=2, _continue=first.metadata._continue)
    assert [cm.metadata.name for cm in rest.items] == ["c"]
    assert rest.metadata.resource_version == first.metadata.resource_version


def test_events_are_creatable_in_both_event_apis(clients: Callable[[str], Clients]) -> None:
    c = clients("alice")
    involved = {"apiVersion": "v1", "kind": "ConfigMap", "name": "cfg", "namespace": "default"}
    core_event = c.core.create_namespaced_event(
        "default",
        {
            "metadata": {"generateName": "cfg-"},
            "involvedObject": involved,
            "reason": "Scaled",
            "type": "Normal",
        },
    )
    assert (
        core_event.metadata.name.startswith("cfg-")
        and len(core_event.metadata.name) == len("cfg-") + 5
    )
    new_event = c.events.create_namespaced_event(
        "default",
        {
            "metadata": {"name": "scaled.1"},
            "eventTime": "2026-01-01T00:00:00.000000Z",
            "reportingController": "forescale.test/operator",
            "reportingInstance": "operator-0",
            "action": "Scale",
            "reason": "Scaled",
            "type": "Normal",
            "regarding": involved,
        },
    )
    assert new_event.reason == "Scaled"
    found = c.core.list_namespaced_event(
        "default", field_selector="reason=Scaled,involvedObject.name=cfg"
    )
    assert [e.metadata.name for e in found.items] == [core_event.metadata.name]


# ----------------------------------------------------------------------- kopf smoke --

OPERATOR = """
import kopf
import kubernetes

kubernetes.config.load_kube_config()  # $KUBECONFIG, set by the test for this process only
apps = kubernetes.client.AppsV1Api()


@kopf.on.login()
def login(**kwargs):
    return kopf.login_via_client(**kwargs)


@kopf.on.startup()
def configure(settings, **_):
    # A widget deleted while its timer runs: kopf checks again for the timer's exit after
    # this long before it releases the finalizer (default 60 s, longer than the test
    # waits). The operator itself sets 1 s (forescale.controller.handlers).
    settings.background.cancellation_polling = 0.5


@kopf.on.create("{group}", "v1", "widgets")
def created(**_):
    return {{"seen": True}}


@kopf.on.delete("{group}", "v1", "widgets")
def deleted(**_):
    pass


@kopf.timer("{group}", "v1", "widgets", interval=0.2)
def scale(spec, namespace, patch, **_):
    scale = {{"spec": {{"replicas": spec["replicas"]}}}}
    apps.patch_namespaced_deployment_scale(spec["target"], namespace, scale)
    patch.status["scaledTo"] = spec["replicas"]
"""


@pytest.mark.integration
def test_a_real_kopf_operator_scales_through_the_emulator(
    kube_emulator: EmulatorHandle, tmp_path: Path
) -> None:
    emulator = kube_emulator
    emulator.create(widget_crd())
    emulator.create_namespace("smoke")
    emulator.create(
        {"apiVersion": "apps/v1", "kind": "Deployment", **deployment("web", replicas=1)},
        namespace="smoke",
    )
    emulator.create({**widget("w1", replicas=3, target="web")}, namespace="smoke")

    operator = tmp_path / "smoke_operator.py"  # not operator.py: that shadows the stdlib
    operator.write_text(textwrap.dedent(OPERATOR.format(group=GROUP)))
    log = tmp_path / "operator.log"
    env = {
        **os.environ,
        "KUBECONFIG": str(emulator.kubeconfig_path("kopf-smoke", namespace="smoke")),
    }
    command = [
        sys.executable,
        "-m",
        "kopf",
        "run",
        "--standalone",
        "--namespace",
        "smoke",
        "--verbose",
        str(operator),
    ]
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, env=env, cwd=tmp_path, stdout=output, stderr=subprocess.STDOUT
        )
    try:

        def operator_done() -> dict[str, Any] | None:
            if process.poll() is not None:
                raise AssertionError(f"kopf exited early:\n{log.read_text()}")
            found = emulator.get(WIDGETS, "w1", namespace="smoke") or {}
            web = emulator.get("apps/v1/deployments", "web", namespace="smoke") or {}
            status = found.get("status") or {}
            ready = status.get("scaledTo") == 3 and status.get("created") == {"seen": True}
            return found if ready and web["spec"]["replicas"] == 3 else None

        emulator.wait_for(operator_done, timeout=25, what=f"kopf to scale; log:\n{log.read_text()}")

        # Both of the operator's clients carried its identity: kubernetes (scale), kopf (status).
        writes = [e for e in emulator.audit() if e.identity == "kopf-smoke"]
        scales = [
            e
            for e in writes
            if e.resource == "deployments" and e.subresource == "scale" and e.status_code == 200
        ]
        statuses = [
            e
            for e in writes
            if e.resource == "widgets" and e.subresource == "status" and e.status_code == 200
        ]
        assert scales and all((e.user_agent or "").startswith("OpenAPI-Generator/") for e in scales)
        assert statuses and all((e.user_agent or "").startswith("kopf/") for e in statuses)
        finalizer_patch = [
            e for e in writes if e.resource == "widgets" and isinstance(e.request_body, list)
        ]
        assert (
            finalizer_patch and finalizer_patch[0].status_code == 200
        )  # kopf's JSON patch with `test`

        emulator.delete(WIDGETS, "w1", namespace="smoke")  # kopf's on.delete releases its finalizer
        emulator.wait_for(
            lambda: emulator.get(WIDGETS, "w1", namespace="smoke") is None,
            timeout=15,
            what="deletion",
        )
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
