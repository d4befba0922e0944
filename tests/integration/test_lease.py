"""lease.py over real HTTP against the session's real kube-apiserver (the emulator with
FORESCALE_TEST_API=emulator): fast, no subprocess. Each test has its own namespace."""

from __future__ import annotations

import pytest

from forescale.controller.intent import ScaleIntent
from forescale.controller.kube import Conflict, parse_time
from forescale.controller.lease import (
    INTENT_ANNOTATION,
    POLICY_ANNOTATION,
    lease_duration_seconds,
)
from forescale.core.plan import PlanState
from tests.integration.conftest import LeaseAPI
from tests.integration.conftest import lease_lock as lock

LEASES = "coordination.k8s.io/v1/leases"
NAME = "forescale-deployment-web"
T0 = 1_700_000_000.0


@pytest.fixture
def kube(lease_api: LeaseAPI) -> LeaseAPI:
    return lease_api


def stored(kube: LeaseAPI) -> dict:  # type: ignore[type-arg]
    lease = kube.get(LEASES, NAME, namespace=kube.ns)
    assert lease is not None
    return dict(lease)


def test_duration_is_longer_than_two_periods() -> None:
    assert lease_duration_seconds(5, 3) == 13
    assert lease_duration_seconds(30, 0.5) == 61


def test_acquire_creates_the_lease(kube: LeaseAPI) -> None:
    a = lock(kube, "a")
    state = a.ensure(kube.ns, NAME, policy="default/web", duration=13, now=T0)
    assert state.held and state.holder == "a" and "acquired" in state.message
    lease = stored(kube)
    assert lease["spec"]["holderIdentity"] == "a"
    assert lease["spec"]["leaseDurationSeconds"] == 13
    assert parse_time(lease["spec"]["renewTime"]) == pytest.approx(T0)
    assert lease["spec"]["leaseTransitions"] == 0
    assert lease["metadata"]["annotations"][POLICY_ANNOTATION] == "default/web"
    assert not a.taken_over(kube.ns, NAME, policy="default/web")
    assert a.taken_over(kube.ns, NAME, policy="default/other")  # another policy's now
    assert lock(kube, "b").taken_over(kube.ns, NAME, policy="default/web")


def test_a_renewal_always_moves_renew_time_and_the_resource_version(
        kube: LeaseAPI) -> None:
    a = lock(kube, "a")
    a.ensure(kube.ns, NAME, policy="default/web", duration=13, now=T0)
    before = stored(kube)
    for i in range(1, 4):
        state = a.ensure(kube.ns, NAME, policy="default/web", duration=13, now=T0 + i)
        assert state.held and "renewed" in state.message
        after = stored(kube)
        assert parse_time(after["spec"]["renewTime"]) == pytest.approx(T0 + i)
        assert after["metadata"]["resourceVersion"] != before["metadata"]["resourceVersion"]
        assert after["spec"]["acquireTime"] == before["spec"]["acquireTime"]
        assert after["spec"]["leaseTransitions"] == 0
        before = after


def test_a_live_lease_is_not_taken_over(kube: LeaseAPI) -> None:
    lock(kube, "a").ensure(kube.ns, NAME, policy="default/web", duration=13, now=T0)
    rv = stored(kube)["metadata"]["resourceVersion"]
    state = lock(kube, "b").ensure(kube.ns, NAME, policy="default/web", duration=13, now=T0 + 12)
    assert not state.held and state.holder == "a" and "held by a" in state.message
    assert stored(kube)["metadata"]["resourceVersion"] == rv  # not written


def test_an_expired_lease_is_taken_over(kube: LeaseAPI) -> None:
    lock(kube, "a").ensure(kube.ns, NAME, policy="default/web", duration=13, now=T0)
    b = lock(kube, "b")
    state = b.ensure(kube.ns, NAME, policy="default/web", duration=13, now=T0 + 13)
    assert state.held and "took over" in state.message
    spec = stored(kube)["spec"]
    assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] == 1
    assert parse_time(spec["acquireTime"]) == pytest.approx(T0 + 13)
    assert lock(kube, "a").taken_over(kube.ns, NAME, policy="default/web")
    assert not b.taken_over(kube.ns, NAME, policy="default/web")


def test_two_policies_in_one_process_do_not_share_a_lease(kube: LeaseAPI) -> None:
    a = lock(kube, "a")
    a.ensure(kube.ns, NAME, policy="default/web", duration=13, now=T0)
    state = a.ensure(kube.ns, NAME, policy="default/web-too", duration=13, now=T0 + 1)
    assert not state.held and "for policy default/web" in state.message


def test_a_stale_write_gets_409_and_is_not_the_holder(kube: LeaseAPI) -> None:
    a, b = lock(kube, "a"), lock(kube, "b")
    a.ensure(kube.ns, NAME, policy="default/web", duration=13, now=T0)
    seen = stored(kube)  # b reads the expired lease ...
    a.ensure(kube.ns, NAME, policy="default/web", duration=13, now=T0 + 13)  # ... a renews ...
    # ... and b's takeover, with the resourceVersion it read, loses.
    with pytest.raises(Conflict):
        b._kube.replace_lease(seen, {"holderIdentity": "b"})
    state = b._write(seen, T0 + 13, 13, "default/web", acquired=T0 + 13,
                     transitions=1, verb="took over")
    assert not state.held and "409" in state.message
    assert stored(kube)["spec"]["holderIdentity"] == "a"


def test_a_racing_create_is_not_the_holder(kube: LeaseAPI) -> None:
    a, b = lock(kube, "a"), lock(kube, "b")
    original = b._kube.get_lease
    # b looks first and sees no lease; a creates it before b does.
    b._kube.get_lease = lambda namespace, name: None  # type: ignore[method-assign]
    a.ensure(kube.ns, NAME, policy="default/web", duration=13, now=T0)
    state = b.ensure(kube.ns, NAME, policy="default/web", duration=13, now=T0)
    b._kube.get_lease = original  # type: ignore[method-assign]
    assert not state.held and "created the lease first" in state.message
    assert stored(kube)["spec"]["holderIdentity"] == "a"


def test_release_only_if_ours(kube: LeaseAPI) -> None:
    a, b = lock(kube, "a"), lock(kube, "b")
    assert not a.release(kube.ns, NAME, policy="default/web")  # nothing to release
    a.ensure(kube.ns, NAME, policy="default/web", duration=13, now=T0)
    assert not b.release(kube.ns, NAME, policy="default/web")  # another holder
    assert not a.release(kube.ns, NAME, policy="default/other")  # another policy's
    assert kube.get(LEASES, NAME, namespace=kube.ns) is not None
    assert a.release(kube.ns, NAME, policy="default/web")
    assert kube.get(LEASES, NAME, namespace=kube.ns) is None
    if kube.deletes is not None:
        assert kube.deletes() == [("a", 200)]


def test_the_scale_intent_outlives_renewals_and_a_takeover(kube: LeaseAPI) -> None:
    """The renewal before a /scale write records its intent; the renewals without one and
    a takeover keep it (the next holder must read it), and each call returns what it
    found (forescale.controller.intent)."""
    a, b = lock(kube, "a"), lock(kube, "b")
    first = ScaleIntent.of("uid-1", 3, 4, PlanState(scale_events=((T0, 1),),
                                                    last_scale_seconds=T0, replicas=4))
    state = a.ensure(kube.ns, NAME, policy="default/web", duration=13, now=T0,
                     intent=first.encode())
    assert state.held and state.intent is None
    assert a.ensure(kube.ns, NAME, policy="default/web", duration=13,
                    now=T0 + 5).intent == first.encode()
    taken = b.ensure(kube.ns, NAME, policy="default/web", duration=13, now=T0 + 20)
    assert taken.held and ScaleIntent.decode(taken.intent) == first
    second = ScaleIntent.of("uid-1", 4, 5, PlanState(replicas=5)).encode()
    assert b.ensure(kube.ns, NAME, policy="default/web", duration=13, now=T0 + 25,
                    intent=second).intent == first.encode()
    assert stored(kube)["metadata"]["annotations"][INTENT_ANNOTATION] == second
    # A handover (a shutdown, another replica's turn) keeps it: the Lease stays, unheld.
    assert b.release(kube.ns, NAME, policy="default/web", handover=True)
    released = stored(kube)
    assert "holderIdentity" not in released["spec"]
    assert released["metadata"]["annotations"][INTENT_ANNOTATION] == second
    taken = a.ensure(kube.ns, NAME, policy="default/web", duration=13, now=T0 + 26)
    assert taken.held and taken.intent == second
    assert stored(kube)["spec"]["leaseTransitions"] == 2
    # Released for good (the policy deleted), it goes; unheld, by whoever deletes it.
    assert a.release(kube.ns, NAME, policy="default/web")
    assert kube.get(LEASES, NAME, namespace=kube.ns) is None
    a.ensure(kube.ns, NAME, policy="default/web", duration=13, now=T0 + 30, intent=second)
    assert a.release(kube.ns, NAME, policy="default/web", handover=True)
    assert not b.release(kube.ns, NAME, policy="default/other")  # not its policy's
    assert b.release(kube.ns, NAME, policy="default/web")
    assert kube.get(LEASES, NAME, namespace=kube.ns) is None
