"""The chart's Grafana dashboard and PrometheusRule: structure, and every PromQL expression
checked by the real ``promtool`` (the live evaluation against a Prometheus scraping a
running operator is tests/integration/test_dashboard_queries.py)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.test_chart import CHART, chart, of_kind, render  # noqa: F401 (fixture)
from tests.support.prometheus import prometheus_binaries

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = CHART / "dashboards" / "forescale.json"
RUNBOOK = REPO / "docs" / "runbook.md"
VALUES = {"grafanaDashboard": {"enabled": True},
          "prometheusRule": {"enabled": True, "labels": {"release": "kps"}}}
#: What Grafana substitutes for the dashboard's variables, for checking and evaluating.
VARIABLES = {"$namespace": ".*", "$policy": ".*", "$lead": "2m",
             "$__rate_interval": "1m"}
ALERTS = {"ForescaleMetricsUnavailable", "ForescaleForecastDegraded",
          "ForescaleScalingBlocked", "ForescaleSLOAtRisk"}


def dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expression with Grafana's variables substituted) of every target."""
    out = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for name, value in VARIABLES.items():
                expr = expr.replace(name, value)
            assert "$" not in expr, f"unsubstituted variable in {target['expr']!r}"
            out.append((panel["title"], expr))
    return out


def alert_rules(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    (rule,) = of_kind(docs, "PrometheusRule")
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def promtool_check(path: Path) -> subprocess.CompletedProcess[str]:
    _, promtool = prometheus_binaries()
    return subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                          text=True, check=False)


@pytest.fixture(scope="module")
def docs(chart: Any) -> list[dict[str, Any]]:  # noqa: F811
    return render(chart, VALUES)


def test_dashboard_configmap_for_the_sidecar(docs: list[dict[str, Any]],
                                             chart: Any) -> None:  # noqa: F811
    (cm,) = [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith(
        "-dashboard")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["forescale.json"]) == json.loads(DASHBOARD.read_text())
    assert not [d for d in of_kind(render(chart, {}), "ConfigMap")
                if d["metadata"]["name"].endswith("-dashboard")]


def test_dashboard_shows_what_the_issue_asks() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = " ".join(e for _, e in dashboard_queries(dashboard))
    for metric in ("forescale_observed_arrival_rate", "forescale_forecast_mean_arrival_rate",
                   "forescale_forecast_lower_arrival_rate",
                   "forescale_forecast_upper_arrival_rate", "forescale_desired_replicas",
                   "forescale_current_replicas", "forescale_serving_model",
                   "forescale_decision_seconds_bucket", "forescale_errors_total",
                   "forescale_sized_for"):
        assert metric in exprs, metric
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_alerts(docs: list[dict[str, Any]], chart: Any) -> None:  # noqa: F811
    rules = alert_rules(docs)
    assert {r["alert"] for r in rules} == ALERTS
    (rule,) = of_kind(docs, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kps"
    # GitHub's heading anchors: lower case, spaces to dashes, punctuation dropped.
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
               for h in re.findall(r"^#+ (.*)$", RUNBOOK.read_text(), re.MULTILINE)}
    for r in rules:
        assert r["labels"]["severity"] in ("info", "warning", "critical")
        anchor = r["annotations"]["runbook_url"].rsplit("#", 1)[1]
        assert anchor in anchors, f"{r['alert']}: no section #{anchor} in the runbook"
        assert "{{ $labels.namespace }}" in r["annotations"]["summary"]
    assert not of_kind(render(chart, {}), "PrometheusRule")


def test_promtool_accepts_the_alert_rules(docs: list[dict[str, Any]], tmp_path: Path) -> None:
    (rule,) = of_kind(docs, "PrometheusRule")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    done = promtool_check(path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in done.stdout


def test_scaling_blocked_alerts_on_faults_not_on_what_the_user_chose(
        docs: list[dict[str, Any]], tmp_path: Path) -> None:
    """promtool's rule unit test: ScalingActive=False for an invalid spec or a lock held
    elsewhere fires after its ``for``; Observe mode and a pause annotation, the same status
    on purpose, never do."""
    (rule,) = of_kind(docs, "PrometheusRule")
    (path := tmp_path / "rules.yaml").write_text(
        yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    blocked = {r["alert"]: r for r in alert_rules(docs)}["ForescaleScalingBlocked"]
    reasons = {"broken": "InvalidSpec", "locked": "TargetLocked", "watched": "ObserveMode",
               "paused": "PausedByAnnotation", "zero": "ScalingDisabled"}
    series = []
    for policy, reason in reasons.items():
        labels = f'namespace="ns", policy="{policy}", type="ScalingActive"'
        series += [{"series": f'forescale_condition{{{labels}, status="False"}}',
                    "values": "1x40"},
                   {"series": f'forescale_condition_reason{{{labels}, reason="{reason}"}}',
                    "values": "1x40"}]

    def expected(policy: str) -> dict[str, Any]:
        annotations = {k: v.replace("{{ $labels.namespace }}", "ns").replace(
            "{{ $labels.policy }}", policy) for k, v in blocked["annotations"].items()}
        return {"exp_labels": {**blocked["labels"], "namespace": "ns", "policy": policy,
                               "type": "ScalingActive", "status": "False"},
                "exp_annotations": annotations}

    (tests := tmp_path / "tests.yaml").write_text(yaml.safe_dump({
        "rule_files": [str(path)], "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": [
            {"eval_time": "5m", "alertname": "ForescaleScalingBlocked", "exp_alerts": []},
            {"eval_time": "30m", "alertname": "ForescaleScalingBlocked",
             "exp_alerts": [expected("broken"), expected("locked")]}]}]}))
    _, promtool = prometheus_binaries()
    done = subprocess.run([promtool, "test", "rules", str(tests)], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_metrics_unavailable_does_not_alert_for_a_target_at_zero(
        docs: list[dict[str, Any]], tmp_path: Path) -> None:
    """A target scaled to zero has no pods to count its requests: MetricsAvailable=False
    there is the user's choice (ScalingDisabled), not a fault."""
    (rule,) = of_kind(docs, "PrometheusRule")
    (path := tmp_path / "rules.yaml").write_text(
        yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    alert = {r["alert"]: r for r in alert_rules(docs)}["ForescaleMetricsUnavailable"]
    series = []
    for policy, active in (("down", "ScalingEnabled"), ("zero", "ScalingDisabled")):
        series += [
            {"series": f'forescale_condition{{namespace="ns", policy="{policy}", '
                       f'type="MetricsAvailable", status="False"}}', "values": "1x40"},
            {"series": f'forescale_condition_reason{{namespace="ns", policy="{policy}", '
                       f'type="ScalingActive", reason="{active}"}}', "values": "1x40"}]
    annotations = {k: v.replace("{{ $labels.namespace }}", "ns").replace(
        "{{ $labels.policy }}", "down") for k, v in alert["annotations"].items()}
    (tests := tmp_path / "tests.yaml").write_text(yaml.safe_dump({
        "rule_files": [str(path)], "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": [
            {"eval_time": "35m", "alertname": "ForescaleMetricsUnavailable",
             "exp_alerts": [{"exp_labels": {**alert["labels"], "namespace": "ns",
                                            "policy": "down", "type": "MetricsAvailable",
                                            "status": "False"},
                             "exp_annotations": annotations}]}]}]}))
    _, promtool = prometheus_binaries()
    done = subprocess.run([promtool, "test", "rules", str(tests)], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_accepts_every_dashboard_query(tmp_path: Path) -> None:
    queries = dashboard_queries(json.loads(DASHBOARD.read_text()))
    path = tmp_path / "dashboard.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query{i}", "expr": expr} for i, (_, expr) in
        enumerate(queries)]}]}))
    done = promtool_check(path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(queries)} rules found" in done.stdout


def test_promtool_catches_a_broken_expression(tmp_path: Path) -> None:
    """The check above can fail: a broken expression is refused."""
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [
        {"record": "x:y", "expr": "sum(rate(forescale_errors_total[1m])"}]}]}))
    assert promtool_check(path).returncode != 0


def exported(metrics: Any) -> list[dict[str, str]]:
    """promtool input series: every per-policy sample the operator's registry exports, as a
    constant — the names and labels the code really writes, not a copy of them."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    series = []
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        for s in family.samples:
            if "policy" in s.labels:
                labels = ", ".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                series.append({"series": f"{s.name}{{{labels}}}", "values": f"{s.value}x60"})
    return series


def test_degraded_and_slo_alerts_fire_on_faults_not_on_what_the_user_chose(
        docs: list[dict[str, Any]], tmp_path: Path) -> None:
    """promtool's rule unit test on what OperatorMetrics exports: the moving average serving
    as a fallback is ForecastDegraded, serving as the only model chosen
    (examples/scalingpolicy-moving-average.yaml) is not; sizing above maxReplicas is
    SLOAtRisk, above the replicas of a policy that observes or is paused is not (in Observe
    mode nothing moves the replicas the rate limits start from, so it fired for ever)."""
    from forescale.controller.metrics import OperatorMetrics

    metrics = OperatorMetrics()
    cases = {  # policy: (serving, ModelReady, ScalingActive reason, recommended, desired)
        "fallback": ("ma", ("False", "HistoryTooShort"), "ScalingEnabled", 4, 4),
        # No stage served: the worst forecast state was silent (every model's series 0).
        "failed": (None, ("False", "AllForecastersFailed"), "ScalingEnabled", 4, 4),
        "chosen": ("ma", ("True", "ModelServing"), "ScalingEnabled", 4, 4),
        "capped": ("arima", ("True", "ModelServing"), "ScalingEnabled", 14, 3),
        "watched": ("arima", ("True", "ModelServing"), "ObserveMode", 14, 8),
        "paused": ("arima", ("True", "ModelServing"), "PausedByAnnotation", 14, 2),
    }
    for policy, (model, ready, active, recommended, desired) in cases.items():
        metrics.set_serving("ns", policy, model)
        metrics.decision.recommended.labels("ns", policy).set(recommended)
        metrics.desired.labels("ns", policy).set(desired)
        metrics.decision.observe_conditions("ns", policy, [
            {"type": "ModelReady", "status": ready[0], "reason": ready[1]},
            {"type": "ScalingActive", "status": "True" if active == "ScalingEnabled"
             else "False", "reason": active}])
    (rule,) = of_kind(docs, "PrometheusRule")
    (path := tmp_path / "rules.yaml").write_text(
        yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    rules = {r["alert"]: r for r in alert_rules(docs)}

    def expected(alert: str, policy: str, **labels: str) -> dict[str, Any]:
        annotations = {k: v.replace("{{ $labels.namespace }}", "ns").replace(
            "{{ $labels.policy }}", policy).replace("{{ $value }}", "14").replace(
            "{{ $labels.model }}", labels.get("model", ""))
            for k, v in rules[alert]["annotations"].items()}
        return {"exp_labels": {**rules[alert]["labels"], "namespace": "ns", "policy": policy,
                               **labels},
                "exp_annotations": annotations}

    (tests := tmp_path / "tests.yaml").write_text(yaml.safe_dump({
        "rule_files": [str(path)], "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": exported(metrics), "alert_rule_test": [
            {"eval_time": "45m", "alertname": "ForescaleForecastDegraded",
             "exp_alerts": [expected("ForescaleForecastDegraded", "failed", model="none"),
                            expected("ForescaleForecastDegraded", "fallback", model="ma")]},
            {"eval_time": "45m", "alertname": "ForescaleSLOAtRisk",
             "exp_alerts": [expected("ForescaleSLOAtRisk", "capped")]}]}]}))
    _, promtool = prometheus_binaries()
    done = subprocess.run([promtool, "test", "rules", str(tests)], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
