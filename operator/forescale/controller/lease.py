"""A coordination.k8s.io/v1 Lease per scale target: whoever holds it may scale the target.

Every write carries the resourceVersion it read, so of two racers exactly one wins and the
other gets 409 and is not the holder. Expiry is ``renewTime`` plus the duration read
against the reader's clock, so the replicas' clocks must agree to within the Lease's margin
(docs/operator.md). A renewal always moves ``renewTime`` forward (on a clock that does
not step back): a
write that changes nothing keeps its resourceVersion on a real apiserver, so a renewal that
did not change the object would prove nothing. One lease serves one policy: the holder is
``--identity`` and the annotation names the policy, so two policies on one target (even in
one operator process) never both scale it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Protocol

from forescale.controller.kube import JSON, Conflict, parse_time, rfc3339_micro

POLICY_ANNOTATION = "forescale.dev/policy"
#: What the write a renewal allows is about to do (forescale.controller.intent).
INTENT_ANNOTATION = "forescale.dev/scale-intent"


def lease_name(kind: str, name: str, *, namespace: str | None = None) -> str:
    """Named after the target, e.g. ``forescale-deployment-web`` (a valid object name).

    With ``namespace`` (Leases kept in the operator's own namespace, ``--lease-namespace``)
    the target's namespace is part of the name: ``forescale-shop.deployment-web``. The dot
    ends the namespace (a namespace has none) and the kind ends at the next dash (a kind has
    none), so no two targets share a name: with a dash, namespace ``x``'s ``y-deployment-z``
    and namespace ``x-deployment-y``'s ``z`` did, and one tenant could hold the other's
    target. A name that would be longer than an object name may be ends in a hash of the
    whole."""
    full = f"forescale-{kind.lower()}-{name}" if namespace is None else \
        f"forescale-{namespace}.{kind.lower()}-{name}"
    if len(full) <= 253:
        return full.rstrip("-.")
    digest = hashlib.sha256(full.encode()).hexdigest()[:16]
    return f"{full[:236].rstrip('-.')}-{digest}"


def lease_duration_seconds(period_seconds: float, extra_seconds: float) -> int:
    """Longer than a period: a holder renews every period, and a missed renewal (a slow
    Prometheus, a slow fit) must not hand the target over while the holder is alive."""
    return math.ceil(2 * period_seconds + extra_seconds)


@dataclass(frozen=True)
class LeaseState:
    held: bool
    holder: str | None
    message: str
    #: The Lease's scale intent as read, before this call wrote its own (None: none).
    intent: str | None = None


class LeaseApi(Protocol):
    """The Lease calls of :class:`~forescale.controller.kube.KubeClient` (or a fake)."""

    def get_lease(self, namespace: str, name: str) -> JSON | None: ...
    def create_lease(self, namespace: str, name: str, spec: JSON, *,
                     labels: Mapping[str, str], annotations: Mapping[str, str]) -> JSON: ...
    def replace_lease(self, lease: JSON, spec: JSON) -> JSON: ...
    def delete_lease(self, lease: JSON) -> None: ...


class LeaseLock:
    def __init__(self, kube: LeaseApi, *, identity: str) -> None:
        self._kube = kube
        self.identity = identity

    def _spec(self, now: float, duration: int, *, acquired: float,
              transitions: int) -> JSON:
        return {"holderIdentity": self.identity, "leaseDurationSeconds": duration,
                "acquireTime": rfc3339_micro(acquired), "renewTime": rfc3339_micro(now),
                "leaseTransitions": transitions}

    def ensure(self, namespace: str, name: str, *, policy: str, duration: int,
               now: float, labels: Mapping[str, str] | None = None,
               intent: str | None = None) -> LeaseState:
        """Acquire, renew or take over the lease; ``held`` says whether we hold it now.
        ``intent``: the write this renewal allows, recorded with it (the renewal right
        before a /scale write); the state returned carries the intent read before it."""
        lease = self._kube.get_lease(namespace, name)
        if lease is None:
            own = {POLICY_ANNOTATION: policy, **({INTENT_ANNOTATION: intent} if intent else {})}
            try:
                self._kube.create_lease(namespace, name,
                                        self._spec(now, duration, acquired=now, transitions=0),
                                        labels={"app.kubernetes.io/managed-by": "forescale",
                                                **(labels or {})},
                                        annotations=own)
            except Conflict:
                return LeaseState(False, None, "another operator created the lease first")
            return LeaseState(True, self.identity, f"acquired lease {namespace}/{name}")
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        annotations = (lease.get("metadata") or {}).get("annotations") or {}
        owner = annotations.get(POLICY_ANNOTATION)
        found = annotations.get(INTENT_ANNOTATION)
        acquired = parse_time(spec.get("acquireTime")) or now
        transitions = int(spec.get("leaseTransitions") or 0)
        if holder == self.identity and owner in (policy, None):
            state = self._write(lease, now, duration, policy, acquired=acquired,
                                transitions=transitions, verb="renewed", intent=intent)
            return replace(state, intent=found)
        until = expiry(lease)
        if holder and until is not None and now < until:
            who = holder if holder != self.identity else f"{holder} for policy {owner}"
            return LeaseState(False, holder, f"lease {namespace}/{name} is held by {who} "
                                             f"until {rfc3339_micro(until)}")
        state = self._write(lease, now, duration, policy, acquired=now,
                            transitions=transitions + 1, verb="took over", intent=intent)
        return replace(state, intent=found)

    def _write(self, lease: JSON, now: float, duration: int, policy: str, *,
               acquired: float, transitions: int, verb: str,
               intent: str | None = None) -> LeaseState:
        lease = dict(lease)
        meta = dict(lease.get("metadata") or {})
        meta["annotations"] = {**(meta.get("annotations") or {}), POLICY_ANNOTATION: policy,
                               **({INTENT_ANNOTATION: intent} if intent else {})}
        lease["metadata"] = meta
        try:
            self._kube.replace_lease(lease, self._spec(now, duration, acquired=acquired,
                                                       transitions=transitions))
        except Conflict:
            return LeaseState(False, None, "lost a race for the lease (409 Conflict)")
        return LeaseState(True, self.identity, f"{verb} lease {meta.get('namespace')}/"
                                               f"{meta.get('name')}")

    def peek(self, namespace: str, name: str, *, now: float) -> str | None:
        """Who holds a live lease right now (None: nobody, or it expired)."""
        lease = self._kube.get_lease(namespace, name)
        return None if lease is None else live_holder(lease, now)

    def taken_over(self, namespace: str, name: str, *, policy: str) -> bool:
        """Whether the lease this process held for ``policy`` now names another holder (or
        another policy): someone else may have scaled and reported since, so what this
        process planned before must not be reported. A lease that expired but still names
        us has not been taken over: nobody else has acted under it."""
        lease = self._kube.get_lease(namespace, name)
        if lease is None:
            return False
        spec = lease.get("spec") or {}
        owner = ((lease.get("metadata") or {}).get("annotations") or {}).get(POLICY_ANNOTATION)
        return not (spec.get("holderIdentity") == self.identity and owner in (policy, None))

    def release(self, namespace: str, name: str, *, policy: str,
                handover: bool = False) -> bool:
        """Give the lease up if it is ours (resourceVersion precondition); True if done.
        Deleted, unless ``handover`` (a shutdown, or another replica's turn) and it records
        a scale intent: the next holder must read it, so the lease stays, with no holder
        (anyone may take it at once, as client-go's leader election releases). An unheld
        lease of ``policy`` is deleted by whoever releases it for good (the policy is gone:
        its intent with it)."""
        lease = self._kube.get_lease(namespace, name)
        if lease is None:
            return False
        spec = lease.get("spec") or {}
        annotations = (lease.get("metadata") or {}).get("annotations") or {}
        owner = annotations.get(POLICY_ANNOTATION)
        holder = spec.get("holderIdentity")
        ours = holder == self.identity and owner in (policy, None)
        if not (ours or (not holder and owner == policy and not handover)):
            return False
        try:
            if handover and annotations.get(INTENT_ANNOTATION):
                self._kube.replace_lease(lease, {
                    "leaseTransitions": int(spec.get("leaseTransitions") or 0)})
            else:
                self._kube.delete_lease(lease)
        except Conflict:
            return False
        return True


def expiry(lease: JSON) -> float | None:
    """When ``lease`` expires: its last renewal plus its duration (None: never renewed)."""
    spec = lease.get("spec") or {}
    renewed = parse_time(spec.get("renewTime"))
    return None if renewed is None else renewed + float(spec.get("leaseDurationSeconds") or 0)


def live_holder(lease: JSON, now: float) -> str | None:
    """The holder of ``lease`` if its last renewal is younger than its duration."""
    holder = (lease.get("spec") or {}).get("holderIdentity")
    until = expiry(lease)
    if not holder or until is None or now >= until:
        return None
    return str(holder)
