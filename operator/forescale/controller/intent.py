"""The intent of a /scale write, left on the target's Lease right before the write.

The status says what the last decision did; it is written after the /scale write. A
process that dies between the two (an OOM kill, a node drain) leaves a status that predates
its write, and whoever decides next (the same replica restarted, or another taking the
Lease over) would take the write for someone else's (``ExternallyScaled``) and plan from
the state before it: the rate limits' allowance, the scale-down stabilisation and the
cooldown granted twice. So the renewal of the Lease that allows the write also records it:
which policy (by uid), from which count to which, and the plan state the write leaves
(without its forecast records, which the status keeps).

Which intent a status already accounts for is said by its ``scaleIntent``, the digest of
the annotation: written with the status of the cycle that made the write, or that planned
from its state. No clock decides it (a clock stepped back, or another replica's running
fast, would make an older record look newer), and a status without a plan (InvalidSpec,
DecisionFailed) leaves it as it was, as it leaves the plan state. The next decision plans
from the intent's state when the status does not account for it, still remembers the count
the write started from, and the target has the count it wrote.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field, replace
from typing import Any

from forescale.controller.lease import INTENT_ANNOTATION
from forescale.core.calibration import Records
from forescale.core.errors import InvalidInputError
from forescale.core.plan import PlanState

logger = logging.getLogger("forescale.controller")

#: Longer annotations are not read (a valid one stays well below: an hour of
#: recommendations every 5 s, the rate-limit events of 30 minutes and at most
#: plan.MAX_CHANGES changes are about 60 kB; the API server allows 256 KiB in all).
MAX_INTENT_CHARS = 200_000


def intent_key(text: str) -> str:
    """What a status records of the intent annotation ``text`` it accounts for."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ScaleIntent:
    policy_uid: str
    from_replicas: int
    to_replicas: int
    #: The plan state if the write happened, without its forecast records.
    state: PlanState
    #: :func:`intent_key` of the annotation it was read from ("" until encoded).
    key: str = field(default="", compare=False)

    @classmethod
    def of(cls, policy_uid: str, from_replicas: int, to_replicas: int,
           state: PlanState) -> ScaleIntent:
        return cls(policy_uid, from_replicas, to_replicas, replace(state, records=Records()))

    def encode(self) -> str:
        state = self.state.to_dict()
        del state["forecasts"]
        return json.dumps({"policyUid": self.policy_uid, "from": self.from_replicas,
                           "to": self.to_replicas, "planState": state},
                          separators=(",", ":"))

    @classmethod
    def decode(cls, text: str | None) -> ScaleIntent | None:
        """The intent in an annotation's ``text``; None without one, or (logged) when it
        cannot be read: the decision then plans from the status alone, as before intents."""
        if not text:
            return None
        try:
            if len(text) > MAX_INTENT_CHARS:
                raise ValueError(f"{len(text)} characters, more than {MAX_INTENT_CHARS}")
            data: Any = json.loads(text)
            from_, to = data["from"], data["to"]
            if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                       for n in (from_, to)):
                raise ValueError(f"replicas {from_!r} -> {to!r} are not counts")
            state = PlanState.from_dict({**data["planState"], "forecasts": None})
            return cls(str(data["policyUid"]), from_, to, state, intent_key(text))
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError,
                InvalidInputError) as exc:
            logger.warning("the Lease's %s annotation is unreadable (%s); planning from the "
                           "status alone", INTENT_ANNOTATION, str(exc)[:200])
            return None


def resumed_state(state: PlanState, intent: ScaleIntent | None, *, policy_uid: str | None,
                  current_replicas: int, accounted: object) -> PlanState:
    """The state to plan from: the status's ``state``, or the state after a write the
    status does not account for (``accounted``: its ``scaleIntent``): the policy's own,
    from the count the status remembers to the one the target has now. A write that was
    refused or never made leaves the target at the count it started from: the status's
    state stands. The forecast records are the status's (those learnt since are learnt
    again)."""
    if intent is None or policy_uid is None or intent.policy_uid != policy_uid:
        return state
    if intent.key == accounted or intent.to_replicas != current_replicas or \
            state.replicas not in (intent.from_replicas, None):
        return state
    return replace(intent.state, records=state.records)
