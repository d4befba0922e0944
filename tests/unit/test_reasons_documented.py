"""Every CamelCase reason the operator can put in a status (conditions, ``status.reasons``,
``status.skippedModels``) or an Event is documented in docs/operator.md, and every reason
that can make an alert fire has its row in the runbook's section for that alert."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "operator" / "forescale"
OPERATOR_DOC = (REPO / "docs" / "operator.md").read_text()
RUNBOOK = (REPO / "docs" / "runbook.md").read_text()
#: The modules whose string literals become reasons: the status and Events, the worker's
#: steps, the plan and its sizing, the chain and the artifacts, the Prometheus adapter.
SOURCES = ("controller/status.py", "controller/worker.py", "controller/overrides.py",
           "core/plan.py", "core/forecast/chain.py", "core/errors.py", "core/schedules.py",
           "core/guardrail.py", "core/sizing/replicas.py", "core/sizing/chaos.py",
           "adapters/prometheus.py")
#: CamelCase literals in those modules that are no reasons: condition types, class and
#: kind names, the chain's internal outcomes (never in a status: "Served" is the serving
#: stage, which skippedModels leaves out; "Forecasted" is a served chain's).
NOT_REASONS = {"Ready", "ScalingActive", "ModelReady", "ScalingLimited", "MetricsAvailable",
               "Paused", "Served", "Forecasted", "ChaosResult", "SizingResult",
               "CostBreakdown", "BearerToken", "ScalingPolicy", "ReplicaSet",
               "StatefulSet", "DeleteOptions"}
#: Only metrics counter causes (forescale_errors_total), documented with the metrics.
CAUSES = {"KubernetesApi", "TargetUnowned"}
#: The chaos buffer's reasons when it adds nothing: only a buffer that adds replicas is in
#: status.reasons.
NO_BUFFER = {"ChaosDisabled", "NoChaosScenarios", "BaseSurvivesScenarios"}
#: Two CamelCase words at least (one-word reasons such as the Resumed Event are not found).
CAMEL = re.compile(r'"([A-Z][a-z]+(?:[A-Z][a-z0-9]*)+)"')


def emitted() -> set[str]:
    found: set[str] = set()
    for name in SOURCES:
        found |= set(CAMEL.findall((PACKAGE / name).read_text()))
    return found - NOT_REASONS - CAUSES - NO_BUFFER


def table_reasons(condition: str, status: str) -> set[str]:
    """The reasons operator.md's Conditions table gives ``condition`` with ``status``."""
    out: set[str] = set()
    for line in OPERATOR_DOC.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 3 and cells[0] == condition and cells[1] == status:
            out |= set(re.findall(r"`([A-Z]\w+)`", cells[2]))
    return out


def section(title: str) -> str:
    start = RUNBOOK.index(f"## {title}\n")
    end = RUNBOOK.find("\n## ", start + 1)
    return RUNBOOK[start:end if end >= 0 else None]


def test_the_scan_finds_the_reasons() -> None:
    """The scan below is not vacuous: it sees reasons of every kind."""
    found = emitted()
    for reason in ("InvalidSpec", "ScaleFailed", "ArtifactCorrupt", "ScaleDownTolerance",
                   "MetricsStale", "PausedByAnnotation", "ModelReloaded", "SloSized",
                   "NotTried", "NoForecast", "ProportionalBuffer"):
        assert reason in found, reason


def test_every_reason_the_code_can_emit_is_documented() -> None:
    undocumented = sorted(r for r in emitted() if f"`{r}`" not in OPERATOR_DOC)
    assert undocumented == [], "not in docs/operator.md: " + ", ".join(undocumented)


def test_every_reason_in_the_conditions_table_can_be_emitted() -> None:
    found = emitted()
    for condition in ("Ready", "ScalingActive", "ModelReady", "ScalingLimited",
                      "MetricsAvailable", "Paused"):
        for status in ("True", "False", "Unknown", "True / False"):
            stale = table_reasons(condition, status) - found
            assert not stale, f"{condition} {status}: {sorted(stale)} are never emitted"


def test_every_reason_an_alert_fires_on_is_in_its_runbook_section() -> None:
    """ForescaleScalingBlocked fires on every ScalingActive=False reason, ForecastDegraded
    on the ModelReady=False ones: each needs what-to-do in its runbook section."""
    for title, reasons in (("Scaling blocked", table_reasons("ScalingActive", "False")),
                           ("Forecast degraded", table_reasons("ModelReady", "False")),
                           ("Metrics unavailable",
                            {r for r in table_reasons("MetricsAvailable", "True / False")
                             if r != "MetricsRead"})):
        assert reasons
        text = section(title)
        missing = sorted(r for r in reasons if f"`{r}`" not in text)
        assert missing == [], f"runbook section {title!r} lacks {missing}"
