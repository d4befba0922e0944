"""Replicas that share the work (membership Leases + bounded-load rendezvous assignment),
against the in-memory API: each replica reads and fits only its share, a departing
replica's targets move at once on SIGTERM and within a Lease duration after a crash."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forescale.controller.kube import KubeError
from forescale.controller.lease import lease_name, live_holder
from forescale.controller.membership import Membership, assign, shares
from forescale.controller.metrics import OperatorMetrics
from forescale.controller.settings import ControllerSettings
from forescale.controller.worker import Controller
from tests.unit.fakes import FakeKube, FakeSource

NS, LEASES = "shop", "forescale"
T0 = 1_700_000_040.0
PERIOD = 30


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def policy(i: int) -> dict[str, Any]:
    return {"metadata": {"namespace": NS, "name": f"p{i}", "uid": f"uid-{i}"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                        "name": f"web{i}"},
                     "metrics": {"query": "q"}, "serviceRatePerReplica": 10,
                     "decisionPeriodSeconds": PERIOD,
                     "forecast": {"models": ["ma"], "historySeconds": 3600}}}


class Replica:
    def __init__(self, identity: str, kube: FakeKube, clock: Clock) -> None:
        self.source = FakeSource(50.0)
        self.controller = Controller(
            ControllerSettings(identity=identity, prometheus_url="http://prom:9090",
                               lease_namespace=LEASES, lease_extra_seconds=5),
            kube, OperatorMetrics(), clock=clock, sources=lambda url: self.source)
        self.identity = identity

    def reads(self) -> int:
        calls, self.source.calls = self.source.calls, 0
        return calls


def cluster(n: int, replicas: list[str]) -> tuple[FakeKube, Clock, list[Replica]]:
    kube, clock = FakeKube(), Clock()
    for i in range(n):
        kube.replicas[NS, f"web{i}"] = 1
    return kube, clock, [Replica(r, kube, clock) for r in replicas]


def period(kube: FakeKube, clock: Clock, replicas: list[Replica], n: int, *,
           observe: frozenset[int] = frozenset(),
           unseen: dict[str, frozenset[int]] | None = None) -> None:
    """One decision period: every replica's heartbeat and one cycle of every policy (those
    in ``observe`` in Observe mode; none of ``unseen[identity]`` for that replica)."""
    clock.now += PERIOD
    for replica in replicas:
        replica.controller.heartbeat()
    for replica in replicas:
        for i in range(n):
            if i in (unseen or {}).get(replica.identity, frozenset()):
                continue
            body = {**copy.deepcopy(policy(i)), "status": kube.statuses.get((NS, f"p{i}"), {})}
            if i in observe:
                body["spec"]["mode"] = "Observe"
            replica.controller.cycle(body)


def holders(kube: FakeKube) -> dict[str, int]:
    out: dict[str, int] = {}
    for (ns, name), lease in kube.leases.items():
        if ns == LEASES and name.startswith("forescale-shop."):
            holder = lease["spec"]["holderIdentity"]
            out[holder] = out.get(holder, 0) + 1
    return out


def test_two_replicas_each_do_half_the_work() -> None:
    n = 20
    kube, clock, (a, b) = cluster(n, ["op-a", "op-b"])
    for _ in range(3):  # join, settle
        period(kube, clock, [a, b], n)
    a.reads(), b.reads()
    period(kube, clock, [a, b], n)
    assert holders(kube) == {"op-a": 10, "op-b": 10}
    # Each replica read (and fitted) only its own targets: half of the work each.
    assert (a.reads(), b.reads()) == (10, 10)
    # Every policy has one status, written by its Lease holder.
    assert {s["decidedBy"] for s in kube.statuses.values()} == {"op-a", "op-b"}


def test_observed_policies_are_read_and_reported_once() -> None:
    """Observe mode takes no Lease, yet a second replica must not read Prometheus for it
    too, nor write its status in turn: the replica its target is assigned to does; the
    other stands by, and takes over when that one stops reporting."""
    n = 8
    everything = frozenset(range(n))
    kube, clock, (a, b) = cluster(n, ["op-a", "op-b"])
    for _ in range(3):
        period(kube, clock, [a, b], n, observe=everything)
    a.reads(), b.reads()
    writers = {i: kube.statuses[NS, f"p{i}"]["decidedBy"] for i in range(n)}
    for _ in range(3):
        period(kube, clock, [a, b], n, observe=everything)
        assert {i: kube.statuses[NS, f"p{i}"]["decidedBy"] for i in range(n)} == writers
    assert a.reads() + b.reads() == 3 * n
    assert set(writers.values()) == {"op-a", "op-b"}
    assert all(kube.statuses[NS, f"p{i}"]["conditions"] for i in range(n))
    reasons = {c["reason"] for i in range(n) for c in kube.statuses[NS, f"p{i}"]["conditions"]
               if c["type"] == "ScalingActive"}
    assert reasons == {"ObserveMode"}
    # op-b stops seeing its policies (a namespace it no longer watches): op-a reports them
    # once their status is two Lease durations old.
    unseen = {"op-b": frozenset(i for i, w in writers.items() if w == "op-b")}
    for _ in range(math.ceil(2 * (2 * PERIOD + 5) / PERIOD) + 1):
        period(kube, clock, [a, b], n, observe=everything, unseen=unseen)
    assert {kube.statuses[NS, f"p{i}"]["decidedBy"] for i in range(n)} == {"op-a"}


def test_a_replica_stopping_hands_over_at_once() -> None:
    n = 10
    kube, clock, (a, b) = cluster(n, ["op-a", "op-b"])
    for _ in range(3):
        period(kube, clock, [a, b], n)
    assert holders(kube) == {"op-a": 5, "op-b": 5}
    released = b.controller.release_all()  # SIGTERM: a rolling update
    assert released == 5
    clock.now += 3  # past the membership cache, well within a period
    a.reads()
    period(kube, clock, [a], n)
    # The very next period: op-a holds and decides every target; no period is lost.
    assert holders(kube) == {"op-a": 10}
    assert a.reads() == n


def test_a_crashed_replica_is_replaced_within_a_lease_duration() -> None:
    n = 10
    kube, clock, (a, b) = cluster(n, ["op-a", "op-b"])
    for _ in range(3):
        period(kube, clock, [a, b], n)
    duration = 2 * PERIOD + 5
    # op-b dies: no release, no heartbeat. Its Leases expire after `duration`.
    periods = 0
    while holders(kube).get("op-a", 0) < n:
        period(kube, clock, [a], n)
        periods += 1
        assert periods <= math.ceil(duration / PERIOD) + 1
    assert holders(kube) == {"op-a": n}


def test_a_joining_replica_takes_its_share_from_the_others() -> None:
    n = 12
    kube, clock, (a, b) = cluster(n, ["op-a", "op-b"])
    period(kube, clock, [a], n)
    assert holders(kube) == {"op-a": n}
    for _ in range(3):
        period(kube, clock, [a, b], n)
    assert holders(kube) == {"op-a": 6, "op-b": 6}


@given(targets=st.sets(st.text(min_size=1, max_size=20), max_size=200),
       members=st.sets(st.text(min_size=1, max_size=10), min_size=1, max_size=7))
def test_assignment_is_fair_and_agreed(targets: set[str], members: set[str]) -> None:
    mapping = assign(list(targets), list(members))
    assert set(mapping) == targets
    cap = math.ceil(len(targets) / len(members))
    assert max(shares(list(targets), list(members)).values()) <= cap
    # Every replica computes the same answer whatever order it saw things in.
    assert assign(sorted(targets, reverse=True), sorted(members, reverse=True)) == mapping


def test_a_join_moves_few_targets() -> None:
    targets = [f"t{i}" for i in range(300)]
    before = assign(targets, ["a", "b"])
    after = assign(targets, ["a", "b", "c"])
    moved = sum(before[t] != after[t] for t in targets)
    assert moved <= 300 // 3 + 40  # about the newcomer's share, not a reshuffle


def test_without_a_view_of_the_others_a_replica_acts_alone() -> None:
    # No permission to list the membership Leases (an old Role): every cycle still decides,
    # first come first served, and the target Leases keep each target exclusive.
    n = 4
    kube, clock, (a,) = cluster(n, ["op-a"])

    def forbidden(namespace: str, *, label_selector: str) -> list[Any]:
        raise KubeError(403, "Forbidden", "leases is forbidden")

    kube.list_leases = forbidden  # type: ignore[method-assign]
    period(kube, clock, [a], n)
    assert holders(kube) == {"op-a": n}


def target_lease(i: int) -> str:
    return lease_name("Deployment", f"web{i}", namespace=NS)


def diverging(views: str) -> tuple[int, int, int]:
    """(policies n, policy x, target t != x) such that op-a, counting x's target, assigns
    t to op-b while op-b, not counting it, assigns t to op-a: a view of the targets that
    depends on x makes t nobody's."""
    for n in range(2, 20):
        for x in range(n):
            full = [target_lease(i) for i in range(n)]
            with_x = assign(full, ["op-a", "op-b"])
            without_x = assign([t for t in full if t != target_lease(x)], ["op-a", "op-b"])
            for t in range(n):
                if t != x and with_x[target_lease(t)] == "op-b" and \
                        without_x[target_lease(t)] == "op-a":
                    return n, x, t
    raise AssertionError(f"no diverging configuration for {views}")


def live_holders(kube: FakeKube, clock: Clock, n: int) -> dict[int, str | None]:
    out: dict[int, str | None] = {}
    for i in range(n):
        lease = kube.leases.get((LEASES, target_lease(i)))
        out[i] = None if lease is None else live_holder(lease, clock.now)
    return out


@pytest.mark.parametrize("change", ["Observe", "TargetDeleted"])
def test_a_restarted_replica_counts_the_targets_it_cannot_act_on(change: str) -> None:
    # Policy x goes to Observe mode (or its Deployment is deleted): no replica takes its
    # Lease any more. Then op-b restarts. Both replicas must still count x's target when
    # they share the others, or some live target t is op-b's in op-a's view and op-a's in
    # op-b's view: nobody would ever scale it nor write its status.
    n, x, t = diverging("a policy that reaches no Lease")
    kube, clock, (a, b) = cluster(n, ["op-a", "op-b"])
    for _ in range(3):
        period(kube, clock, [a, b], n)
    assert live_holders(kube, clock, n)[t] == "op-b"
    observe = frozenset({x}) if change == "Observe" else frozenset()
    if change == "TargetDeleted":
        del kube.replicas[NS, f"web{x}"]
    period(kube, clock, [a, b], n, observe=observe)
    b.controller.release_all()  # a rolling update restarts op-b
    b = Replica("op-b", kube, clock)
    for _ in range(math.ceil((2 * PERIOD + 5) / PERIOD) + 2):
        period(kube, clock, [a, b], n, observe=observe)
    holders_now = live_holders(kube, clock, n)
    assert all(holders_now[i] in ("op-a", "op-b") for i in range(n) if i != x), holders_now
    assert kube.statuses[NS, f"p{t}"]["decidedBy"] == holders_now[t]
    assert kube.statuses[NS, f"p{t}"]["lastDecisionTime"] is not None


def test_a_target_left_without_an_owner_is_taken_by_a_replica_that_sees_it() -> None:
    # The replicas see different policies for good (op-b does not watch x's namespace, say):
    # their assignments disagree and t is nobody's. A replica that has seen t's Lease free
    # for two Lease durations takes it anyway, and keeps it (no hand-over flapping); the
    # Lease still lets only one of them scale.
    n, x, _ = diverging("replicas that see different policies")
    kube, clock, (a, b) = cluster(n, ["op-a", "op-b"])
    unseen = {"op-b": frozenset({x})}
    duration = 2 * PERIOD + 5
    for _ in range(3):  # settle: each replica has seen its policies and the other replica
        period(kube, clock, [a, b], n, unseen=unseen)
    periods = 0
    while not all(live_holders(kube, clock, n).values()):
        period(kube, clock, [a, b], n, unseen=unseen)
        periods += 1
        assert periods <= math.ceil(3 * duration / PERIOD) + 2, live_holders(kube, clock, n)
    held = live_holders(kube, clock, n)
    for _ in range(5):  # and it stays put
        period(kube, clock, [a, b], n, unseen=unseen)
        assert live_holders(kube, clock, n) == held


def test_replicas_that_agree_never_take_each_others_targets() -> None:
    # The safety net is for views that differ: replicas that agree (here one joins late, so
    # targets are handed over) hold exactly their assignment, however long they run.
    n = 10
    kube, clock, (a, b) = cluster(n, ["op-a", "op-b"])
    period(kube, clock, [a], n)
    expected = assign([target_lease(i) for i in range(n)], ["op-a", "op-b"])
    for p in range(15):
        period(kube, clock, [a, b], n)
        if p >= 2:
            assert live_holders(kube, clock, n) == {
                i: expected[target_lease(i)] for i in range(n)}


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 7), replicas=st.integers(2, 3), data=st.data())
def test_after_a_restart_every_live_target_has_one_owner(n: int, replicas: int,
                                                          data: st.DataObject) -> None:
    # Any policies gone to Observe mode or lost their Deployment, any replica restarted:
    # within a Lease duration (and before the safety net could act) every policy that can
    # be scaled has its target's Lease held, and the replicas agree on who holds it.
    names = [f"op-{c}" for c in "abc"[:replicas]]
    kube, clock, group = cluster(n, names)
    for _ in range(3):
        period(kube, clock, group, n)
    observe = frozenset(data.draw(st.sets(st.integers(0, n - 1)), label="observe"))
    deleted = data.draw(st.sets(st.integers(0, n - 1)), label="deleted")
    for i in deleted:
        del kube.replicas[NS, f"web{i}"]
    period(kube, clock, group, n, observe=observe)
    restarted = data.draw(st.integers(0, replicas - 1), label="restarted")
    group[restarted].controller.release_all()
    group[restarted] = Replica(names[restarted], kube, clock)
    for _ in range(math.ceil((2 * PERIOD + 5) / PERIOD) + 1):
        period(kube, clock, group, n, observe=observe)
    held = live_holders(kube, clock, n)
    live = [i for i in range(n) if i not in observe and i not in deleted]
    assert all(held[i] in names for i in live), (held, live)


def test_a_clock_stepped_back_does_not_freeze_the_view_of_the_replicas() -> None:
    kube, clock = FakeKube(), Clock()
    a = Membership(kube, identity="op-a", namespace=LEASES)
    b = Membership(kube, identity="op-b", namespace=LEASES)
    a.heartbeat(clock.now)
    assert a.members(clock.now) == ["op-a"]
    clock.now -= 3600  # NTP steps the clock back an hour; op-b joins
    b.heartbeat(clock.now)
    assert a.members(clock.now) == ["op-a", "op-b"]  # listed again, not "fresh" for an hour


def test_a_replica_that_hands_a_target_over_stops_exporting_its_series() -> None:
    """A replica that stood by for a policy another replica now reports exports none of its
    series: the values it last had would stay frozen beside the holder's (an alert on
    forescale_condition or the replicas would fire on the stale copy for ever)."""
    n = 12
    kube, clock, (a, b) = cluster(n, ["op-a", "op-b"])
    period(kube, clock, [a], n)
    for _ in range(3):
        period(kube, clock, [a, b], n)
    for replica in (a, b):
        registry = replica.controller.metrics.registry
        exported = {s.labels["policy"] for m in registry.collect() for s in m.samples
                    if s.name.startswith("forescale_") and "policy" in s.labels}
        reported = {f"p{i}" for i in range(n)
                    if kube.statuses[NS, f"p{i}"]["decidedBy"] == replica.identity}
        assert len(reported) == n // 2
        assert exported == reported, replica.identity


def test_lease_names_do_not_collide_across_namespaces() -> None:
    """With dashes only, namespace x's target y-deployment-z and namespace x-deployment-y's
    target z shared a Lease: one tenant could stop the other's scaling for good."""
    assert lease_name("Deployment", "y-deployment-z", namespace="x") != \
        lease_name("Deployment", "z", namespace="x-deployment-y")
    assert lease_name("Deployment", "web", namespace="shop") == "forescale-shop.deployment-web"
    assert lease_name("Deployment", "web") == "forescale-deployment-web"


def test_two_releases_in_one_namespace_are_two_groups_of_replicas() -> None:
    """Each release's pods counted the other's as members (one label for all): the targets
    assigned to a pod that never sees their policies (it watches other namespaces) went
    unscaled for minutes."""
    kube, clock = FakeKube(), Clock()
    team_a = [Membership(kube, identity=f"a-{i}", namespace=LEASES, group="team-a-forescale")
              for i in range(2)]
    team_b = Membership(kube, identity="b-0", namespace=LEASES, group="team-b-forescale")
    for member in (*team_a, team_b):
        member.heartbeat(clock.now)
    assert team_a[0].members(clock.now) == ["a-0", "a-1"]
    assert team_b.members(clock.now) == ["b-0"]
    targets = frozenset({lease_name("Deployment", f"web{i}", namespace=NS) for i in range(8)})
    owners = {team_a[0].assigned(t, targets, clock.now) for t in targets}
    assert owners == {"a-0", "a-1"}


def test_membership_leases_of_departed_pods_are_collected() -> None:
    """Every rollout left one membership Lease per old pod, listed every 2 s for ever."""
    from forescale.controller.membership import STALE_MEMBERSHIP_SECONDS, membership_lease_name

    kube, clock = FakeKube(), Clock()
    old = Membership(kube, identity="old-pod", namespace=LEASES, group="g")
    new = Membership(kube, identity="new-pod", namespace=LEASES, group="g",
                     refresh_seconds=0.0)
    old.heartbeat(clock.now)  # then the pod is gone (killed: no leave())
    new.heartbeat(clock.now)
    clock.now += 60
    assert new.members(clock.now) == ["new-pod"]
    assert (LEASES, membership_lease_name("old-pod")) in kube.leases  # expired, kept a while
    clock.now += STALE_MEMBERSHIP_SECONDS
    new.heartbeat(clock.now)
    assert new.members(clock.now) == ["new-pod"]
    assert (LEASES, membership_lease_name("old-pod")) not in kube.leases
    assert (LEASES, membership_lease_name("new-pod")) in kube.leases
