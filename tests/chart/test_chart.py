"""The Helm chart: lint, render over a matrix of values, validate every manifest against the
oldest and newest Kubernetes it supports, secure defaults, RBAC derived from the operator's
code, the CRD copy against crds/, and the example ScalingPolicies against the CRD.

No cluster and no network: helm-python-sdk renders offline and kubernetes-validate ships the
schemas.
"""

from __future__ import annotations

import copy
import importlib.util
import inspect
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml

from forescale.core.errors import InvalidInputError
from forescale.policy import policy_spec_from_manifest
from tests.support import controlplane

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "forescale"
CRD_FILE = ROOT / "crds" / "scalingpolicies.forescale.dev.yaml"
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
SYNC_SCRIPT = ROOT / "scripts" / "sync-chart-crds.py"
KEEP = ("helm.sh/resource-policy", "keep")

#: Oldest and newest Kubernetes the chart supports: Chart.yaml's kubeVersion floor and the
#: newest schema set kubernetes-validate ships.
KUBE_VERSIONS = ("1.28.0", kubernetes_validate.latest_version())

#: Values the chart is rendered with; each must lint, render and validate.
MATRIX: dict[str, dict[str, Any]] = {
    "defaults": {},
    "namespaced-rbac": {"rbac": {"namespaced": True}, "watchNamespaces": ["shop", "search"]},
    "service-monitor": {"serviceMonitor": {"enabled": True, "labels": {"release": "kps"}}},
    "one-replica": {"replicaCount": 1},
    "models-volume": {"models": {"source": "volume",
                                 "volume": {"persistentVolumeClaim": {"claimName": "models"}}}},
    "models-configmap": {"models": {"source": "configMap", "configMapName": "nasa-jul1995"}},
    "prometheus-auth-tls": {"prometheus": {
        "url": "https://prometheus.monitoring:9091",
        "auth": {"bearerTokenSecret": {"name": "prom-token", "key": "token"}},
        "tls": {"caSecret": "prom-ca", "insecureSkipVerify": False}}},
    "peering-one-replica": {"replicaCount": 1, "peering": {"enabled": True}},
    "peering-namespaced": {"replicaCount": 1, "peering": {"enabled": True},
                           "rbac": {"namespaced": True}, "watchNamespaces": ["shop"]},
    "no-crds": {"crds": {"install": False}},
    "observability": {"grafanaDashboard": {"enabled": True},
                      "prometheusRule": {"enabled": True, "labels": {"release": "kps"}}},
    "no-aggregated-roles": {"rbac": {"aggregateToDefaultRoles": False}},
    "no-rbac": {"rbac": {"create": False}},
}


@pytest.fixture(scope="module")
def chart() -> Iterator[helm_python.Chart]:
    loaded = helm_python.Chart.load(str(CHART))
    try:
        yield loaded
    finally:
        loaded.close()


#: What the cluster serves once kopf's peering CRDs are installed (the chart requires them
#: for peering.enabled and does not install them): as `helm template --api-versions`.
KOPF_CRDS = ("kopf.dev/v1", "kopf.dev/v1/ClusterKopfPeering", "kopf.dev/v1/KopfPeering")


def render(chart: helm_python.Chart, values: dict[str, Any],
           api_versions: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Every rendered object (NOTES.txt excluded), in template order; ``api_versions`` are
    served by the cluster besides the built-in ones (.Capabilities.APIVersions)."""
    options: dict[str, Any] = {"name": "fs", "namespace": "forescale", "is_install": True}
    if api_versions:
        # helm-python-sdk's Chart.render does not take them; its native helm_render does.
        options["api_versions"] = list(api_versions)
        rendered: dict[str, str] = json.loads(helm_python._native.call_string(
            "helm_render", chart._raw(), json.dumps(values), json.dumps(options)))
    else:
        rendered = chart.render(copy.deepcopy(values), **options)
    docs: list[dict[str, Any]] = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


@pytest.fixture(scope="module")
def rendered(chart: helm_python.Chart) -> dict[str, list[dict[str, Any]]]:
    return {case: render(chart, values,
                         KOPF_CRDS if values.get("peering", {}).get("enabled") else ())
            for case, values in MATRIX.items()}


# --- lint and values schema --------------------------------------------------------------


def test_lint_strict_has_no_errors_or_warnings() -> None:
    report = helm_python.lint(str(CHART), strict=True)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], report


@pytest.mark.parametrize("case", ["namespaced-rbac", "models-volume", "prometheus-auth-tls"])
def test_lint_strict_with_values(case: str) -> None:
    report = helm_python.lint(str(CHART), copy.deepcopy(MATRIX[case]), strict=True)
    assert not [m for m in report["messages"] if m["severity"] >= 2], report


@pytest.mark.parametrize("bad", [
    {"replicaCount": -1},
    {"replicaCount": "2"},
    {"unknownKey": True},
    {"image": {"repository": "x", "tagg": "1"}},
    {"logLevel": "verbose"},
    {"logFormat": "xml"},
    {"models": {"source": "s3"}},
    {"prometheus": {"url": "prometheus:9090"}},
    {"metrics": {"port": 70000}},
    {"watchNamespaces": ["Not_A_Namespace"]},
    {"securityContext": {"readOnlyRootFilesystem": False}},
    {"securityContext": {"allowPrivilegeEscalation": True}},
    {"podSecurityContext": {"runAsNonRoot": False}},
    {"serviceMonitor": {"interval": "often"}},
], ids=repr)
def test_values_schema_rejects_bad_values(chart: helm_python.Chart, bad: dict[str, Any]) -> None:
    with pytest.raises(helm_python.HelmValuesError):
        chart.validate_schema(bad)


#: Ways to weaken the security contexts; the schema refuses each (docs/helm.md promises it).
WEAKENINGS: list[dict[str, Any]] = [
    {"securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}},
    {"securityContext": {"capabilities": {"drop": ["ALL"], "add": ["ALL"]}}},
    {"securityContext": {"capabilities": {"drop": ["NET_RAW"]}}},
    {"securityContext": {"capabilities": None}},
    {"securityContext": {"seccompProfile": {"type": "Unconfined"}}},
    {"podSecurityContext": {"seccompProfile": {"type": "Unconfined"}}},
    {"securityContext": {"seccompProfile": None}},
    {"podSecurityContext": {"seccompProfile": None}},
    {"securityContext": {"seccompProfile": {"type": "Localhost"}}},  # which profile?
    {"securityContext": {"procMount": "Unmasked"}},
    {"securityContext": {"privileged": True}},
    {"securityContext": {"runAsNonRoot": None}},
    {"securityContext": {"runAsUser": 0}},
    {"podSecurityContext": {"runAsUser": 0}},
    {"securityContext": {"appArmorProfile": {"type": "Unconfined"}}},
    {"podSecurityContext": {"appArmorProfile": {"type": "Unconfined"}}},
    {"securityContext": {"seLinuxOptions": {"type": "spc_t"}}},
    {"podSecurityContext": {"seLinuxOptions": {"user": "system_u", "role": "system_r"}}},
    {"securityContext": {"windowsOptions": {"hostProcess": True}}},
    {"podSecurityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "65536"}]}},
    # Typos fail rather than silently dropping the setting they meant.
    {"podSecurityContext": {"runAsNonRot": True}},
    {"securityContext": {"readOnlyRootFileSystem": True}},
]


@pytest.mark.parametrize("bad", WEAKENINGS, ids=repr)
def test_values_schema_refuses_weaker_security_contexts(chart: helm_python.Chart,
                                                        bad: dict[str, Any]) -> None:
    with pytest.raises(helm_python.HelmValuesError):
        chart.validate_schema(bad)


@pytest.mark.parametrize("good", [
    {"securityContext": {"seccompProfile": {"type": "Localhost",
                                            "localhostProfile": "profiles/forescale.json"}}},
    {"securityContext": {"appArmorProfile": {"type": "RuntimeDefault"}, "runAsUser": 1000,
                         "capabilities": {"drop": ["ALL", "NET_RAW"], "add": []}}},
    {"podSecurityContext": {"fsGroupChangePolicy": "OnRootMismatch",
                            "supplementalGroups": [1000],
                            "seLinuxOptions": {"level": "s0:c123,c456"},
                            "sysctls": [{"name": "net.ipv4.tcp_keepalive_time",
                                         "value": "60"}]}},
], ids=repr)
def test_values_schema_takes_secure_security_contexts(chart: helm_python.Chart,
                                                      good: dict[str, Any]) -> None:
    chart.validate_schema(good)
    pod = deployment(render(chart, good))["spec"]["template"]["spec"]
    # The newest Kubernetes (appArmorProfile is newer than the floor).
    kubernetes_validate.validate(
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": pod},
        KUBE_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("key, kubernetes", [("podSecurityContext", "podsecuritycontext"),
                                             ("securityContext", "securitycontext")])
def test_security_context_keys_are_kubernetes_keys(key: str, kubernetes: str) -> None:
    """The schema lists every key of the newest Kubernetes' (Pod)SecurityContext, and only
    those (a typo is refused): a key Kubernetes adds fails here until it is listed, with
    whatever constraint keeps it from weakening the pod."""
    version = kubernetes_validate.latest_version()
    theirs = kubernetes_validate.utils.schema_contents(
        f"kubernetes-json-schema/v{version}-local-strict/{kubernetes}-v1.json", version)
    ours = json.loads((CHART / "values.schema.json").read_text())["properties"][key]
    assert ours["additionalProperties"] is False
    assert set(ours["properties"]) == set(theirs["properties"])


#: Prometheus URLs, and whether `forescale run` accepts them (url_problem is None).
PROMETHEUS_URLS: list[tuple[str, bool]] = [
    ("http://prometheus-operated.monitoring.svc:9090", True),
    ("https://prom.example.com/prometheus", True),
    ("https://prom.example.com/prometheus/", True),
    ("http://10.0.0.5:9090", True),
    ("http://[::1]:9090/", True),
    ("http://prom:65535", True),
    ("http://admin:secret@prom:9090/?x=1", False),
    ("http://admin:secret@prom:9090", False),
    ("http://user@prom:9090/", False),
    ("http://prom:9090/?x=1", False),
    ("http://prom:9090/api#top", False),
    ("http://prom:9090?", False),
    ("http://prom:65536", False),
    ("http://prom:port", False),
    ("http://prom:90:90", False),
    ("http://:9090", False),
    ("http://[1.2.3.4]:9090", False),
    ("http://", False),
    ("ftp://prom:9090", False),
    ("prometheus:9090", False),
]


@pytest.mark.parametrize("url, accepted", PROMETHEUS_URLS, ids=repr)
def test_values_schema_takes_the_prometheus_urls_the_operator_takes(
        chart: helm_python.Chart, url: str, accepted: bool) -> None:
    """A URL `forescale run` refuses (exit 2) must fail the install, not crash-loop the
    pods after a successful one; credentials would also sit in the pod's args."""
    from forescale.controller.settings import url_problem

    assert (url_problem(url) is None) is accepted  # the list itself is right
    for values in ({"prometheus": {"url": url}}, {"prometheus": {"allowedUrls": [url]}}):
        if accepted:
            chart.validate_schema(values)
        else:
            with pytest.raises(helm_python.HelmValuesError):
                chart.validate_schema(values)


@pytest.mark.parametrize("values, message", [
    ({"rbac": {"namespaced": True}}, "rbac.namespaced needs watchNamespaces"),
    ({"peering": {"enabled": True}}, "peering.enabled needs replicaCount 1"),
    ({"models": {"source": "configMap"}}, "needs models.configMapName"),
    ({"models": {"source": "volume"}}, "needs models.volume"),
    # The namespace's default ServiceAccount would get patch on every /scale.
    ({"serviceAccount": {"create": False}}, "serviceAccount.create=false needs "
                                            "serviceAccount.name"),
    # Prometheus refuses the scrape config: nothing would be scraped, no alert fire.
    ({"serviceMonitor": {"enabled": True, "interval": "5s"}},
     r"serviceMonitor.scrapeTimeout \(10s\) must not exceed serviceMonitor.interval \(5s\)"),
    ({"serviceMonitor": {"enabled": True, "interval": "1m", "scrapeTimeout": "1m500ms"}},
     "must not exceed serviceMonitor.interval"),
])
def test_impossible_combinations_fail_to_render(chart: helm_python.Chart,
                                                values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmError, match=message):
        render(chart, values)


def test_a_scrape_timeout_within_the_interval_renders(chart: helm_python.Chart) -> None:
    for interval, timeout in (("1m", "59s500ms"), ("1m", "1m"), ("1h", "30m")):
        docs = render(chart, {"serviceMonitor": {"enabled": True, "interval": interval,
                                                 "scrapeTimeout": timeout}})
        assert any(d and d.get("kind") == "ServiceMonitor" for d in docs)


def test_the_metrics_service_name_is_a_dns_label(chart: helm_python.Chart) -> None:
    """The 63-character full name plus "-metrics" was 71: the API server refuses it."""
    docs = render(chart, {"fullnameOverride": "f" * 63})
    names = [d["metadata"]["name"] for d in docs if d and d.get("kind") == "Service"]
    assert names and all(len(n) <= 63 and n.endswith("-metrics") for n in names)


# --- every manifest is valid Kubernetes ------------------------------------------------


def test_chart_kube_version_floor_is_the_oldest_validated() -> None:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert meta["kubeVersion"] == f">={KUBE_VERSIONS[0]}-0"


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("case", list(MATRIX))
def test_manifests_validate_strictly(rendered: dict[str, list[dict[str, Any]]], case: str,
                                     kube_version: str) -> None:
    for doc in rendered[case]:
        if doc["apiVersion"] == "monitoring.coreos.com/v1":
            # A custom resource: kubernetes-validate has no schema for it (see the
            # structural test below).
            continue
        if doc["apiVersion"] == "kopf.dev/v1":
            # kopf's peering objects: their CRD (kopf's own, installed beforehand) is what
            # validates them.
            assert set(doc) == {"apiVersion", "kind", "metadata"}
            continue
        kubernetes_validate.validate(doc, kube_version, strict=True)


def test_service_monitor_structure(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """The ServiceMonitor's fields, checked against the prometheus-operator API by hand (its
    CRD is not shipped here): it selects the metrics Service by its labels and port name."""
    docs = rendered["service-monitor"]
    (monitor,) = of_kind(docs, "ServiceMonitor")
    (service,) = of_kind(docs, "Service")
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert set(monitor["spec"]) == {"selector", "namespaceSelector", "endpoints"}
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["forescale"]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint == {"port": "metrics", "path": "/metrics", "interval": "30s",
                        "scrapeTimeout": "10s"}
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert not of_kind(rendered["defaults"], "ServiceMonitor")


# --- the Deployment --------------------------------------------------------------------


def deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (dep,) = of_kind(docs, "Deployment")
    return dep


@pytest.mark.parametrize("case", list(MATRIX))
def test_secure_defaults_on_every_container(rendered: dict[str, list[dict[str, Any]]],
                                            case: str) -> None:
    pod = deployment(rendered[case])["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    containers = pod["containers"] + pod.get("initContainers", [])
    for container in containers:
        sc = container["securityContext"]
        assert sc["runAsNonRoot"] is True
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        # The root FS is read-only: /tmp must be a writable emptyDir, HOME/TMPDIR in it.
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["HOME"] == env["TMPDIR"] == "/tmp"
        assert container["livenessProbe"]["httpGet"]["port"] == "metrics"
        assert container["readinessProbe"]["httpGet"]["port"] == "metrics"
        assert container["resources"]["requests"]


def args_of(docs: list[dict[str, Any]]) -> list[str]:
    return list(deployment(docs)["spec"]["template"]["spec"]["containers"][0]["args"])


def test_default_args(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["defaults"]
    dep = deployment(docs)
    assert dep["spec"]["replicas"] == 2
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/forescale/forescale:0.1.0"
    assert container["ports"] == [{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}]
    assert args_of(docs) == [
        "--all-namespaces", "--prometheus-url=http://prometheus-operated.monitoring.svc:9090",
        "--models-dir=/models", "--metrics-port=8080", "--identity=$(POD_NAME)",
        "--standalone", "--log-format=json", "--log-level=info"]
    env = {e["name"]: e for e in container["env"]}
    # Two releases in one namespace are two groups of replicas, not one.
    assert env["FORESCALE_REPLICA_GROUP"]["value"] == dep["metadata"]["name"]


def test_grace_period_covers_the_shutdown(chart: helm_python.Chart,
                                         rendered: dict[str, list[dict[str, Any]]]) -> None:
    """On SIGTERM kopf lets a running cycle finish (the daemon's cancellation_timeout), then
    release_all waits for the calls in progress and releases every Lease the pod holds. A pod
    SIGKILLed before that leaves its targets unscaled until the Leases expire, so the grace
    period (and the schema's floor for it) must cover both waits, with room for the releases."""
    handlers = (ROOT / "operator" / "forescale" / "controller" / "handlers.py").read_text()
    (cancellation,) = re.findall(r"cancellation_timeout=(\d+)", handlers)
    from forescale.controller.worker import Controller

    wait = inspect.signature(Controller.release_all).parameters["wait_seconds"].default
    worst = int(cancellation) + wait
    schema = json.loads((CHART / "values.schema.json").read_text())
    floor = schema["properties"]["terminationGracePeriodSeconds"]["minimum"]
    assert floor > worst
    pod = deployment(rendered["defaults"])["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 60 >= floor
    pod = deployment(render(chart, {"terminationGracePeriodSeconds": 120}))["spec"]["template"]
    assert pod["spec"]["terminationGracePeriodSeconds"] == 120
    for bad in (int(worst), 30, "60"):
        with pytest.raises(helm_python.HelmValuesError):
            chart.validate_schema({"terminationGracePeriodSeconds": bad})


def test_args_follow_values(rendered: dict[str, list[dict[str, Any]]]) -> None:
    args = args_of(rendered["namespaced-rbac"])
    assert "--namespace=shop" in args and "--namespace=search" in args
    assert "--all-namespaces" not in args
    assert "--peering=forescale" in args_of(rendered["peering-one-replica"])
    assert "--standalone" not in args_of(rendered["peering-one-replica"])
    assert deployment(rendered["one-replica"])["spec"]["replicas"] == 1


def test_models_volume_and_configmap(rendered: dict[str, list[dict[str, Any]]]) -> None:
    pod = deployment(rendered["models-volume"])["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"] == {"claimName": "models"}
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["models"]["mountPath"] == "/models" and mounts["models"]["readOnly"]

    pod = deployment(rendered["models-configmap"])["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["models"]["configMap"] == {"name": "nasa-jul1995"}
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    # One ConfigMap is one artifact directory: modelRef nasa-jul1995 -> /models/nasa-jul1995.
    assert mounts["models"]["mountPath"] == "/models/nasa-jul1995"

    pod = deployment(rendered["defaults"])["spec"]["template"]["spec"]
    assert "models" not in {v["name"] for v in pod["volumes"]}


def test_prometheus_auth_and_tls(rendered: dict[str, list[dict[str, Any]]]) -> None:
    pod = deployment(rendered["prometheus-auth-tls"])["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    token_file = env["FORESCALE_PROMETHEUS_BEARER_TOKEN_FILE"]
    ca_file = env["FORESCALE_PROMETHEUS_CA_FILE"]
    assert "FORESCALE_PROMETHEUS_INSECURE_SKIP_VERIFY" not in env
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert volumes["prometheus-token"]["secret"]["secretName"] == "prom-token"
    assert token_file == f"{mounts['prometheus-token']}/token"
    assert volumes["prometheus-ca"]["secret"]["secretName"] == "prom-ca"
    assert ca_file == f"{mounts['prometheus-ca']}/ca.crt"
    assert "--prometheus-url=https://prometheus.monitoring:9091" in container["args"]
    # The token never appears in the pod spec itself, only a path to the mounted Secret.
    default_env = {e["name"] for e in
                   deployment(rendered["defaults"])["spec"]["template"]["spec"]
                   ["containers"][0]["env"]}
    assert not {n for n in default_env if n.startswith("FORESCALE_PROMETHEUS")}


def test_service_selects_the_operator_pods(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["defaults"]
    (service,) = of_kind(docs, "Service")
    pod_labels = deployment(docs)["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"


# --- RBAC ------------------------------------------------------------------------------


Grant = tuple[str, str, str]  # (apiGroup, resource, verb)


def grants(rules: list[dict[str, Any]]) -> set[Grant]:
    return {(group, resource, verb)
            for rule in rules
            for group in rule["apiGroups"]
            for resource in rule["resources"]
            for verb in rule["verbs"]}


def operator_roles(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The operator's own roles: those aggregated into the built-in edit/view roles are
    for people, not for the operator (see test_chart_kubectl.py)."""
    return [r for r in of_kind(docs, kind)
            if not any(k.startswith("rbac.authorization.k8s.io/aggregate-to-")
                       for k in r["metadata"].get("labels", {}))]


def rendered_grants(docs: list[dict[str, Any]]) -> set[Grant]:
    roles = operator_roles(docs, "ClusterRole") + operator_roles(docs, "Role")
    return grants([rule for role in roles for rule in role["rules"]])


def required_grants() -> set[Grant]:
    """What the operator's code uses, from the code itself."""
    if importlib.util.find_spec("forescale.controller") is None:
        pytest.fail("forescale.controller.rbac.required_rules() does not exist yet: the "
                    "chart's RBAC cannot be checked against the operator's code until the "
                    "operator (issue 4) lands")
    from forescale.controller.rbac import required_rules

    return grants(required_rules())


PEERING: set[str] = {"kopfpeerings", "clusterkopfpeerings"}


def test_rbac_equals_what_the_operator_uses(rendered: dict[str, list[dict[str, Any]]]) -> None:
    required = required_grants()
    # With peering on, the chart grants exactly what the code uses.
    assert rendered_grants(rendered["peering-one-replica"]) == required
    # --standalone never touches peering objects, so the default drops those and only those.
    assert rendered_grants(rendered["defaults"]) == {
        g for g in required if g[1] not in PEERING}


LEASES: set[Grant] = {("coordination.k8s.io", "leases", v)
                      for v in ("get", "list", "create", "update", "delete")}


def lease_roles(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in operator_roles(docs, "Role") if r["metadata"]["name"].endswith("-leases")]


@pytest.mark.parametrize("case", ["defaults", "namespaced-rbac"])
def test_leases_only_in_the_release_namespace(rendered: dict[str, list[dict[str, Any]]],
                                              case: str) -> None:
    """Lease writes are granted in the operator's own namespace only, never cluster-wide
    (where they would reach kube-system's Leases), and that is where the operator keeps
    them (FORESCALE_LEASE_NAMESPACE from the pod's namespace)."""
    docs = rendered[case]
    (role,) = lease_roles(docs)
    assert role["metadata"]["namespace"] == "forescale"
    assert grants(role["rules"]) == LEASES
    others = [r for r in operator_roles(docs, "ClusterRole") + operator_roles(docs, "Role")
              if r is not role]
    assert not any(g[1] == "leases" for r in others for g in grants(r["rules"]))
    env = {e["name"]: e for e in deployment(docs)["spec"]["template"]["spec"]["containers"][0]
           ["env"]}
    assert env["FORESCALE_LEASE_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.namespace"


def test_rbac_create_false_creates_no_rbac_at_all(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    """rbac.create=false is for clusters where RBAC is managed elsewhere: not one role or
    binding, the ones aggregated into edit/view included (aggregateToDefaultRoles is on by
    default)."""
    rbac = {d["kind"] for d in rendered["no-rbac"]
            if d["apiVersion"].startswith("rbac.authorization.k8s.io/")}
    assert not rbac
    assert {r["metadata"]["name"] for r in of_kind(rendered["defaults"], "ClusterRole")} >= {
        "fs-forescale-edit", "fs-forescale-view"}


def test_namespaced_rbac(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["namespaced-rbac"]
    roles = [r for r in of_kind(docs, "Role") if r not in lease_roles(docs)]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["search", "shop"]
    bindings = [b for b in of_kind(docs, "RoleBinding")
                if not b["metadata"]["name"].endswith("-leases")]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["search", "shop"]
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "fs-forescale",
                                        "namespace": "forescale"}]
    # The ClusterRole keeps only cluster-scoped reads; everything namespaced is in the Roles.
    (cluster_role,) = operator_roles(docs, "ClusterRole")
    cluster = grants(cluster_role["rules"])
    assert {resource for _, resource, _ in cluster} == {"customresourcedefinitions",
                                                        "namespaces"}
    assert {verb for _, _, verb in cluster} == {"get", "list", "watch"}
    # Same total grants as cluster-wide mode, just split by scope.
    assert rendered_grants(docs) == rendered_grants(rendered["defaults"])
    for role in roles:
        assert grants(role["rules"]) == rendered_grants(docs) - cluster - LEASES


def test_namespaced_peering_uses_kopfpeerings(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["peering-namespaced"]
    peerings = of_kind(docs, "KopfPeering")
    assert [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in peerings] == [
        ("shop", "forescale")]
    assert not of_kind(docs, "ClusterKopfPeering")
    assert ("kopf.dev", "kopfpeerings", "patch") in rendered_grants(docs)
    assert ("kopf.dev", "clusterkopfpeerings", "patch") not in rendered_grants(docs)
    (peering,) = of_kind(rendered["peering-one-replica"], "ClusterKopfPeering")
    assert peering["metadata"]["name"] == "forescale"


# --- CRDs ------------------------------------------------------------------------------


def source_crd() -> dict[str, Any]:
    crd: dict[str, Any] = yaml.safe_load(CRD_FILE.read_text())
    return crd


def test_chart_crd_equals_crds_folder(rendered: dict[str, list[dict[str, Any]]]) -> None:
    crds = {c["metadata"]["name"]: c for c in of_kind(rendered["defaults"],
                                                      "CustomResourceDefinition")}
    chart_crd = copy.deepcopy(crds["scalingpolicies.forescale.dev"])
    # Uninstalling the release must not delete every ScalingPolicy with the CRD.
    assert chart_crd["metadata"]["annotations"].pop(KEEP[0]) == KEEP[1]
    if not chart_crd["metadata"]["annotations"]:
        del chart_crd["metadata"]["annotations"]
    assert chart_crd == source_crd()


def test_generated_crd_template_is_up_to_date() -> None:
    result = subprocess.run([sys.executable, str(SYNC_SCRIPT), "--check"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, (
        f"{result.stderr}run `python scripts/sync-chart-crds.py` and commit the result")


def test_crds_switch(rendered: dict[str, list[dict[str, Any]]]) -> None:
    assert not of_kind(rendered["no-crds"], "CustomResourceDefinition")
    # Never kopf's peering CRDs: they are shared by every kopf operator in the cluster (Helm
    # would refuse to adopt them), and a release cannot create a CRD and its objects.
    for case in ("peering-one-replica", "peering-namespaced"):
        (crd,) = of_kind(rendered[case], "CustomResourceDefinition")
        assert crd["metadata"]["name"] == "scalingpolicies.forescale.dev"
        assert crd["metadata"]["annotations"][KEEP[0]] == KEEP[1]


@pytest.mark.parametrize("values, served, kind", [
    ({"replicaCount": 1, "peering": {"enabled": True}}, (), "ClusterKopfPeering"),
    ({"replicaCount": 1, "peering": {"enabled": True}}, ("kopf.dev/v1/KopfPeering",),
     "ClusterKopfPeering"),
    ({"replicaCount": 1, "peering": {"enabled": True}, "watchNamespaces": ["shop"]},
     ("kopf.dev/v1/ClusterKopfPeering",), "KopfPeering"),
], ids=["no-crds", "namespaced-crd-only", "cluster-crd-only"])
def test_peering_without_kopfs_crds_fails_saying_what_to_install(
        chart: helm_python.Chart, values: dict[str, Any], served: tuple[str, ...],
        kind: str) -> None:
    """Without the CRD of the peering object it creates, the chart fails with one line that
    says what to install, not Helm's "resource mapping not found" halfway through."""
    with pytest.raises(helm_python.HelmError) as caught:
        render(chart, values, served)
    message = str(caught.value)
    assert f"peering.enabled needs kopf's peering CRDs (kopf.dev/v1 {kind})" in message
    assert "kubectl apply -f https://github.com/nolar/kopf/raw/main/peering.yaml" in message
    # Served, the same values render the peering object.
    (peering,) = of_kind(render(chart, values, (f"kopf.dev/v1/{kind}",)), kind)
    assert peering["metadata"]["name"] == "forescale"


def test_helm_template_api_versions_renders_peering() -> None:
    """The real helm, as docs/helm.md has users render offline: --api-versions stands for the
    installed CRDs."""
    helm = controlplane.require_binaries().helm
    args = [str(helm), "template", "fs", str(CHART), "--set", "replicaCount=1",
            "--set", "peering.enabled=true"]
    refused = subprocess.run(args, capture_output=True, text=True, check=False, timeout=60)
    assert refused.returncode != 0
    assert "kubectl apply -f https://github.com/nolar/kopf/raw/main/peering.yaml" in \
        refused.stderr
    served = subprocess.run([*args, "--api-versions", "kopf.dev/v1/ClusterKopfPeering"],
                            capture_output=True, text=True, check=True, timeout=60)
    docs = [d for d in yaml.safe_load_all(served.stdout) if d]
    assert [d["metadata"]["name"] for d in of_kind(docs, "ClusterKopfPeering")] == ["forescale"]
    assert [d["metadata"]["name"] for d in of_kind(docs, "CustomResourceDefinition")] == [
        "scalingpolicies.forescale.dev"]


# --- example ScalingPolicies against the CRD --------------------------------------------


def openapi_schema() -> dict[str, Any]:
    (version,) = source_crd()["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def crd_validator() -> jsonschema.Draft4Validator:
    # OpenAPI v3.0 (the CRD's dialect) has Draft 4's boolean exclusiveMinimum/Maximum, so a
    # Draft 4 validator reads the schema as the API server does; x-kubernetes-* keys are
    # unknown keywords and ignored (the CEL rule is checked separately below).
    return jsonschema.Draft4Validator(openapi_schema())


def cel_min_le_max(manifest: dict[str, Any]) -> bool:
    """The intent of the CRD's CEL rule, in Python: min <= max when both are given."""
    (rule,) = openapi_schema()["properties"]["spec"]["x-kubernetes-validations"]
    assert rule["rule"] == ("!has(self.minReplicas) || !has(self.maxReplicas) || "
                            "self.minReplicas <= self.maxReplicas")
    spec = manifest["spec"]
    return ("minReplicas" not in spec or "maxReplicas" not in spec
            or spec["minReplicas"] <= spec["maxReplicas"])


def load_example(path: Path) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert len(docs) == 1, f"{path.name}: one ScalingPolicy per example file"
    doc: dict[str, Any] = docs[0]
    return doc


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_a_valid_scaling_policy(path: Path) -> None:
    manifest = load_example(path)
    assert manifest["apiVersion"] == "forescale.dev/v1alpha1"
    assert manifest["kind"] == "ScalingPolicy"
    errors = sorted(crd_validator().iter_errors(manifest), key=str)
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)
    assert cel_min_le_max(manifest)
    policy_spec_from_manifest(manifest)


def minimal_manifest(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "forescale.dev/v1alpha1", "kind": "ScalingPolicy",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                        "name": "web"},
                     "metrics": {"query": "sum(rate(http_requests_total[2m]))"},
                     "serviceRatePerReplica": 10, **spec}}


def test_min_greater_than_max_is_caught_by_the_cel_rule_not_the_schema() -> None:
    bad = minimal_manifest(minReplicas=5, maxReplicas=3)
    # The structural schema alone accepts it: the cross-field rule is what rejects it...
    assert not list(crd_validator().iter_errors(bad))
    assert not cel_min_le_max(bad)
    # ...and the core agrees, naming the fields.
    with pytest.raises(InvalidInputError, match="minReplicas"):
        policy_spec_from_manifest(bad)
    assert cel_min_le_max(minimal_manifest(minReplicas=3, maxReplicas=3))
    assert cel_min_le_max(minimal_manifest(minReplicas=7))


@pytest.mark.parametrize("spec", [
    {"serviceRatePerReplica": 0},           # exclusiveMinimum: the boolean OpenAPI v3.0 form
    {"mode": "Autopilot"},
    {"forecast": {"models": ["prophet"]}},
    {"slo": {"percentile": 1}},
    {"unknownField": 1},
], ids=repr)
def test_schema_rejects_bad_specs(spec: dict[str, Any]) -> None:
    bad = minimal_manifest(**spec)
    schema = openapi_schema()
    # The API server prunes unknown fields in structural schemas; model that as rejection.
    unknown = set(bad["spec"]) - set(schema["properties"]["spec"]["properties"])
    assert unknown or list(crd_validator().iter_errors(bad))


# --- CRD defaults equal the core's ------------------------------------------------------


def apply_defaults(value: Any, schema: dict[str, Any]) -> Any:
    """Structural defaulting as the API server does it: a missing property with a default
    gets it, then defaulting recurses into what is present (including the defaults)."""
    if schema.get("type") == "object" and isinstance(value, dict):
        out = dict(value)
        for name, sub in schema.get("properties", {}).items():
            if name not in out and "default" in sub:
                out[name] = copy.deepcopy(sub["default"])
            if name in out:
                out[name] = apply_defaults(out[name], sub)
        return out
    if schema.get("type") == "array" and isinstance(value, list) and "items" in schema:
        return [apply_defaults(item, schema["items"]) for item in value]
    return value


def test_crd_defaults_equal_the_core_defaults() -> None:
    manifest = minimal_manifest()
    defaulted = copy.deepcopy(manifest)
    defaulted["spec"] = apply_defaults(manifest["spec"],
                                       openapi_schema()["properties"]["spec"])
    # Defaulting did fill the sections the core reads...
    assert {"slo", "forecast", "behavior", "chaos", "minReplicas", "maxReplicas",
            "leadTimeSeconds", "decisionPeriodSeconds"} <= set(defaulted["spec"])
    # ...and a policy the API server defaulted is the same policy as one the core defaulted.
    assert policy_spec_from_manifest(defaulted) == policy_spec_from_manifest(manifest)


# --- the operator image ----------------------------------------------------------------


DOCKERFILE = ROOT / "operator" / "Dockerfile"


def test_dockerfile_matches_the_package_pins_and_the_chart() -> None:
    text = DOCKERFILE.read_text()
    lines = [line.strip() for line in text.splitlines()]
    # torch comes from constraints.txt (torch==2.13.0), by default from the CPU-only index;
    # the dependencies are pyproject's, installed at the pinned versions.
    assert "torch==2.13.0" in (ROOT / "constraints.txt").read_text().splitlines()
    assert "['project']['dependencies']" in text
    assert "pip install $from -c constraints.txt -r requirements.txt; \\" in lines
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in lines
    assert 'else from="--extra-index-url $TORCH_INDEX_URL"; fi; \\' in lines
    assert "ARG TORCH_BUILD=cpu" in lines  # the published build is checked to be the CPU one
    # No second, drifting pin: any version the file names is constraints.txt's.
    assert set(re.findall(r"torch==[\d.]+\d", text)) <= {"torch==2.13.0"}
    assert lines.count("FROM ${PYTHON_IMAGE} AS requirements") == 1
    assert lines.count("FROM ${PYTHON_IMAGE}") == 1
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in lines
    # Non-root, with the id the chart's securityContext runs as.
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    uid = values["securityContext"]["runAsUser"]
    assert f"USER {uid}:{uid}" in lines
    assert 'ENTRYPOINT ["forescale", "run"]' in lines
    assert "COPY models/ /models/" in lines
    assert "ENV HOME=/tmp \\" in lines and "TMPDIR=/tmp \\" in lines
    # The chart's default image is this one, tagged with the chart's appVersion.
    chart_meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert values["image"]["repository"] == "ghcr.io/forescale/forescale"
    assert values["image"]["tag"] == ""  # empty: appVersion
    assert f'forescale/forescale:{chart_meta["appVersion"]}' in text
    assert values["models"]["mountPath"] == "/models"
