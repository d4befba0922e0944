"""A ScalingPolicy manifest (``forescale.dev/v1alpha1``) → the core's :class:`PolicySpec`.

The CLI's ``--policy-file`` and anything else that reads a manifest outside the cluster go
through here, so a file that converts cleanly is one the API server would accept:
:data:`SPEC_SCHEMA` is the CRD's ``spec`` schema (generated from
``crds/scalingpolicies.forescale.dev.yaml``; a test fails if the two drift), and every error
names the field's path (``spec.slo.percentile must be in (0, 1), got 1.5``). Fields the
manifest omits are not filled in here: they take :class:`PolicySpec`'s defaults, which live once, in
:mod:`forescale.core.spec`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from forescale.core.checks import is_integer, is_number
from forescale.core.errors import InvalidInputError, os_reason
from forescale.core.guardrail import Guardrail
from forescale.core.schedules import Schedule
from forescale.core.spec import (
    SLO,
    Behavior,
    Chaos,
    ChaosScenario,
    Costs,
    ForecastSettings,
    PolicySpec,
    RateLimit,
)

GROUP = "forescale.dev"
API_VERSION = f"{GROUP}/v1alpha1"
KIND = "ScalingPolicy"

T = TypeVar("T")
Schema = Mapping[str, Any]

#: The CRD's ``spec`` schema, generated from ``crds/`` by ``scripts/sync-chart-crds.py``
#: (an installed package has no ``crds/``). :func:`validate` reads its types, bounds, enums,
#: lengths, patterns and required fields; defaults are the core's, and the CEL rule
#: min <= max is checked by PolicySpec.
SPEC_SCHEMA: dict[str, Any] = json.loads(
    resources.files("forescale").joinpath("scalingpolicy_spec_schema.json")
    .read_text(encoding="utf-8"))

#: Top-level fields of a manifest; ``metadata`` and ``status`` are accepted and ignored.
_TOP_LEVEL = ("apiVersion", "kind", "metadata", "spec", "status")


# --- structural validation ------------------------------------------------------------


def _fmt(value: object) -> str:
    """A value for a message, at most ~80 characters: it may reach a status or an event."""
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 80 else text[:79] + "…"


def _key(key: object) -> str:
    """An unknown field's name for a one-line message: as it is if printable, else quoted
    with its escapes (a key holding a newline must not break the line)."""
    text = str(key)
    return (text if text.isprintable() else repr(text))[:80]


def _type_ok(value: object, kind: str) -> bool:
    if kind == "object":
        return isinstance(value, Mapping)
    if kind == "array":
        return isinstance(value, list)
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        return is_integer(value)
    if kind == "number":
        return is_number(value) and math.isfinite(value)
    raise AssertionError(f"schema type {kind!r} not handled")


#: What the CRD's patterns mean, for messages a user can act on (others are shown as is).
_PATTERN_WORDS = {
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$":
        "be a DNS-1123 name (lower-case letters, digits, '-' and '.')",
    r"^https?://[^?#\s]+$": "be an http(s) URL without a query string, fragment or spaces",
    r"^[A-Z][A-Za-z0-9]*$": "be a Kubernetes kind such as Deployment",
}


_TYPE_WORDS = {"object": "a mapping", "array": "a list", "string": "a string",
               "integer": "an integer", "number": "a finite number"}


def _range_message(schema: Schema) -> str:
    lo, hi = schema.get("minimum"), schema.get("maximum")
    lo_open, hi_open = bool(schema.get("exclusiveMinimum")), bool(schema.get("exclusiveMaximum"))
    if lo is not None and hi is not None:
        return f"must be in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f"must be greater than {lo}" if lo_open else f"must be at least {lo}"
    return f"must be less than {hi}" if hi_open else f"must be at most {hi}"


def _in_range(value: float, schema: Schema) -> bool:
    lo, hi = schema.get("minimum"), schema.get("maximum")
    if lo is not None and (value <= lo if schema.get("exclusiveMinimum") else value < lo):
        return False
    return not (hi is not None
                and (value >= hi if schema.get("exclusiveMaximum") else value > hi))


def _go_anchors(pattern: str) -> str:
    """``pattern`` as the API server reads it (Go's RE2): ``$`` is the end of the text,
    where Python's also matches before a final newline (``"web\\n"`` passed)."""
    return re.sub(r"(?<!\\)\$", r"\\Z", pattern)


def validate(value: object, schema: Schema, path: str) -> None:
    """Check ``value`` against the (OpenAPI-subset) ``schema``; raise naming ``path``."""
    kind = schema["type"]
    if not _type_ok(value, kind):
        raise InvalidInputError(f"{path} must be {_TYPE_WORDS[kind]}, got {_fmt(value)}")
    if isinstance(value, Mapping):
        props: Mapping[str, Schema] = schema.get("properties", {})
        for key in value:
            if key not in props:
                raise InvalidInputError(f"{path}.{_key(key)} is not a known field (known: "
                                        f"{', '.join(props)})")
        for key in schema.get("required", ()):
            # The API server fills defaults in before it validates (so does read_policy).
            if key not in value and "default" not in props.get(key, {}):
                raise InvalidInputError(f"{path}.{key} is required")
        for key, sub in value.items():
            validate(sub, props[key], f"{path}.{key}")
    elif isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            raise InvalidInputError(f"{path} needs at least {schema['minItems']} item(s), "
                                    f"got {len(value)}")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise InvalidInputError(f"{path} takes at most {schema['maxItems']} item(s), "
                                    f"got {len(value)}")
        for i, item in enumerate(value):
            validate(item, schema["items"], f"{path}[{i}]")
    elif isinstance(value, str):
        if "enum" in schema and value not in schema["enum"]:
            raise InvalidInputError(f"{path} must be one of {', '.join(schema['enum'])}, "
                                    f"got {_fmt(value)}")
        if len(value) < schema.get("minLength", 0):
            raise InvalidInputError(f"{path} must not be empty")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise InvalidInputError(f"{path} must be at most {schema['maxLength']} "
                                    f"characters, got {len(value)}")
        if "pattern" in schema and not re.search(_go_anchors(schema["pattern"]), value):
            words = _PATTERN_WORDS.get(schema["pattern"], f"match {schema['pattern']}")
            raise InvalidInputError(f"{path} must {words}, got {_fmt(value)}")
    else:
        assert isinstance(value, int | float)  # the type check above admits only numbers
        if _in_range(value, schema):
            return
        raise InvalidInputError(f"{path} {_range_message(schema)}, got {_fmt(value)}")


# --- conversion -------------------------------------------------------------------------


def _core(path: str, build: Callable[[], T]) -> T:
    """Build a core object; its own checks (cross-field rules such as min <= max, duplicate
    models) name fields relative to ``spec``, so they get the ``spec.`` prefix."""
    try:
        return build()
    except InvalidInputError as exc:
        message = str(exc)
        head = message.split(" ", 1)[0]
        if head.split(".", 1)[0] in SPEC_SCHEMA["properties"]:
            raise InvalidInputError(f"spec.{message}") from None
        raise InvalidInputError(f"{path}: {message}") from None


def _pick(section: Mapping[str, Any] | None, names: Mapping[str, str]) -> dict[str, Any]:
    """The present fields of ``section`` under their core (snake_case) names."""
    if not section:
        return {}
    return {snake: section[camel] for camel, snake in names.items() if camel in section}


def _rate_limit(item: Mapping[str, Any], path: str) -> RateLimit:
    return _core(path, lambda: RateLimit(item["type"], float(item["value"]),
                                         float(item["periodSeconds"])))


def _rate_limits(items: list[Mapping[str, Any]], path: str) -> tuple[RateLimit, ...]:
    return tuple(_rate_limit(item, f"{path}[{i}]") for i, item in enumerate(items))


def _scenario(item: Mapping[str, Any], path: str) -> ChaosScenario:
    return _core(path, lambda: ChaosScenario(item["name"], float(item["probability"]),
                                             float(item["capacityFractionLost"])))


def _forecast(section: Mapping[str, Any], models_dir: Path | None) -> ForecastSettings:
    kwargs = _pick(section, {"confidence": "confidence", "maxError": "max_error",
                             "stageBudgetSeconds": "stage_budget_seconds",
                             "historySeconds": "history_seconds",
                             "relativeMargin": "relative_margin",
                             "intensitySeconds": "intensity_seconds",
                             "calibrationHalfLifeSeconds": "calibration_half_life_seconds",
                             "recurringDays": "recurring_days",
                             "recurringQuorum": "recurring_quorum",
                             "recurringTimeZone": "recurring_time_zone"})
    if "models" in section:
        kwargs["models"] = tuple(section["models"])
    ref = (section.get("lstm") or {}).get("modelRef")
    if ref is not None:
        kwargs["lstm_model"] = str(models_dir / ref) if models_dir is not None else ref
    arima = section.get("arima") or {}
    if "order" in arima:
        kwargs["arima_order"] = tuple(arima["order"])
    kwargs.update(_pick(arima, {"fourierTerms": "arima_fourier_terms",
                                "refitSeconds": "arima_refit_seconds"}))
    kwargs.update(_pick(section.get("movingAverage"), {"rule": "moving_average_rule",
                                                        "window": "moving_average_window"}))
    return _core("spec.forecast", lambda: ForecastSettings(**kwargs))


def _behavior(section: Mapping[str, Any]) -> Behavior:
    kwargs = _pick(section, {"cooldownSeconds": "cooldown_seconds"})
    up, down = section.get("scaleUp") or {}, section.get("scaleDown") or {}
    if "policies" in up:
        kwargs["scale_up"] = _rate_limits(up["policies"], "spec.behavior.scaleUp.policies")
    if "policies" in down:
        kwargs["scale_down"] = _rate_limits(down["policies"],
                                            "spec.behavior.scaleDown.policies")
    kwargs.update(_pick(up, {"minStep": "scale_up_min_step",
                             "lookaheadPeriods": "scale_up_lookahead_periods"}))
    kwargs.update(_pick(down, {"stabilizationWindowSeconds":
                               "scale_down_stabilization_seconds",
                               "tolerance": "scale_down_tolerance"}))
    return _core("spec.behavior", lambda: Behavior(**kwargs))


def _chaos(section: Mapping[str, Any]) -> Chaos:
    kwargs = _pick(section, {"rule": "rule", "probabilityFloor": "probability_floor"})
    if "scenarios" in section:
        kwargs["scenarios"] = tuple(_scenario(item, f"spec.chaos.scenarios[{i}]")
                                    for i, item in enumerate(section["scenarios"]))
    return _core("spec.chaos", lambda: Chaos(**kwargs))


def _schedule(item: Mapping[str, Any], path: str) -> Schedule:
    kwargs = _pick(item, {"timeZone": "time_zone", "minReplicas": "min_replicas",
                          "maxReplicas": "max_replicas",
                          "forecastMultiplier": "forecast_multiplier"})
    return _core(path, lambda: Schedule(name=item["name"], cron=item["cron"],
                                        duration_seconds=float(item["durationSeconds"]),
                                        **kwargs))


def _guardrail(item: Mapping[str, Any], path: str) -> Guardrail:
    kwargs = _pick(item, {"tolerance": "tolerance"})
    return _core(path, lambda: Guardrail(name=item["name"], query=item["query"],
                                         target=float(item["target"]), **kwargs))


def _unique_names(items: list[Mapping[str, Any]], path: str) -> None:
    """The API server keys these lists by name (list-type map); so do files."""
    seen: set[str] = set()
    for i, item in enumerate(items):
        if item["name"] in seen:
            raise InvalidInputError(f"{path}[{i}].name {item['name']!r} is a duplicate")
        seen.add(item["name"])


def policy_spec_from_manifest(manifest: Mapping[str, Any], *,
                              models_dir: Path | None = None) -> PolicySpec:
    """Convert a ScalingPolicy manifest (a parsed YAML/JSON mapping) to a PolicySpec.

    ``forecast.lstm.modelRef`` names a directory under ``models_dir``; without one the
    name is kept as it is.
    """
    if not isinstance(manifest, Mapping):
        raise InvalidInputError(f"a ScalingPolicy manifest must be a mapping, "
                                f"got {type(manifest).__name__}")
    for key in manifest:
        if key not in _TOP_LEVEL:
            raise InvalidInputError(f"{_key(key)} is not a known field of a ScalingPolicy "
                                    f"(known: {', '.join(_TOP_LEVEL)})")
    if manifest.get("apiVersion") != API_VERSION:
        raise InvalidInputError(f"apiVersion must be {API_VERSION}, "
                                f"got {_fmt(manifest.get('apiVersion'))}")
    if manifest.get("kind") != KIND:
        raise InvalidInputError(f"kind must be {KIND}, got {_fmt(manifest.get('kind'))}")
    if "metadata" in manifest and not isinstance(manifest["metadata"], Mapping):
        raise InvalidInputError("metadata must be a mapping")
    if "spec" not in manifest:
        raise InvalidInputError("spec is required")
    spec = manifest["spec"]
    validate(spec, SPEC_SCHEMA, "spec")

    kwargs = _pick(spec, {"minReplicas": "min_replicas", "maxReplicas": "max_replicas",
                          "leadTimeSeconds": "lead_time_seconds",
                          "decisionPeriodSeconds": "decision_period_seconds"})
    kwargs["service_rate_per_replica"] = spec["serviceRatePerReplica"]
    if "slo" in spec:
        slo_kwargs = _pick(spec["slo"], {"waitSeconds": "wait_seconds",
                                         "percentile": "percentile",
                                         "maxUtilisation": "max_utilisation",
                                         "violationBudget": "violation_budget"})
        kwargs["slo"] = _core("spec.slo", lambda: SLO(**slo_kwargs))
    if "costs" in spec:
        costs = spec["costs"]
        kwargs["costs"] = _core("spec.costs", lambda: Costs(costs["perReplicaHour"],
                                                            costs["perViolation"]))
    if "forecast" in spec:
        kwargs["forecast"] = _forecast(spec["forecast"], models_dir)
    if "behavior" in spec:
        kwargs["behavior"] = _behavior(spec["behavior"])
    if "chaos" in spec:
        kwargs["chaos"] = _chaos(spec["chaos"])
    if "schedules" in spec:
        _unique_names(spec["schedules"], "spec.schedules")
        kwargs["schedules"] = tuple(_schedule(item, f"spec.schedules[{i}]")
                                    for i, item in enumerate(spec["schedules"]))
    if "guardrails" in spec:
        _unique_names(spec["guardrails"], "spec.guardrails")
        kwargs["guardrails"] = tuple(_guardrail(item, f"spec.guardrails[{i}]")
                                     for i, item in enumerate(spec["guardrails"]))
    return _core("spec", lambda: PolicySpec(**kwargs))


#: Bounds on a policy file, checked before anything is built from it: a real ScalingPolicy
#: is a few KB and a few levels deep. Aliases are refused outright: a 780-byte file of
#: nested aliases ("billion laughs") expands to gigabytes.
MAX_POLICY_FILE_BYTES = 64 * 1024
MAX_YAML_DEPTH = 32
_MAX_YAML_EVENTS = 10_000

#: libyaml's parser where PyYAML was built with it (the pure-Python scanner is ~20x slower
#: and quadratic in the depth of flow collections).
_BASE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BASE_LOADER):  # type: ignore[misc]
    """The safe loader reading numbers as YAML 1.2 does, as kubectl does: PyYAML (YAML
    1.1) takes ``1e3`` for a string, so ``serviceRatePerReplica: 1e3`` was refused here
    though the API server stores 1000."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))
_LOADER: Any = _Loader


def _bracket_depth(text: str) -> int:
    """The deepest nesting of ``[``/``{`` in the text, quotes ignored: an over-estimate of
    the flow depth, found in one linear pass before any YAML scanner sees the text."""
    depth = deepest = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}" and depth:
            depth -= 1
    return deepest


def _check_yaml_shape(text: str) -> None:
    """Walk the parser's events (no object is built, so nothing is expanded and nothing
    recurses) and refuse aliases and deep nesting; raises a one-line error."""
    if _bracket_depth(text) > MAX_YAML_DEPTH:
        raise InvalidInputError(f"nested more than {MAX_YAML_DEPTH} levels deep")
    depth = 0
    try:
        for count, event in enumerate(yaml.parse(text, Loader=_LOADER)):
            if count > _MAX_YAML_EVENTS:
                raise InvalidInputError(f"more than {_MAX_YAML_EVENTS:,} YAML nodes")
            if isinstance(event, yaml.AliasEvent):
                mark = event.start_mark
                line = f" at line {mark.line + 1}" if mark is not None else ""
                raise InvalidInputError(f"YAML aliases (*name) are not accepted{line}")
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_YAML_DEPTH:
                    raise InvalidInputError(f"nested more than {MAX_YAML_DEPTH} levels deep")
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError as exc:
        raise _yaml_error(exc) from None


def _yaml_error(exc: yaml.YAMLError) -> InvalidInputError:
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or (str(exc).splitlines() or ["?"])[0]
    return InvalidInputError(f"not valid YAML{where}: {str(problem)[:200]}")


def parse_policy_documents(text: str) -> list[Any]:
    """Every document of a policy file, parsed within bounds (size, depth, node count, no
    aliases); empty documents are None, so that indexes are the file's."""
    if len(text) > MAX_POLICY_FILE_BYTES:
        raise InvalidInputError(f"larger than {MAX_POLICY_FILE_BYTES // 1024} KiB (a "
                                f"ScalingPolicy is a few KiB)")
    _check_yaml_shape(text)
    try:
        return list(yaml.load_all(text, Loader=_LOADER))
    except yaml.YAMLError as exc:
        raise _yaml_error(exc) from None
    except RecursionError:  # unreachable after the depth check; never a traceback
        raise InvalidInputError(f"nested more than {MAX_YAML_DEPTH} levels deep") from None


def is_policy_document(document: object) -> bool:
    """Whether a document of a policy file is to be checked as a ScalingPolicy: its kind
    is ScalingPolicy, or its apiVersion is in the forescale.dev group (a misspelt kind is
    then an error naming it, not a document silently skipped), or it is not a mapping at
    all. Documents of other kinds (a Deployment beside its policy) are not."""
    if not isinstance(document, Mapping):
        return document is not None
    api_version = document.get("apiVersion")
    return document.get("kind") == KIND or (
        isinstance(api_version, str) and api_version.split("/", 1)[0] == GROUP)


def parse_policy_text(text: str) -> Any:
    """The one ScalingPolicy document of a policy file, parsed within bounds; documents of
    other kinds are skipped (as ``forescale validate`` skips them)."""
    documents = [(i, d) for i, d in enumerate(parse_policy_documents(text))
                 if is_policy_document(d)]
    if not documents:
        raise InvalidInputError(f"no {KIND} document (a file with one {KIND} is expected)")
    for i, doc in documents:
        if not isinstance(doc, Mapping) or doc.get("kind") != KIND:
            what = (f"kind must be {KIND}, got {_fmt(doc.get('kind'))}"
                    if isinstance(doc, Mapping) else
                    f"must be a mapping, got {type(doc).__name__}")
            raise InvalidInputError(f"document {i}: {what}")
    if len(documents) > 1:
        raise InvalidInputError(f"expected one {KIND} document, found {len(documents)} "
                                f"(documents {', '.join(str(i) for i, _ in documents)})")
    return documents[0][1]


def read_policy_file(path: Path) -> str:
    """A policy file's text, read within the size bound (one byte more, for the check);
    a file that cannot be read is one line."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_POLICY_FILE_BYTES + 1)
        return raw.decode("utf-8")
    except FileNotFoundError:
        raise InvalidInputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InvalidInputError(f"{path}: is a directory") from None
    except UnicodeDecodeError:
        raise InvalidInputError(f"{path}: cannot read: not UTF-8 text") from None
    except OSError as exc:
        raise InvalidInputError(f"{path}: cannot read: {os_reason(exc)}"
                                ) from None


def load_policy_file(path: str | Path, *, models_dir: Path | None = None) -> PolicySpec:
    """Read a ScalingPolicy YAML (or JSON) file; every problem is one line naming the file.
    Documents of other kinds in it are skipped; it must hold exactly one ScalingPolicy."""
    path = Path(path)
    try:
        text = read_policy_file(path)
    except InvalidInputError as exc:
        raise InvalidInputError(f"policy file {exc}") from None
    try:
        return policy_spec_from_manifest(parse_policy_text(text), models_dir=models_dir)
    except InvalidInputError as exc:
        raise InvalidInputError(f"policy file {path}: {exc}") from None


# --- the operator's view of a ScalingPolicy resource ---------------------------------------

Mode = Literal["Scale", "Observe"]


@dataclass(frozen=True, kw_only=True)
class ScaleTarget:
    """``spec.scaleTargetRef``, defaults applied; ``name`` is a DNS-1123 name."""

    api_version: str
    kind: str
    name: str


@dataclass(frozen=True, kw_only=True)
class MetricsSource:
    """``spec.metrics``: a PromQL query and the Prometheus it is sent to (None: the
    operator's own; whether another URL is allowed is the operator's settings' call)."""

    query: str
    prometheus_url: str | None


@dataclass(frozen=True, kw_only=True)
class Policy:
    """One ScalingPolicy resource, complete and validated: nothing reads the raw spec after
    this. ``spec`` is what the core plans with; the rest is what the operator needs."""

    namespace: str
    name: str
    #: The object's uid: a policy deleted and created again under its name is another one.
    uid: str | None
    generation: int | None
    mode: Mode
    target: ScaleTarget
    metrics: MetricsSource
    spec: PolicySpec

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def decision_period_seconds(self) -> float:
        return self.spec.decision_period_seconds


def policy_from_resource(body: Mapping[str, Any], *,
                         models_dir: Path | None = None) -> Policy:
    """The typed :class:`Policy` of a ScalingPolicy object as the API server returns it
    (``metadata``, ``spec``; ``status`` is ignored). Raises :class:`InvalidInputError`
    with one line naming the field."""
    meta = body.get("metadata")
    if not isinstance(meta, Mapping):
        raise InvalidInputError("metadata must be a mapping")
    namespace, name = meta.get("namespace"), meta.get("name")
    if not (isinstance(namespace, str) and namespace and isinstance(name, str) and name):
        raise InvalidInputError("metadata.namespace and metadata.name are required")
    generation = meta.get("generation")
    uid = meta.get("uid")
    raw = body.get("spec")
    spec = policy_spec_from_manifest({"apiVersion": API_VERSION, "kind": KIND, "spec": raw},
                                     models_dir=models_dir)
    assert isinstance(raw, Mapping)  # validated above
    ref = raw["scaleTargetRef"]
    metrics = raw["metrics"]
    return Policy(
        namespace=namespace, name=name, uid=uid if isinstance(uid, str) else None,
        generation=generation if isinstance(generation, int) else None,
        mode="Observe" if raw.get("mode") == "Observe" else "Scale",
        target=ScaleTarget(api_version=str(ref.get("apiVersion") or "apps/v1"),
                           kind=str(ref.get("kind") or "Deployment"), name=str(ref["name"])),
        metrics=MetricsSource(query=str(metrics["query"]),
                              prometheus_url=metrics.get("prometheusUrl")),
        spec=spec)


def target_of(body: Mapping[str, Any]) -> ScaleTarget | None:
    """The scale target of a resource whose spec may no longer validate (a policy being
    deleted still releases its Lease): only the three fields, each checked."""
    ref = (body.get("spec") or {}).get("scaleTargetRef")
    if not isinstance(ref, Mapping):
        return None
    name, kind = ref.get("name"), ref.get("kind") or "Deployment"
    name_schema = SPEC_SCHEMA["properties"]["scaleTargetRef"]["properties"]["name"]
    if not (isinstance(name, str) and isinstance(kind, str)
            and re.search(name_schema["pattern"], name) and len(name) <= 253):
        return None
    return ScaleTarget(api_version=str(ref.get("apiVersion") or "apps/v1"), kind=kind,
                       name=name)
