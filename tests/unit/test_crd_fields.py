"""What ``kubectl`` shows of a ScalingPolicy: every field described (``kubectl explain`` is
never blank), the printer columns a platform team reads, scale to zero refused clearly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from forescale.cli import crd_rules
from forescale.core.errors import InvalidInputError
from forescale.core.spec import PolicySpec
from forescale.policy import SPEC_SCHEMA

REPO = Path(__file__).resolve().parents[2]
CRD = yaml.safe_load((REPO / "crds" / "scalingpolicies.forescale.dev.yaml").read_text())
VERSION = CRD["spec"]["versions"][0]
ROOT = VERSION["schema"]["openAPIV3Schema"]


def fields(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = []
    for key, sub in (schema.get("properties") or {}).items():
        found.append((f"{path}.{key}", sub))
        found += fields(sub, f"{path}.{key}")
    if "items" in schema:
        found += fields(schema["items"], f"{path}[]")
    return found


def test_every_field_has_a_description() -> None:
    # metadata is ObjectMeta: the API server publishes its own description for it.
    everything = [(p, s) for p, s in fields(ROOT) if p != ".metadata"]
    assert len(everything) > 80
    blank = [p for p, s in everything if not str(s.get("description", "")).strip()]
    assert blank == [], f"kubectl explain would be blank for: {', '.join(blank)}"


def test_descriptions_are_sentences_not_placeholders() -> None:
    for path, schema in fields(ROOT):
        text = str(schema.get("description", ""))
        if path == ".metadata":
            continue
        assert len(text) >= 10 and text[0].isupper() and text.rstrip()[-1] in ".)", (
            path, text)


def test_printer_columns() -> None:
    columns = {c["name"]: c for c in VERSION["additionalPrinterColumns"]}
    assert list(columns)[:5] == ["Target", "Mode", "Ready", "Min", "Max"]
    assert columns["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Min"]["jsonPath"] == ".spec.minReplicas"
    assert columns["Max"]["jsonPath"] == ".spec.maxReplicas"
    assert columns["Paused"]["jsonPath"] == '.status.conditions[?(@.type=="Paused")].status'
    for column in columns.values():
        # every simple path names a field of the schema
        path = column["jsonPath"]
        if "[?" in path or path.startswith(".metadata."):
            continue
        node: dict[str, Any] = ROOT
        for part in path.strip(".").split("."):
            node = node["properties"][part]
        assert column["type"] in ("string", "integer", "date", "number", "boolean")


@pytest.mark.parametrize("value", [0])
def test_scale_to_zero_is_refused_with_reasons(value: int) -> None:
    spec = crd_rules.with_defaults({"minReplicas": value, "scaleTargetRef": {"name": "w"},
                                    "metrics": {"query": "up"},
                                    "serviceRatePerReplica": 1}, SPEC_SCHEMA)
    (message,) = crd_rules.violations(spec, SPEC_SCHEMA)
    assert message.startswith("spec.minReplicas: minReplicas must be at least 1: forescale "
                              "does not scale to zero")
    assert "docs/scale-to-zero.md" in message
    with pytest.raises(InvalidInputError, match="does not scale to zero") as refused:
        PolicySpec(service_rate_per_replica=1.0, min_replicas=value)
    # The same words as the CRD's rule (docs/scale-to-zero.md says so), and the value.
    rule = message.removeprefix("spec.minReplicas: ")
    assert str(refused.value) == f"{rule}, got {value}"
    assert (REPO / "docs" / "scale-to-zero.md").is_file()
