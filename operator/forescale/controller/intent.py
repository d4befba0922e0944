"""The intent of a /scale write, left on the target's Lease right before the write.

The status says what the last decision did; it is written after the /scale write. A
process that dies between the two (an OOM kill, a node drain) leaves a status that predates
its write, and whoever decides next (the same replica restarted, or another taking the
Lease over) would take the write for someone else's (``ExternallyScaled``) and plan from
the state before it: the rate limits' allowance, the scale-down stabilisation and the
cooldown granted twice. So the renewal of the Lease that allows the write also records it:
which policy (by uid), from which count to which, the decision's time and the plan state
the write leaves (without its forecast records, which the status keeps). The next decision
plans from that state when the status is older than the intent, still says the count
the write started from, and the target has the count it wrote.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from typing import Any

from forescale.controller.kube import parse_time
from forescale.controller.lease import INTENT_ANNOTATION
from forescale.controller.status import rfc3339
from forescale.core.calibration import Records
from forescale.core.errors import InvalidInputError
from forescale.core.plan import PlanState

logger = logging.getLogger("forescale.controller")


@dataclass(frozen=True)
class ScaleIntent:
    policy_uid: str
    from_replicas: int
    to_replicas: int
    #: The decision's time as its status says it (``lastDecisionTime``: whole seconds).
    decided_at: float
    #: The plan state if the write happened, without its forecast records.
    state: PlanState

    @classmethod
    def of(cls, policy_uid: str, from_replicas: int, to_replicas: int, now: float,
           state: PlanState) -> ScaleIntent:
        decided = parse_time(rfc3339(now))
        assert decided is not None
        return cls(policy_uid, from_replicas, to_replicas, decided,
                   replace(state, records=Records()))

    def encode(self) -> str:
        state = self.state.to_dict()
        del state["forecasts"]
        return json.dumps({"policyUid": self.policy_uid, "from": self.from_replicas,
                           "to": self.to_replicas, "decidedAt": rfc3339(self.decided_at),
                           "planState": state}, separators=(",", ":"))

    @classmethod
    def decode(cls, text: str | None) -> ScaleIntent | None:
        """The intent in an annotation's ``text``; None without one, or (logged) when it
        cannot be read: the decision then plans from the status alone, as before intents."""
        if not text:
            return None
        try:
            data: Any = json.loads(text)
            from_, to = data["from"], data["to"]
            if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                       for n in (from_, to)):
                raise ValueError(f"replicas {from_!r} -> {to!r} are not counts")
            decided = parse_time(data["decidedAt"])
            if decided is None:
                raise ValueError("no decidedAt")
            state = PlanState.from_dict({**data["planState"], "forecasts": None})
            return cls(str(data["policyUid"]), from_, to, decided, state)
        except (ValueError, TypeError, KeyError, AttributeError, InvalidInputError) as exc:
            logger.warning("the Lease's %s annotation is unreadable (%s); planning from the "
                           "status alone", INTENT_ANNOTATION, exc)
            return None


def resumed_state(state: PlanState, intent: ScaleIntent | None, *, policy_uid: str | None,
                  current_replicas: int, decided_at: float | None) -> PlanState:
    """The state to plan from: the status's ``state`` (decided at ``decided_at``), or the
    state after a write the status does not know of: the policy's own, made after that
    decision, from the count the status remembers to the one the target has now. A write
    that was refused or never made leaves the target at the count it started from, and a
    status written after it is as new as the intent: either way the status's state stands.
    The forecast records are the status's (the ones learnt since are learnt again)."""
    if intent is None or policy_uid is None or intent.policy_uid != policy_uid:
        return state
    if intent.to_replicas != current_replicas or \
            state.replicas not in (intent.from_replicas, None):
        return state
    if decided_at is not None and decided_at >= intent.decided_at:
        return state
    return replace(intent.state, records=state.records)
