"""Replicas that share the work: each live replica keeps a membership Lease, and every
target is assigned to exactly one live replica.

Every replica runs a daemon for every policy, so every replica knows the same targets and,
from the membership Leases, the same live replicas: each computes the same assignment
without talking to the others. The assignment is rendezvous (highest random weight)
hashing with bounded loads: targets, in a fixed order, go to the highest-ranked replica
that has fewer than ceil(targets / replicas) — no replica takes more than its fair share
(rounded up), and a join or a departure moves few targets, so fitted models stay warm.

Only the assigned replica takes a free target Lease; a replica that holds a target it is
no longer assigned (a new replica joined) hands it over by releasing it. When a replica
leaves — its membership Lease is deleted on SIGTERM, or expires when it dies — its targets
fall to the others: at once after a release, within a target Lease's duration after a
crash. While two replicas briefly disagree (one has not seen a new policy yet), the target
Lease still lets only one of them scale.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from collections.abc import Mapping
from typing import Protocol

from forescale.controller.kube import JSON, KubeError
from forescale.controller.lease import LeaseApi, LeaseLock, expiry, live_holder

logger = logging.getLogger("forescale.controller")

#: The label that makes a Lease a replica's membership.
COMPONENT_LABEL = ("app.kubernetes.io/component", "forescale-replica")
#: The label naming the group of replicas that share targets (one Helm release): two
#: releases in one namespace counted each other's pods as members, and the targets
#: assigned to a pod that never sees their policies went unscaled.
GROUP_LABEL = "forescale.dev/replica-group"
#: A membership Lease expired this long ago is deleted by the replica that lists it: every
#: rollout leaves one per old pod, which the listings every few seconds would carry for ever.
STALE_MEMBERSHIP_SECONDS = 3600.0


class MembershipApi(LeaseApi, Protocol):
    def list_leases(self, namespace: str, *, label_selector: str) -> list[JSON]: ...


def _rank(target: str, members: list[str]) -> list[str]:
    return sorted(members, key=lambda m: hashlib.sha256(f"{m}\0{target}".encode()).digest(),
                  reverse=True)


def assign(targets: list[str], members: list[str]) -> dict[str, str]:
    """target → member: rendezvous hashing with loads bounded by ceil(targets / members).
    Deterministic in the two sets (order of the arguments does not matter)."""
    if not members:
        return {}
    members = sorted(set(members))
    unique = sorted(set(targets), key=lambda t: hashlib.sha256(t.encode()).digest())
    cap = -(-len(unique) // len(members))
    load = dict.fromkeys(members, 0)
    out: dict[str, str] = {}
    for target in unique:
        for member in _rank(target, members):
            if load[member] < cap:
                out[target] = member
                load[member] += 1
                break
    return out


def membership_lease_name(identity: str) -> str:
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    return f"forescale-replica-{digest}"


class Membership:
    """This replica's membership and its view of the others. ``ttl_seconds`` is how long a
    replica that stopped renewing still counts (renewed every ``ttl_seconds / 3``)."""

    def __init__(self, kube: MembershipApi, *, identity: str, namespace: str,
                 group: str = "default", ttl_seconds: int = 15,
                 refresh_seconds: float = 2.0) -> None:
        self._kube = kube
        self.group = group
        self._lock_api = LeaseLock(kube, identity=identity)
        self.identity = identity
        self.namespace = namespace
        self.ttl_seconds = ttl_seconds
        self.refresh_seconds = refresh_seconds
        self._members: list[str] = [identity]
        self._listed_at: float | None = None
        self._assignment: tuple[frozenset[str], tuple[str, ...], dict[str, str]] | None = None
        self._lock = threading.Lock()

    def heartbeat(self, now: float) -> None:
        """Renew this replica's membership Lease (from a timer, a few times per TTL)."""
        self._lock_api.ensure(self.namespace, membership_lease_name(self.identity),
                              policy=f"replica:{self.identity}", duration=self.ttl_seconds,
                              now=now, labels={COMPONENT_LABEL[0]: COMPONENT_LABEL[1],
                                               GROUP_LABEL: self.group})

    def leave(self) -> None:
        """Delete the membership Lease: the others stop counting this replica at once."""
        with contextlib.suppress(KubeError):  # else it expires within the TTL anyway
            self._lock_api.release(self.namespace, membership_lease_name(self.identity),
                                   policy=f"replica:{self.identity}")

    def members(self, now: float) -> list[str]:
        """The live replicas (this one always among them), listed at most every
        ``refresh_seconds``: a thousand policies must not mean a thousand LISTs a period."""
        with self._lock:
            # A clock stepped back (now before the listing) is no reason to trust it.
            fresh = self._listed_at is not None and \
                0 <= now - self._listed_at < self.refresh_seconds
            if fresh:
                return list(self._members)
        selector = f"{'='.join(COMPONENT_LABEL)},{GROUP_LABEL}={self.group}"
        try:
            leases = self._kube.list_leases(self.namespace, label_selector=selector)
        except KubeError as exc:
            # Without a view of the others, act as if alone: every free target is taken by
            # whoever comes first and the target Leases still keep each one exclusive.
            logger.warning("cannot list the replicas' membership leases: %s", exc)
            with self._lock:
                self._members, self._listed_at = [self.identity], now
            return [self.identity]
        alive = {h for lease in leases if (h := live_holder(lease, now)) is not None}
        alive.add(self.identity)
        self._collect(leases, now)
        members = sorted(alive)
        with self._lock:
            self._members, self._listed_at = members, now
        return members

    def _collect(self, leases: list[JSON], now: float) -> None:
        """Delete the membership Leases expired for :data:`STALE_MEMBERSHIP_SECONDS` (a
        departed pod's; one that comes back makes its own again). The resourceVersion
        precondition leaves one renewed meanwhile alone; a failure is tried next listing."""
        for lease in leases:
            until = expiry(lease)
            if until is None or now - until < STALE_MEMBERSHIP_SECONDS:
                continue
            with contextlib.suppress(KubeError):
                self._kube.delete_lease(lease)

    def assigned(self, target: str, targets: frozenset[str], now: float) -> str | None:
        """The replica ``target`` is assigned to, among ``targets`` (every target this
        replica knows, ``target`` included); recomputed only when either set changes."""
        members = tuple(self.members(now))
        with self._lock:
            cached = self._assignment
        if cached is None or cached[0] != targets or cached[1] != members:
            cached = (targets, members, assign(list(targets), list(members)))
            with self._lock:
                self._assignment = cached
        return cached[2].get(target)


def shares(targets: list[str], members: list[str]) -> Mapping[str, int]:
    """How many of ``targets`` each member is assigned (for tests and benchmarks)."""
    counts = dict.fromkeys(members, 0)
    for member in assign(targets, members).values():
        counts[member] += 1
    return counts
