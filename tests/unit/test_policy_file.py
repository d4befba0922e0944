"""ScalingPolicy manifests → PolicySpec: conversion, defaults, and errors that name the field."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from forescale.backtest.world import ProtocolParameters, world_policy_spec
from forescale.core.errors import InvalidInputError
from forescale.core.spec import Chaos, PolicySpec, RateLimit
from forescale.policy import SPEC_SCHEMA, load_policy_file, policy_spec_from_manifest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "scalingpolicy-nasa.yaml"
CRD = ROOT / "crds" / "scalingpolicies.forescale.dev.yaml"


def minimal(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "forescale.dev/v1alpha1",
        "kind": "ScalingPolicy",
        "metadata": {"name": "web"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "metrics": {"query": "sum(rate(http_requests_total[2m]))"},
            "serviceRatePerReplica": 10,
            **spec,
        },
    }


def error_of(manifest: dict[str, Any]) -> str:
    with pytest.raises(InvalidInputError) as info:
        policy_spec_from_manifest(manifest)
    return str(info.value)


def test_omitted_fields_take_the_core_defaults() -> None:
    assert policy_spec_from_manifest(minimal()) == PolicySpec(service_rate_per_replica=10)


def test_a_required_field_with_a_default_may_be_omitted() -> None:
    """The API server fills defaults in before it validates: a scaleTargetRef of only a
    name is a Deployment of apps/v1 there, and so it is here."""
    manifest = minimal()
    manifest["spec"]["scaleTargetRef"] = {"name": "web"}
    assert policy_spec_from_manifest(manifest) == PolicySpec(service_rate_per_replica=10)


def test_the_example_is_the_benchmark_world() -> None:
    spec = load_policy_file(EXAMPLE)
    assert spec.forecast.lstm_model == "nasa-jul1995"
    assert spec.chaos.scenarios[0].capacity_fraction_lost == 0.34
    # Apart from the model name and the (disabled) chaos scenario it is exactly the spec
    # the backtest builds for the protocol's world.
    plain = replace(spec, forecast=replace(spec.forecast, lstm_model=None), chaos=Chaos())
    assert plain == world_policy_spec(ProtocolParameters(), 60.0)


def test_every_field_converts() -> None:
    manifest = yaml.safe_load(EXAMPLE.read_text())
    spec_in = manifest["spec"]
    spec_in["costs"] = {"perReplicaHour": 0.05, "perViolation": 0.0001}
    spec_in["chaos"]["rule"] = "survive"
    spec_in["behavior"]["scaleUp"]["policies"] = [{"type": "Pods", "value": 2,
                                                   "periodSeconds": 60}]
    spec_in["behavior"]["scaleUp"]["minStep"] = 0.2
    spec_in["behavior"]["scaleUp"]["lookaheadPeriods"] = 0
    spec_in["forecast"]["arima"]["order"] = [1, 0, 1]
    spec_in["forecast"]["movingAverage"] = {"rule": "flat", "window": 30}
    spec_in["forecast"]["recurringTimeZone"] = "Europe/Berlin"
    spec_in["forecast"]["recurringQuorum"] = 0.4
    spec = policy_spec_from_manifest(manifest, models_dir=Path("/models"))
    assert spec.mode == "cost" and spec.costs is not None
    assert spec.costs.per_violation == 0.0001
    assert spec.chaos.rule == "survive" and spec.chaos.probability_floor == 0.01
    assert spec.behavior.scale_up == (RateLimit("Pods", 2, 60),)
    assert spec.behavior.scale_up_min_step == 0.2
    assert spec.behavior.scale_up_lookahead_periods == 0
    assert spec.behavior.scale_down_stabilization_seconds == 300
    assert spec.forecast.arima_order == (1, 0, 1)
    assert (spec.forecast.moving_average_rule, spec.forecast.moving_average_window) == (
        "flat", 30)
    assert spec.forecast.lstm_model == "/models/nasa-jul1995"
    assert spec.forecast.recurring_time_zone == "Europe/Berlin"
    assert spec.forecast.recurring_quorum == 0.4
    assert spec.max_replicas == 100_000


@pytest.mark.parametrize(("change", "message"), [
    ({"slo": {"percentile": 1.5}}, "spec.slo.percentile must be in (0, 1), got 1.5"),
    ({"slo": {"waitSeconds": "50ms"}}, "spec.slo.waitSeconds must be a finite number, "
                                       "got '50ms'"),
    ({"slo": {"p95": 0.05}}, "spec.slo.p95 is not a known field (known: waitSeconds, "
                             "percentile, maxUtilisation, violationBudget)"),
    ({"minReplicas": 5, "maxReplicas": 3}, "spec.minReplicas (5) must not exceed "
                                           "maxReplicas (3)"),
    ({"maxReplicas": 1.5}, "spec.maxReplicas must be an integer, got 1.5"),
    ({"maxReplicas": True}, "spec.maxReplicas must be an integer, got True"),
    ({"maxReplicas": 200_000}, "spec.maxReplicas must be in [1, 100000], got 200000"),
    ({"mode": "scale"}, "spec.mode must be one of Scale, Observe, got 'scale'"),
    ({"forecast": {"models": ["lstm", "prophet"]}},
     "spec.forecast.models[1] must be one of lstm, arima, ma, got 'prophet'"),
    ({"forecast": {"models": ["ma", "ma"]}}, "spec.forecast.models has a duplicate"),
    ({"forecast": {"movingAverage": {"rule": "median"}}},
     "spec.forecast.movingAverage.rule must be one of exponential, flat, got 'median'"),
    ({"forecast": {"lstm": {"modelRef": "../etc"}}}, "spec.forecast.lstm.modelRef must match"),
    ({"decisionPeriodSeconds": 1}, "spec.decisionPeriodSeconds must be in [5, 86400], got 1"),
    ({"behavior": {"scaleUp": {"policies": [{"type": "Pods", "value": 4}]}}},
     "spec.behavior.scaleUp.policies[0].periodSeconds is required"),
    # Truncated to 0, a 0.5 held every scale-up for ever.
    ({"behavior": {"scaleUp": {"policies": [{"type": "Pods", "value": 0.5,
                                             "periodSeconds": 60}]}}},
     "spec.behavior.scaleUp.policies[0]: Pods rate limit value must be a whole number of "
     "pods, got 0.5"),
    ({"behavior": {"scaleUp": {"minStep": 1.5}}},
     "spec.behavior.scaleUp.minStep must be in [0, 1], got 1.5"),
    ({"behavior": {"scaleUp": {"lookaheadPeriods": 11}}},
     "spec.behavior.scaleUp.lookaheadPeriods must be in [0, 10], got 11"),
    ({"behavior": {"scaleUp": {"lookaheadPeriods": 1.5}}},
     "spec.behavior.scaleUp.lookaheadPeriods must be an integer, got 1.5"),
    ({"costs": {"perReplicaHour": 1}}, "spec.costs.perViolation is required"),
    ({"chaos": {"scenarios": [{"name": "az", "probability": 0.1,
                               "capacityFractionLost": 1}]}},
     "spec.chaos.scenarios[0].capacityFractionLost must be in (0, 1), got 1"),
    ({"metrics": {"query": "up", "prometheusUrl": "prom:9090"}},
     "spec.metrics.prometheusUrl must be an http(s) URL without a query string, fragment or "
     "spaces, got 'prom:9090'"),
    # A trailing '#' or '?' once cut /api/v1/query_range off: the whole path was the user's.
    ({"metrics": {"query": "up", "prometheusUrl": "http://10.0.0.1/secret#"}},
     "spec.metrics.prometheusUrl must be an http(s) URL without a query string"),
    ({"metrics": {"query": "up", "prometheusUrl": "http://10.0.0.1/x?a="}},
     "spec.metrics.prometheusUrl must be an http(s) URL without a query string"),
    # "../" in a target name once read another namespace's /scale (urllib3 collapses dots).
    ({"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                         "name": "../../victim/deployments/db"}},
     "spec.scaleTargetRef.name must be a DNS-1123 name (lower-case letters, digits, '-' and "
     "'.'), got '../../victim/deployments/db'"),
    ({"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "deployments/x", "name": "web"}},
     "spec.scaleTargetRef.kind must be a Kubernetes kind such as Deployment"),
    ({"scaleTargetRef": {"apiVersion": "../v1", "kind": "Deployment", "name": "web"}},
     "spec.scaleTargetRef.apiVersion must match"),
    # Python's "$" also matches before a final newline; the API server's (Go) does not.
    ({"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web\n"}},
     "spec.scaleTargetRef.name must be a DNS-1123 name"),
    ({"metrics": {"query": "up", "prometheusUrl": "http://prom:9090\n"}},
     "spec.metrics.prometheusUrl must be an http(s) URL"),
    # The value that sent sizing into an endless search; the CRD bounds it now.
    ({"serviceRatePerReplica": 1e-30},
     "spec.serviceRatePerReplica must be in [0.001, 1000000000], got 1e-30"),
    ({"slo": {"waitSeconds": 1e300}}, "spec.slo.waitSeconds must be in [0, 3600], got 1e+300"),
    ({"costs": {"perReplicaHour": 1, "perViolation": 1e12}},
     "spec.costs.perViolation must be in [0, 1000000000]"),
    ({"metrics": {"query": "x" * 5000}}, "spec.metrics.query must be at most 4096 characters"),
    # A YAML integer no float can hold: math.isfinite raised OverflowError (a traceback).
    ({"serviceRatePerReplica": 10**400},
     "spec.serviceRatePerReplica must be a finite number, got 1000"),
    ({"forecast": {"recurringTimeZone": "Europe/Berlín"}},
     "spec.forecast.recurringTimeZone must match"),
    ({"forecast": {"recurringQuorum": 0}},
     "spec.forecast.recurringQuorum must be in (0, 1], got 0"),
    ({"forecast": {"recurringQuorum": 1.5}},
     "spec.forecast.recurringQuorum must be in (0, 1], got 1.5"),
    ({"forecast": {"recurringTimeZone": "Mars/Olympus"}},
     "spec.forecast.recurringTimeZone: unknown time zone 'Mars/Olympus'"),
    # An unknown key with a newline in it broke the one-line message.
    ({"slo": {"wait\nSeconds": 1}}, "spec.slo.'wait\\nSeconds' is not a known field"),
])
def test_errors_name_the_field(change: dict[str, Any], message: str) -> None:
    assert error_of(minimal(**change)).startswith(message)


def test_required_and_top_level_errors() -> None:
    manifest = minimal()
    del manifest["spec"]["serviceRatePerReplica"]
    assert error_of(manifest) == "spec.serviceRatePerReplica is required"
    wrong = minimal()
    wrong["apiVersion"] = "forescale.dev/v1"
    assert error_of(wrong) == "apiVersion must be forescale.dev/v1alpha1, got 'forescale.dev/v1'"
    wrong = minimal()
    wrong["kind"] = "Deployment"
    assert error_of(wrong) == "kind must be ScalingPolicy, got 'Deployment'"
    wrong = minimal()
    wrong["specs"] = {}
    assert error_of(wrong).startswith("specs is not a known field of a ScalingPolicy")


def test_file_errors_are_one_line_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec: [unclosed\n")
    with pytest.raises(InvalidInputError, match=r"^policy file .*bad.yaml: not valid YAML"):
        load_policy_file(bad)
    two = tmp_path / "two.yaml"
    two.write_text(yaml.safe_dump(minimal()) + "---\n" + yaml.safe_dump(minimal()))
    with pytest.raises(InvalidInputError, match="expected one ScalingPolicy document, found 2"):
        load_policy_file(two)
    with pytest.raises(InvalidInputError, match="no such file"):
        load_policy_file(tmp_path / "missing.yaml")
    high = tmp_path / "high.yaml"
    high.write_text(yaml.safe_dump(minimal(slo={"percentile": 1.5})))
    with pytest.raises(InvalidInputError) as info:
        load_policy_file(high)
    assert str(info.value) == (f"policy file {high}: spec.slo.percentile must be in (0, 1), "
                               f"got 1.5")


def test_the_packaged_schema_is_the_crds() -> None:
    crd = yaml.safe_load(CRD.read_text())
    (version,) = crd["spec"]["versions"]
    spec_schema = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec_schema == SPEC_SCHEMA


def _fields(schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every field of a structural schema with its path (``spec.slo.waitSeconds``,
    ``spec.schedules[]``), the schema itself first."""
    yield path, schema
    for key, sub in schema.get("properties", {}).items():
        yield from _fields(sub, f"{path}.{key}")
    if "items" in schema:
        yield from _fields(schema["items"], f"{path}[]")


def test_every_number_in_the_schema_is_bounded() -> None:
    """The CRD bounds every numeric field on both sides (issue 12): nothing reaches the core
    that could make it compute for ever or overflow."""
    unbounded = [path for path, schema in _fields(SPEC_SCHEMA, "spec")
                 if schema.get("type") in ("number", "integer")
                 and ("minimum" not in schema or "maximum" not in schema)]
    assert unbounded == []


def test_every_string_in_the_schema_is_bounded() -> None:
    unbounded = [path for path, schema in _fields(SPEC_SCHEMA, "spec")
                 if schema.get("type") == "string" and "maxLength" not in schema
                 and "enum" not in schema]
    assert unbounded == []


BILLION_LAUGHS = "\n".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]"
       for i in range(8)])


@pytest.mark.parametrize(("text", "message"), [
    (BILLION_LAUGHS, "YAML aliases (*name) are not accepted at line 2"),
    ("[" * 5000 + "]" * 5000, "nested more than 32 levels deep"),
    ("{a: " * 5000 + "1" + "}" * 5000, "nested more than 32 levels deep"),
    ("x: " + "y" * (1 << 20), "larger than 64 KiB"),
    ("\n".join(["- x"] * 15_000), "more than 10,000 YAML nodes"),
    ("spec: [unclosed\n", "not valid YAML at line 2"),
])
def test_hostile_files_are_refused_quickly_in_one_line(tmp_path: Path, text: str,
                                                       message: str) -> None:
    import time

    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    began = time.perf_counter()
    with pytest.raises(InvalidInputError) as info:
        load_policy_file(bad)
    assert time.perf_counter() - began < 1.0
    assert str(info.value).startswith(f"policy file {bad}: {message}")
    assert "\n" not in str(info.value) and len(str(info.value)) < 400


DEPLOYMENT = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}}


def test_other_kinds_beside_the_policy_are_skipped(tmp_path: Path) -> None:
    """As validate does: a Deployment next to its policy once made "found 2"."""
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump_all([DEPLOYMENT, minimal(), None]))
    assert load_policy_file(path) == PolicySpec(service_rate_per_replica=10)


def test_numbers_in_exponent_form_are_numbers_as_kubectl_reads_them(tmp_path: Path) -> None:
    """YAML 1.1 (PyYAML) reads 1e3 as a string, YAML 1.2 (kubectl, the API server) as
    1000: a manifest the cluster accepts was refused here. A quoted "1e3" stays a string."""
    path = tmp_path / "p.yaml"
    text = yaml.safe_dump(minimal()).replace("serviceRatePerReplica: 10",
                                             "serviceRatePerReplica: 1e3")
    path.write_text(text)
    assert load_policy_file(path) == PolicySpec(service_rate_per_replica=1000.0)
    path.write_text(text.replace("1e3", "'1e3'"))
    with pytest.raises(InvalidInputError, match="must be a finite number, got '1e3'"):
        load_policy_file(path)


@pytest.mark.parametrize(("docs", "message"), [
    ([DEPLOYMENT], "no ScalingPolicy document (a file with one ScalingPolicy is expected)"),
    ([], "no ScalingPolicy document"),
    ([minimal(), DEPLOYMENT, minimal()],
     "expected one ScalingPolicy document, found 2 (documents 0, 2)"),
    ([DEPLOYMENT, {**minimal(), "kind": "Scalingpolicy"}],
     "document 1: kind must be ScalingPolicy, got 'Scalingpolicy'"),
    (["text"], "document 0: must be a mapping, got str"),
])
def test_the_one_policy_of_a_file(tmp_path: Path, docs: list[Any], message: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    with pytest.raises(InvalidInputError) as info:
        load_policy_file(path)
    assert str(info.value).startswith(f"policy file {path}: {message}")
