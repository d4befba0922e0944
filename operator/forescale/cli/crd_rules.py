"""The CRD's CEL rules (``x-kubernetes-validations``), evaluated outside the cluster.

``forescale validate`` checks a policy file as the API server would: structural schema
first, then defaults applied (the API server defaults before it validates, so ``has()``
sees defaulted fields), then every CEL rule of the ``spec`` schema, evaluated with
``cel-python`` (``import celpy``), a maintained implementation of the CEL specification.
Rules that compare with the stored object (``oldSelf``, transition rules) cannot be judged
from a file and are skipped.

Numbers follow the schema's types, as the API server's CEL does: a ``type: number`` field
is a double even when the YAML says ``10``, so a rule comparing two numbers never trips on
``10`` against ``0.5``.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import celpy
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError

Schema = Mapping[str, Any]


@dataclass(frozen=True)
class Rule:
    """One compiled ``x-kubernetes-validations`` entry, at a schema path like ``spec``."""

    path: str
    rule: str
    message: str
    program: Any  # celpy.Runner; untyped library

    def check(self, value: object, schema: Schema) -> str | None:
        """None when the rule holds; otherwise its message."""
        typed: Any = _typed(value, schema)
        try:
            result = self.program.evaluate({"self": json_to_cel(typed)})
        except CELEvalError as exc:  # the API server counts these as failures too
            return f"{self.message} (rule could not be evaluated: {exc})"
        if isinstance(result, CELEvalError):
            return f"{self.message} (rule could not be evaluated: {result})"
        return None if bool(result) else self.message


class RuleError(Exception):
    """A rule in the CRD does not compile: a bug in the CRD, not in the policy."""


@functools.cache
def _environment() -> Any:
    return celpy.Environment()


@functools.cache  # the same few rules are checked for every document
def compile_rule(rule: str) -> Any:
    env = _environment()
    try:
        return env.program(env.compile(rule))
    except CELParseError as exc:
        raise RuleError(f"CEL rule does not compile: {rule!r}: {exc}") from None


def rules_at(schema: Schema, path: str) -> list[Rule]:
    """Compiled rules of ``schema`` itself (not of its children)."""
    found = []
    for entry in schema.get("x-kubernetes-validations", ()):
        text = str(entry["rule"])
        if "oldSelf" in text:
            continue  # a transition rule: needs the stored object
        found.append(Rule(path=path, rule=text,
                          message=str(entry.get("message") or f"failed rule: {text}"),
                          program=compile_rule(text)))
    return found


def all_rules(schema: Schema, path: str = "spec") -> list[Rule]:
    """Every rule anywhere in ``schema`` (paths use ``[]`` for list items); compiles them
    all, so a broken rule in the CRD is found even where no policy reaches it."""
    rules = rules_at(schema, path)
    for key, sub in (schema.get("properties") or {}).items():
        rules += all_rules(sub, f"{path}.{key}")
    if "items" in schema:
        rules += all_rules(schema["items"], f"{path}[]")
    return rules


def with_defaults(value: object, schema: Schema) -> object:
    """``value`` with the schema's defaults filled in, recursively (also inside defaults),
    as the API server stores it; the input is not changed."""
    value = copy.deepcopy(value)
    _default(value, schema)
    return value


def _default(value: object, schema: Schema) -> None:
    if isinstance(value, dict):
        props: Mapping[str, Schema] = schema.get("properties") or {}
        for key, sub in props.items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
        for key, sub in props.items():
            if key in value:
                _default(value[key], sub)
    elif isinstance(value, list) and "items" in schema:
        for item in value:
            _default(item, schema["items"])


def _typed(value: object, schema: Schema) -> object:
    """JSON-like ``value`` with ``type: number`` fields as floats (CEL doubles)."""
    kind = schema.get("type")
    if kind == "number" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, Mapping):
        props: Mapping[str, Schema] = schema.get("properties") or {}
        return {k: _typed(v, props.get(k, {})) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v, schema.get("items") or {}) for v in value]
    return value


def violations(value: object, schema: Schema, path: str = "spec") -> list[str]:
    """Every CEL rule ``value`` (already defaulted and structurally valid) breaks, as
    ``path: message`` lines, children before parents as the API server lists them."""
    found: list[str] = []
    if isinstance(value, Mapping):
        props: Mapping[str, Schema] = schema.get("properties") or {}
        for key, sub in props.items():
            if key in value:
                found += violations(value[key], sub, f"{path}.{key}")
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            found += violations(item, schema["items"], f"{path}[{i}]")
    for rule in rules_at(schema, path):
        message = rule.check(value, schema)
        if message is not None:
            found.append(f"{path}: {message}")
    return found
