"""Pause and pin a policy by annotation, for incidents, deploy freezes and GitOps tooling.

* ``forescale.dev/paused: "true"`` holds the target's replicas: forescale keeps reading,
  forecasting and reporting, but never writes ``/scale`` (a person may scale by hand).
* ``forescale.dev/paused-replicas: "N"`` sets the target to N, bounded by the policy's
  minReplicas and maxReplicas, and holds it there (a manual change is set back to N).
  It implies paused, as KEDA's ``autoscaling.keda.sh/paused-replicas`` does.

While paused or pinned the plan's memory (stabilisation window, rate-limit events,
calibration) is committed as if the plan had held, so removing the annotations resumes
with the plan's state intact: the pin's write is not one of the plan's scale events.

Pure: annotations in, a decision out. An annotation with a value that cannot be read is an
error the status shows (InvalidSpec), never a guess: whoever tried to pause must not find
the workload scaled.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from forescale.core.errors import InvalidInputError
from forescale.core.plan import Plan, changed, outcome_of
from forescale.core.spec import PolicySpec

PAUSED = "forescale.dev/paused"
PAUSED_REPLICAS = "forescale.dev/paused-replicas"
#: Reasons, as in the Paused condition and the plan's reasons.
HELD, PINNED = "PausedByAnnotation", "PinnedByAnnotation"
#: The longest pinned replicas value read (then bounded by maxReplicas).
MAX_PIN_DIGITS = 9


@dataclass(frozen=True)
class Override:
    """``reason`` is PausedByAnnotation (hold) or PinnedByAnnotation (set ``replicas``)."""

    reason: str
    message: str
    #: The pinned replicas, already within the policy's bounds; None for a plain pause.
    replicas: int | None = None


def read_override(annotations: Mapping[str, Any] | None,
                  spec: PolicySpec) -> Override | None:
    """The pause or pin the annotations ask for, None without one; raises
    :class:`InvalidInputError` (one line naming the annotation) for an unreadable value."""
    annotations = annotations or {}
    paused_text = annotations.get(PAUSED)
    pinned_text = annotations.get(PAUSED_REPLICAS)
    paused = False
    if paused_text is not None:
        value = str(paused_text).strip().lower()
        if value not in ("true", "false"):
            raise InvalidInputError(f"annotation {PAUSED} must be \"true\" or \"false\", "
                                    f"got {str(paused_text)[:40]!r}")
        paused = value == "true"
    if pinned_text is not None:
        text = str(pinned_text).strip()
        # ASCII digits only (str.isdigit also takes "²", which int() refuses) and a bounded
        # length (int() refuses more than 4300 digits; no workload has a billion replicas).
        if not (text.isascii() and text.isdigit()) or len(text) > MAX_PIN_DIGITS:
            raise InvalidInputError(f"annotation {PAUSED_REPLICAS} must be a whole number "
                                    f"of replicas (at most {MAX_PIN_DIGITS} digits), got "
                                    f"{str(pinned_text)[:40]!r}")
        asked = int(text)
        replicas = min(max(asked, spec.min_replicas), spec.max_replicas)
        bounded = ("" if replicas == asked else
                   f" ({asked} asked, bounded by minReplicas {spec.min_replicas} and "
                   f"maxReplicas {spec.max_replicas})")
        return Override(PINNED, f"pinned at {replicas} replicas by annotation "
                                f"{PAUSED_REPLICAS}{bounded}", replicas)
    if paused:
        return Override(HELD, f"paused by annotation {PAUSED}: replicas are held")
    return None


def apply_override(result: Plan, override: Override | None, spec: PolicySpec) -> Plan:
    """The plan as the override changes it: held at the current replicas, or set to the
    pinned ones; the state to commit is the held one either way (with the pinned count
    once it is written)."""
    if override is None:
        return result
    desired = result.current_replicas if override.replicas is None else override.replicas
    held = result.state_to_commit(applied=False)
    # Written, the pin is this operator's own change: the count it left the target at is
    # remembered, or the next decision takes it for someone else's (ExternallyScaled).
    pinned = dataclasses.replace(held, replicas=desired, changes=changed(
        held, spec, result.window_start_seconds, result.current_replicas, desired))
    return dataclasses.replace(
        result, desired_replicas=desired,
        reasons=(outcome_of(desired, result.current_replicas), override.reason,
                 *result.reasons[1:]),
        message=f"{override.message}; the plan asked for {result.desired_replicas}",
        state=pinned, held_state=held)
