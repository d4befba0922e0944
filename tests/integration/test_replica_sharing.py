"""Two ``forescale run`` replicas with ``--lease-namespace`` share the targets: each holds
about half of the target Leases and decides those policies; on SIGTERM one hands all of its
targets to the other, which decides them within one decision period (a rolling update
loses no period)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.integration.conftest import World

pytestmark = pytest.mark.integration

LEASES = "coordination.k8s.io/v1/leases"
TARGETS = [f"web{i}" for i in range(6)]
PERIOD = 5


def _holders(world: World) -> dict[str, str]:
    """target → holder of its (shared-namespace) Lease."""
    out: dict[str, str] = {}
    for target in TARGETS:
        lease: dict[str, Any] | None = world.kube.get(
            LEASES, f"forescale-{world.namespace}.deployment-{target}",
            namespace=world.namespace)
        if lease is not None and lease["spec"].get("holderIdentity"):
            out[target] = lease["spec"]["holderIdentity"]
    return out


def _decided_by(world: World, name: str) -> tuple[str | None, str | None]:
    status = (world.get_policy(name) or {}).get("status") or {}
    return status.get("decidedBy"), status.get("lastDecisionTime")


def test_two_replicas_split_the_targets_and_a_sigterm_hands_over_at_once(
        world: World) -> None:
    for target in TARGETS:
        world.deployment(target, replicas=1)
        world.policy(target, target, decisionPeriodSeconds=PERIOD)
    a = world.start_operator("operator-a", "--lease-namespace", world.namespace)
    b = world.start_operator("operator-b", "--lease-namespace", world.namespace)

    def split() -> bool:
        holders = _holders(world)
        counts = [list(holders.values()).count(op) for op in ("operator-a", "operator-b")]
        return len(holders) == len(TARGETS) and counts == [3, 3]

    world.wait(split, timeout=90, what="the targets split 3/3 between the replicas")
    # Each policy is decided (and reported) by the replica that holds its target.
    holders = _holders(world)
    world.wait(lambda: all(_decided_by(world, t)[0] == holders[t] for t in TARGETS),
               what="every policy reported by its Lease holder")

    b.stop()  # SIGTERM: releases its Leases and its membership
    stopped = time.monotonic()
    world.wait(lambda: set(_holders(world).values()) == {"operator-a"}
               and len(_holders(world)) == len(TARGETS),
               timeout=30, what="operator-a holds every target")
    # Handed over at once: within a period (plus the membership cache and polling), not
    # after the Lease duration (2 x 5 + 3 = 13 s) that a crash would cost.
    assert time.monotonic() - stopped < PERIOD + 5
    assert a.process.poll() is None
