"""Guardrail metrics: extra signals that can only raise the replica count (HPA-style max-of).

forescale sizes from one arrival-rate query and a fixed ``serviceRatePerReplica``. If a
release makes each pod slower, that figure is wrong and the sizing under-provisions without
noticing. A guardrail watches a symptom instead — CPU utilisation against a target, or a
latency percentile against the SLO — and asks for what the HorizontalPodAutoscaler would:

    replicas = ceil(current replicas × value / target)

or the current replicas when ``value / target`` is within the tolerance of 1 (the HPA's
10 %, so noise around the target does nothing). The plan takes the highest of its own
recommendation and every guardrail's, so a guardrail never lowers anything: it raises the
recommendation when the pods are hotter than their target, and, once it has, holds it there
while they are near the target (as the HPA's own metric would; without that, sizing would
scale back down and the guardrail raise again, in a loop). Its value shows only the pods
that serve, so the proportional answer scales those (``serving``), not pods a scale-up asked
for that have not started (as the HPA leaves unready pods out): read again before they
serve, the same value would otherwise raise the replicas again on top of its last raise.
A guardrail whose metric is missing asks for nothing (missing data never justifies a
change).

Pure: the values are read by the operator (one PromQL query per guardrail) and passed in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from forescale.core.checks import is_number, is_text
from forescale.core.errors import InvalidInputError

#: As the HPA's --horizontal-pod-autoscaler-tolerance default.
DEFAULT_TOLERANCE = 0.1


@dataclass(frozen=True)
class Guardrail:
    """One extra query: ``query`` returns one value (e.g. the pods' mean CPU utilisation,
    0.85, or the p99 latency in seconds, 0.4) that should stay at or below ``target``."""

    name: str
    query: str
    target: float
    tolerance: float = DEFAULT_TOLERANCE

    def __post_init__(self) -> None:
        where = f"guardrail {self.name!r}"
        if not is_text(self.name):
            raise InvalidInputError(f"a guardrail needs a name, got {self.name!r}")
        if not (isinstance(self.query, str) and self.query.strip()):
            raise InvalidInputError(f"{where}: query must not be empty")
        if not (is_number(self.target) and math.isfinite(self.target)
                and self.target > 0):
            raise InvalidInputError(f"{where}: target must be a positive number, "
                                    f"got {self.target!r}")
        if not (is_number(self.tolerance) and 0 <= self.tolerance < 1):
            raise InvalidInputError(f"{where}: tolerance must be in [0, 1), "
                                    f"got {self.tolerance!r}")


#: The most a guardrail asks for: Kubernetes' replicas are int32 (maxReplicas clamps it
#: further). A huge reading (10³⁰⁰) once asked for a 300-digit count, or overflowed.
MOST_REPLICAS = 2**31 - 1


@dataclass(frozen=True)
class GuardrailReading:
    """A guardrail and the value its query returned now (None: no value)."""

    guardrail: Guardrail
    value: float | None


@dataclass(frozen=True)
class GuardrailResult:
    """The highest guardrail recommendation and which guardrail made it."""

    #: The highest guardrail's recommendation; None when no guardrail has a value.
    replicas: int | None
    decided_by: str | None
    message: str
    #: Every guardrail's own recommendation (None: no value).
    per_guardrail: tuple[tuple[str, int | None], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"replicas": self.replicas, "decidedBy": self.decided_by,
                "message": self.message,
                "guardrails": {name: n for name, n in self.per_guardrail}}


def replicas_for(reading: GuardrailReading, current_replicas: int,
                 serving: int | None = None) -> int | None:
    """What one guardrail asks for: the current replicas within tolerance, else the HPA's
    proportional answer for the ``serving`` replicas, those the value was measured on (the
    current ones but the pods a scale-up asked for that have not started: their value
    does not show them yet, and scaled from the current count it would ask for them again
    on top of themselves); None without a usable value or without replicas to scale
    from."""
    value, g = reading.value, reading.guardrail
    if value is None or not math.isfinite(value) or value < 0 or current_replicas < 1:
        return None
    ratio = value / g.target
    if 1.0 - g.tolerance <= ratio <= 1.0 + g.tolerance:
        return current_replicas
    base = current_replicas if serving is None else min(max(serving, 0), current_replicas)
    wanted = base * ratio
    # Never the other way than the value points (as the HPA: pods not serving yet must not
    # turn a hot value into a scale-down, nor a cold one into a scale-up).
    wanted = max(wanted, current_replicas) if ratio > 1.0 else min(wanted, current_replicas)
    if not wanted < MOST_REPLICAS:  # inf too: 1e306 against 0.001 was an OverflowError
        return MOST_REPLICAS
    return max(1, math.ceil(wanted - 1e-9))


def recommend(readings: Sequence[GuardrailReading], current_replicas: int,
              serving: int | None = None) -> GuardrailResult:
    """The max-of over the guardrails (ties go to the first listed); ``serving``: see
    :func:`replicas_for`."""
    per = tuple((r.guardrail.name, replicas_for(r, current_replicas, serving))
                for r in readings)
    asked = [(n, name) for name, n in per if n is not None]
    missing = [r.guardrail.name for r in readings if r.value is None]
    note = f" (no value from {', '.join(missing)})" if missing else ""
    if not asked:
        return GuardrailResult(None, None, f"no guardrail has a value{note}", per)
    best = max(n for n, _ in asked)
    name = next(name for n, name in asked if n == best)
    reading = next(r for r in readings if r.guardrail.name == name)
    assert reading.value is not None
    starting = "" if serving is None or not serving < current_replicas else \
        f" ({current_replicas - max(serving, 0)} of the {current_replicas} not serving yet)"
    return GuardrailResult(best, name, (
        f"guardrail {name}: {reading.value:.4g} against target {reading.guardrail.target:.4g} "
        f"asks for {best} replicas{starting}{note}"), per)
