"""``forescale validate``: the CRD's schema and CEL rules, checked outside the cluster."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from forescale.cli import crd_rules, main
from forescale.policy import SPEC_SCHEMA

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("scalingpolicy-*.yaml"))
CRD = yaml.safe_load((REPO / "crds" / "scalingpolicies.forescale.dev.yaml").read_text())


def manifest(name: str = "web", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
        "metrics": {"query": 'sum(rate(http_requests_total{job="web"}[2m]))'},
        "serviceRatePerReplica": 10}
    body.update(spec)
    return {"apiVersion": "forescale.dev/v1alpha1", "kind": "ScalingPolicy",
            "metadata": {"name": name}, "spec": body}


def write(path: Path, *docs: object) -> Path:
    path.write_text(yaml.safe_dump_all(docs))
    return path


def crd_message(rule_fragment: str) -> str:
    """The message the CRD gives for the spec-level rule containing ``rule_fragment``."""
    spec = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for entry in spec["x-kubernetes-validations"]:
        if rule_fragment in entry["rule"]:
            return str(entry["message"])
    raise AssertionError(f"no CEL rule with {rule_fragment!r} in the CRD")


def test_every_example_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert EXAMPLES
    assert main(["validate", *map(str, EXAMPLES)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(EXAMPLES) and all(line.endswith(": valid") for line in out)


def test_every_cel_rule_in_the_crd_compiles() -> None:
    rules = crd_rules.all_rules(SPEC_SCHEMA)
    assert any(r.path == "spec" for r in rules)
    for rule in rules:
        assert rule.program is not None and rule.message


def test_cel_rule_breaks_with_the_crds_message(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "p.yaml", manifest(minReplicas=5, maxReplicas=3))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"{path}[0] ScalingPolicy web: spec: {crd_message('maxReplicas')}"


@pytest.mark.parametrize(("kind", "value", "valid"), [
    ("Pods", 0.5, False), ("Pods", 1.9, False), ("Pods", 4, True), ("Pods", 4.0, True),
    ("Percent", 12.5, True)])
def test_a_pods_rate_limit_is_a_whole_number_of_pods(kind: str, value: float,
                                                      valid: bool) -> None:
    """A Pods value of 0.5 was truncated to 0 and held every scale-up for ever: the CRD's
    rule refuses it, as the core does; a percentage may be fractional."""
    rule = {"type": kind, "value": value, "periodSeconds": 60}
    spec = crd_rules.with_defaults(
        manifest(behavior={"scaleUp": {"policies": [rule]}, "scaleDown": {"policies": [rule]}}
                 )["spec"], SPEC_SCHEMA)
    found = crd_rules.violations(spec, SPEC_SCHEMA)
    message = "a Pods rate limit's value is a whole number of pods"
    assert found == ([] if valid else [
        f"spec.behavior.scaleUp.policies[0]: {message}",
        f"spec.behavior.scaleDown.policies[0]: {message}"])


def test_defaults_apply_before_the_rules(tmp_path: Path) -> None:
    """As on the API server: maxReplicas defaults to 100, so minReplicas 150 alone breaks
    the min <= max rule, though the file never mentions maxReplicas."""
    spec = crd_rules.with_defaults(manifest(minReplicas=150)["spec"], SPEC_SCHEMA)
    assert isinstance(spec, dict) and spec["maxReplicas"] == 100
    assert crd_rules.violations(spec, SPEC_SCHEMA) == [f"spec: {crd_message('maxReplicas')}"]
    assert main(["validate", str(write(tmp_path / "p.yaml", manifest(minReplicas=150)))]) == 2


def test_numbers_are_doubles_as_in_the_api_server() -> None:
    schema = {"type": "object",
              "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
              "x-kubernetes-validations": [{"rule": "self.a < self.b", "message": "a < b"}]}
    # YAML's 1 is an int; CEL refuses int < double, the API server's number is a double.
    assert crd_rules.violations({"a": 1, "b": 1.5}, schema) == []
    assert crd_rules.violations({"a": 2, "b": 1.5}, schema) == ["spec: a < b"]


def test_transition_rules_are_skipped_not_failed() -> None:
    schema = {"type": "string",
              "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "immutable"}]}
    assert crd_rules.violations("x", schema) == []


def test_a_rule_that_does_not_compile_is_reported() -> None:
    with pytest.raises(crd_rules.RuleError, match="does not compile"):
        crd_rules.compile_rule("self.a ===")


@pytest.mark.parametrize(("spec", "needle"), [
    ({"slo": {"percentile": 1.5}}, "spec.slo.percentile must be in (0, 1), got 1.5"),
    ({"replicas": 3}, "spec.replicas is not a known field"),
    ({"mode": "Auto"}, "spec.mode must be one of Scale, Observe"),
    ({"serviceRatePerReplica": "fast"}, "spec.serviceRatePerReplica must be a finite number"),
])
def test_schema_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                       spec: dict[str, Any], needle: str) -> None:
    path = write(tmp_path / "p.yaml", manifest(**spec))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and needle in err, err


def test_several_files_and_documents_one_line_each(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path / "good.yaml", manifest("a"),
                 {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}},
                 manifest("b"))
    bad = write(tmp_path / "bad.yaml", manifest("c", minReplicas=5, maxReplicas=3))
    assert main(["validate", str(good), str(bad)]) == 2
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [f"{good}[0] ScalingPolicy a: valid",
                                         f"{good}[2] ScalingPolicy b: valid"]
    assert captured.err.splitlines()[0].startswith(f"{bad}[0] ScalingPolicy c: spec: ")


def test_json_on_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "p.yaml", manifest("a"), manifest("b", minReplicas=9,
                                                               maxReplicas=2))
    assert main(["validate", "--json", str(path)]) == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["valid"] is False
    assert [(d["name"], d["valid"]) for d in doc["documents"]] == [("a", True), ("b", False)]
    assert doc["documents"][1]["errors"] == [f"spec: {crd_message('maxReplicas')}"]


@pytest.mark.parametrize(("content", "needle"), [
    ("a: [1, 2", "not valid YAML"),
    ("apiVersion: v1\nkind: Service\n", "no ScalingPolicy document"),
    (None, "no such file"),
])
def test_unreadable_input_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    content: str | None, needle: str) -> None:
    path = tmp_path / "p.yaml"
    if content is not None:
        path.write_text(content)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("make", [
    pytest.param(lambda p: None, id="missing"),
    pytest.param(lambda p: p.write_bytes(b"\xff\xfe"), id="not-utf8"),
])
def test_an_unreadable_file_is_reported_in_json_and_the_rest_checked(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Any) -> None:
    """With --json, a file that could not be read once printed nothing on stdout (the
    error went to stderr alone) and the files after it were never checked."""
    bad = tmp_path / "p.yaml"
    make(bad)
    good = write(tmp_path / "good.yaml", manifest())
    assert main(["validate", "--json", str(bad), str(good)]) == 2
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["valid"] is False
    first, second = doc["documents"]
    assert (first["file"], first["index"], first["valid"]) == (str(bad), None, False)
    assert len(first["errors"]) == 1 and str(bad) not in first["errors"][0]
    assert (second["file"], second["valid"]) == (str(good), True)
    assert main(["validate", str(bad), str(good)]) == 2
    captured = capsys.readouterr()
    assert captured.err.count(str(bad)) == 1, captured.err
    assert captured.out == f"{good}[0] ScalingPolicy web: valid\n"


def test_a_policy_without_a_name_is_invalid(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    doc = manifest()
    del doc["metadata"]
    assert main(["validate", str(write(tmp_path / "p.yaml", doc))]) == 2
    assert "metadata.name is required" in capsys.readouterr().err


def schedule(**kw: Any) -> dict[str, Any]:
    return {"name": "launch", "cron": "0 9 * * 1", "durationSeconds": 3600, **kw}


@pytest.mark.parametrize(("item", "needle"), [
    (schedule(), "spec.schedules[0]: a schedule sets minReplicas, maxReplicas or "
                 "forecastMultiplier"),
    (schedule(minReplicas=9, maxReplicas=3),
     "spec.schedules[0]: a schedule's minReplicas must not exceed its maxReplicas"),
    (schedule(minReplicas=2, cron="0 9 * *"), "spec.schedules[0].cron must match"),
    (schedule(minReplicas=2, cron="0 9 * * 8"), "is not a valid cron expression"),
    (schedule(minReplicas=2, timeZone="Europe/Atlantis"), "unknown time zone"),
])
def test_schedule_rules(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                        item: dict[str, Any], needle: str) -> None:
    """Rules on list items are evaluated per item (CEL), then the core's checks (cron
    values, time zones) catch what a pattern cannot."""
    path = write(tmp_path / "p.yaml", manifest(schedules=[item]))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err


def test_schedule_and_guardrail_names_are_unique(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "p.yaml", manifest(schedules=[schedule(minReplicas=2),
                                                          schedule(maxReplicas=5)]))
    assert main(["validate", str(path)]) == 2
    assert "spec.schedules[1].name 'launch' is a duplicate" in capsys.readouterr().err


ALIASES = 'a: &a ["x"]\nb: *a\n'


@pytest.mark.parametrize(("text", "needle"), [
    ("[" * 3000, "nested more than 32 levels deep"),
    ("{a: " * 3000 + "1" + "}" * 3000, "nested more than 32 levels deep"),
    (ALIASES, "YAML aliases (*name) are not accepted at line 2"),
    ("x: " + "y" * (1 << 17), "larger than 64 KiB (a ScalingPolicy is a few KiB)"),
    ("\n".join(["- x"] * 15_000), "more than 10,000 YAML nodes"),
])
def test_files_are_bounded_as_policy_files_are(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str],
                                               text: str, needle: str) -> None:
    """validate parses with the loader ``backtest --policy-file`` uses: deep nesting once
    raised RecursionError with a traceback, and aliases were expanded."""
    path = tmp_path / "p.yaml"
    path.write_text(text)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == f"{path}: {needle}\n"


def test_a_misspelt_kind_in_the_group_is_an_error(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    doc = manifest()
    doc["kind"] = "Scalingpolicy"
    path = write(tmp_path / "p.yaml",
                 {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}},
                 doc)
    assert main(["validate", str(path)]) == 2
    assert capsys.readouterr().err == (f"{path}[1] ScalingPolicy web: kind must be "
                                       f"ScalingPolicy, got 'Scalingpolicy'\n")


def test_a_file_without_a_policy_is_reported(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Beside a valid file, a file of other kinds once passed silently (exit 0)."""
    good = write(tmp_path / "good.yaml", manifest())
    other = write(tmp_path / "other.yaml",
                  {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "w"}})
    assert main(["validate", str(good), str(other)]) == 2
    captured = capsys.readouterr()
    assert captured.out == f"{good}[0] ScalingPolicy web: valid\n"
    assert captured.err == f"{other}: no ScalingPolicy document\n"
    assert main(["validate", "--json", str(good), str(other)]) == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["documents"][1] == {"file": str(other), "index": None, "name": None,
                                   "valid": False, "errors": ["no ScalingPolicy document"]}


@pytest.mark.parametrize(("meta", "needle"), [
    ({"name": "Check_Out!"}, "metadata.name must be a DNS-1123 subdomain"),
    ({"name": "web-"}, "metadata.name must be a DNS-1123 subdomain"),
    ({"name": "a" * 254}, "metadata.name must be a DNS-1123 subdomain"),
    ({"name": "web\n"}, "metadata.name must be a DNS-1123 subdomain"),
    ({"name": "web", "namespace": "shop.eu"}, "metadata.namespace must be a DNS-1123 label"),
    ({"name": "web", "namespace": "a" * 64}, "metadata.namespace must be a DNS-1123 label"),
    ({"name": "web", "namespace": 7}, "metadata.namespace must be a DNS-1123 label"),
])
def test_names_the_api_server_refuses(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      meta: dict[str, Any], needle: str) -> None:
    doc = manifest()
    doc["metadata"] = meta
    assert main(["validate", str(write(tmp_path / "p.yaml", doc))]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("meta", [{"name": "web.v2-" + "a" * 200},
                                  {"name": "a" * 253, "namespace": "shop-" + "b" * 58}])
def test_names_the_api_server_accepts(tmp_path: Path, meta: dict[str, Any]) -> None:
    doc = manifest()
    doc["metadata"] = meta
    assert main(["validate", str(write(tmp_path / "p.yaml", doc))]) == 0
