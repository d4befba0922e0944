"""The API permissions the operator needs, derived from the code that uses them.

Every function in :mod:`forescale.controller.kube` that calls the API carries a
``@requires(group, resource, verbs)`` decorator, so the rules cannot drift from the calls.
kopf's own needs (watching the policies, its finalizer and annotations, events, discovery,
peering) are listed here, next to the reason for each. :func:`required_rules` merges both
into ClusterRole rules; the Helm chart's RBAC is tested against it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., object])


@dataclass(frozen=True)
class Rule:
    group: str
    resource: str
    verbs: frozenset[str]


#: Filled in by :func:`requires` at import time of :mod:`forescale.controller.kube`.
_REGISTERED: list[Rule] = []

#: What kopf itself does with the API, not visible in our code.
KOPF_RULES: tuple[Rule, ...] = (
    # Watch the policies (list + watch), patch them for the finalizer and kopf's
    # last-handled-configuration annotation.
    Rule("forescale.dev", "scalingpolicies", frozenset({"get", "list", "watch", "patch"})),
    # kopf patches status only through its own progress storage for change handlers; we
    # keep it anyway because kopf falls back to it when handlers are retried.
    Rule("forescale.dev", "scalingpolicies/status", frozenset({"get", "patch"})),
    # kopf posts events for handler failures (posting.level) and kopf.event().
    Rule("", "events", frozenset({"create"})),
    # kopf's namespace observer (for --namespace patterns) and cluster-wide scanning.
    Rule("", "namespaces", frozenset({"get", "list", "watch"})),
    # kopf re-scans resources when CRDs change.
    Rule("apiextensions.k8s.io", "customresourcedefinitions",
         frozenset({"get", "list", "watch"})),
    # Peering (--peering NAME): kopf keeps its peers in these objects.
    Rule("kopf.dev", "kopfpeerings", frozenset({"get", "list", "watch", "patch"})),
    Rule("kopf.dev", "clusterkopfpeerings", frozenset({"get", "list", "watch", "patch"})),
)


def requires(group: str, resource: str, verbs: Iterable[str]) -> Callable[[F], F]:
    """Record that the decorated function needs ``verbs`` on ``group``/``resource``."""
    rule = Rule(group, resource, frozenset(verbs))

    def register(fn: F) -> F:
        _REGISTERED.append(rule)
        return fn

    return register


def required_rules() -> list[dict[str, list[str]]]:
    """ClusterRole rules: one per (group, resource), verbs merged, everything sorted."""
    # Import for its side effect: the decorators register the rules.
    from forescale.controller import kube  # noqa: F401

    merged: dict[tuple[str, str], set[str]] = {}
    for rule in (*KOPF_RULES, *_REGISTERED):
        merged.setdefault((rule.group, rule.resource), set()).update(rule.verbs)
    return [{"apiGroups": [group], "resources": [resource], "verbs": sorted(verbs)}
            for (group, resource), verbs in sorted(merged.items())]
