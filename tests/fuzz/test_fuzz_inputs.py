"""Fuzzers over every parser of outside input, and over sizing: no input gives a traceback
(only the one-line InvalidInputError the CLI turns into exit 2) or takes more than a second.

Bounded in time: a fixed number of examples per target (derandomised, so a CI run is
reproducible; `HYPOTHESIS_PROFILE_FUZZ=fuzz-long` runs many more locally), with hypothesis'
per-example deadline at one second.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forescale.cli.options import parse_duration
from forescale.core.errors import InvalidInputError
from forescale.core.sizing import chaos_buffer, size
from forescale.core.spec import SLO, Chaos, ChaosScenario, Costs
from forescale.policy import SPEC_SCHEMA, parse_policy_text, policy_spec_from_manifest
from forescale.trace import format_timestamp, load_trace, parse_timestamp

settings.register_profile("fuzz", max_examples=150, deadline=1000, derandomize=True,
                          database=None,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.function_scoped_fixture])
settings.register_profile("fuzz-long", max_examples=20_000, deadline=1000,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.function_scoped_fixture])
FUZZ = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE_FUZZ", "fuzz"))

#: Numbers that broke things before: tiny, huge, subnormal, non-finite, negative zero.
NASTY_FLOATS = st.sampled_from([0.0, -0.0, 1e-320, 5e-324, 1e-30, 1e-300, 1e300, 1.7e308,
                                math.inf, -math.inf, math.nan, -1.0, 1.0, 0.5, 1 - 1e-16])
FLOATS = st.one_of(NASTY_FLOATS, st.floats(allow_nan=True, allow_infinity=True))
#: Integers a YAML file may hold that no float can (``math.isfinite`` raises on them).
HUGE_INTS = st.sampled_from([10**400, -(10**400), 2**1024])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(10**30), 10**30), HUGE_INTS, FLOATS,
                    st.text(max_size=40))


def _json_like(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(leaves, lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=20), inner, max_size=5)),
        max_leaves=20)


def _from_schema(schema: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Mostly schema-shaped values with wrong types, out-of-range numbers and junk mixed in,
    so the fuzzer gets past the first check and into the conversion."""
    junk = _json_like(SCALARS)
    kind = schema.get("type")
    if kind == "object" and depth < 6:
        props = schema.get("properties", {})
        fields = {k: _from_schema(v, depth + 1) for k, v in props.items()}
        shaped = st.fixed_dictionaries({}, optional=fields) if fields else st.just({})
        return st.one_of(shaped, shaped, shaped, junk)
    if kind == "array" and depth < 6:
        return st.one_of(st.lists(_from_schema(schema["items"], depth + 1), max_size=4), junk)
    if kind == "string":
        options = [st.text(max_size=300)]
        if "enum" in schema:
            options.append(st.sampled_from(schema["enum"]))
        return st.one_of(*options, junk)
    if kind in ("number", "integer"):
        return st.one_of(FLOATS, st.integers(-(10**20), 10**20), HUGE_INTS, junk)
    return junk


def _bounded(call: Any) -> None:
    began = time.perf_counter()
    try:
        call()
    except InvalidInputError as exc:
        assert "\n" not in str(exc), str(exc)
        assert len(str(exc)) < 2000
    assert time.perf_counter() - began < 1.0


#: A valid spec's required fields: the fuzzed optional ones are merged into it, so that most
#: examples pass the schema's required check and reach the conversion of what they fuzz
#: (without it, 150 of 150 examples were refused for a missing field, and a crash in every
#: conversion passed).
VALID_BASE = {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
              "metrics": {"query": "sum(rate(http_requests_total[2m]))"},
              "serviceRatePerReplica": 10}
_FIELDS = SPEC_SCHEMA["properties"]
#: The valid base with one field fuzzed: each conversion path on its own.
_ONE_FIELD = st.sampled_from(sorted(_FIELDS)).flatmap(
    lambda key: _from_schema(_FIELDS[key]).map(lambda value: {**VALID_BASE, key: value}))
SPECS = st.one_of(
    _ONE_FIELD, _ONE_FIELD, _ONE_FIELD,
    # ... with any number of them, and anything at all.
    st.builds(lambda extra: {**VALID_BASE, **extra} if isinstance(extra, dict) else extra,
              _from_schema(SPEC_SCHEMA)),
    _from_schema(SPEC_SCHEMA))


def _manifest(spec: Any) -> dict[str, Any]:
    return {"apiVersion": "forescale.dev/v1alpha1", "kind": "ScalingPolicy", "spec": spec}


@FUZZ
@given(spec=SPECS)
def test_policy_parser(spec: Any) -> None:
    _bounded(lambda: policy_spec_from_manifest(_manifest(spec)))


def test_the_policy_fuzzer_reaches_the_conversion() -> None:
    """Enough of its examples are valid policies that the conversion itself is fuzzed."""
    converted: list[bool] = []

    @FUZZ
    @given(spec=SPECS)
    def draw(spec: Any) -> None:
        try:
            policy_spec_from_manifest(_manifest(spec))
        except InvalidInputError:
            converted.append(False)
        else:
            converted.append(True)

    draw()
    assert sum(converted) >= 5, f"{sum(converted)} of {len(converted)} converted"


@FUZZ
@given(text=st.one_of(
    st.text(max_size=2000),
    st.builds(lambda d: json.dumps(d, default=str), _json_like(SCALARS)),
    st.builds(lambda n, c: c * n, st.integers(0, 3000),
              st.sampled_from(["[", "{a: ", "- ", "&a x *a "])),
    st.builds("\n".join, st.lists(st.sampled_from(
        ["a: &x [1,2]", "b: *x", "c: [*x, *x, *x]", "spec:", "  minReplicas: 1", "---",
         "!!python/object:os.system x", "? [a]", "x: !!binary aGk="]), max_size=20))))
def test_policy_text(text: str) -> None:
    _bounded(lambda: parse_policy_text(text))


@FUZZ
@given(text=st.text(max_size=60))
def test_duration_parsing(text: str) -> None:
    began = time.perf_counter()
    try:
        seconds = parse_duration(text)
    except ValueError as exc:  # click turns it into a usage error: one line, exit 2
        assert "\n" not in str(exc)
    else:
        assert seconds >= 0
    assert time.perf_counter() - began < 1.0


@FUZZ
@given(text=st.one_of(st.text(max_size=40), st.builds(str, FLOATS)))
def test_timestamp_parsing(text: str) -> None:
    _bounded(lambda: parse_timestamp(text))


@FUZZ
@given(rows=st.lists(st.tuples(st.one_of(st.text(max_size=30), st.builds(str, FLOATS),
                                         st.integers(-(10**20), 10**20).map(str)),
                               st.one_of(st.text(max_size=10), st.builds(str, FLOATS))),
                     max_size=30),
       header=st.sampled_from(["timestamp,requests", "timestamp,requests,extra", "x,y", ""]))
def test_trace_loader(tmp_path_factory: Any, rows: list[tuple[str, str]], header: str) -> None:
    path = Path(tmp_path_factory.mktemp("trace")) / "t.csv"
    path.write_text(header + "\n" + "\n".join(f"{a},{b}" for a, b in rows), encoding="utf-8",
                    errors="surrogatepass" if False else "replace")
    _bounded(lambda: load_trace(path))


#: A valid trace's rows, then damaged in one place: swapped, duplicated or dropped rows, a
#: shifted timestamp, a bad count. Random text alone never got past the first row's checks
#: (150 of 150 refused there), so the ordering, duplicate, gap and step checks were never
#: fuzzed.
DAMAGE = st.sampled_from(["none", "swap", "duplicate", "drop", "shift", "count", "extra"])


@FUZZ
@given(n=st.integers(2, 40), start=st.integers(0, 2_000_000_000), step=st.sampled_from(
    [1, 15, 60, 300]), iso=st.booleans(), damage=DAMAGE, where=st.integers(0, 39),
    count=st.one_of(st.integers(0, 10**6).map(str), st.sampled_from(
        ["nan", "-1", "inf", "1e400", "1.5", "", "x", "1,2"])))
def test_trace_loader_on_almost_valid_traces(
        tmp_path_factory: Any, n: int, start: int, step: int, iso: bool, damage: str,
        where: int, count: str) -> None:
    def stamp(t: int) -> str:
        return format_timestamp(t) if iso else str(t)

    rows = [[stamp(start + i * step), str(i % 7)] for i in range(n)]
    k = where % n
    if damage == "swap" and n > 2:
        rows[k], rows[(k + 1) % n] = rows[(k + 1) % n], rows[k]
    elif damage == "duplicate":
        rows.insert(k, list(rows[k]))
    elif damage == "drop" and n > 3:
        del rows[k]
    elif damage == "shift":
        rows[k][0] = stamp(start + k * step + max(step // 2, 1))
    elif damage == "count":
        rows[k][1] = count
    elif damage == "extra":
        rows[k].append("234")
    path = Path(tmp_path_factory.mktemp("trace")) / "t.csv"
    path.write_text("timestamp,requests\n" + "\n".join(",".join(r) for r in rows) + "\n",
                    encoding="utf-8")
    _bounded(lambda: load_trace(path))


@FUZZ
@given(arrival=FLOATS, service=FLOATS, wait=st.one_of(NASTY_FLOATS, st.floats(0, 3600)),
       percentile=st.floats(0.01, 0.99), utilisation=st.floats(0.01, 1.0),
       costs=st.one_of(st.none(), st.tuples(st.floats(0, 1e12), st.floats(0, 1e308))),
       cap=st.integers(1, 100_000))
def test_sizing(arrival: float, service: float, wait: float, percentile: float,
                utilisation: float, costs: tuple[float, float] | None, cap: int) -> None:
    def run() -> None:
        slo = SLO(wait_seconds=wait, percentile=percentile, max_utilisation=utilisation)
        result = size(arrival, service, slo, None if costs is None else Costs(*costs),
                      max_replicas=cap)
        assert 1 <= result.replicas <= cap
    _bounded(run)


@FUZZ
@given(base=st.integers(0, 100_000), arrival=st.floats(0, 1e12), service=NASTY_FLOATS,
       fraction=st.one_of(st.floats(1e-9, 1 - 1e-16), st.just(1 - 1e-16)),
       rule=st.sampled_from(["proportional", "survive"]), cap=st.integers(1, 100_000))
def test_chaos_buffer(base: int, arrival: float, service: float, fraction: float,
                      rule: str, cap: int) -> None:
    def run() -> None:
        chaos = Chaos(rule=rule,  # type: ignore[arg-type]
                      scenarios=(ChaosScenario("zone", 0.5, fraction),))
        result = chaos_buffer(base, arrival, service, SLO(), chaos, max_replicas=cap)
        assert result.extra_replicas >= 0
    _bounded(run)
