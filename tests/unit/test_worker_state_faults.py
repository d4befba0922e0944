"""The worker's state across faults: whatever fails between a /scale write and its status
(the status write, the /scale answer, the Lease, the clock), the next cycle plans from the
state after the write, so that no rate limit, stabilisation window or cooldown is granted
twice, and no replica overwrites the state of the one that holds the Lease now."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Any

import pytest

from forescale.controller.intent import intent_key
from forescale.controller.kube import Conflict, KubeError, NotFound
from forescale.controller.lease import INTENT_ANNOTATION, LeaseLock, lease_name
from forescale.controller.membership import assign
from forescale.controller.metrics import OperatorMetrics
from forescale.controller.settings import ControllerSettings
from forescale.controller.status import merge_patch, rfc3339
from forescale.controller.worker import Controller
from tests.unit.fakes import FakeKube, FakeSource
from tests.unit.test_worker_cycle import (
    LEASE,
    NS,
    T0,
    Clock,
    GatedKube,
    conditions,
    policy,
    setup,
    with_status,
)

#: One pod per 600 s: any second scale-up within a test is a rate limit granted twice.
RATE_LIMITED = {"scaleUp": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 600}]}}
#: One pod per 100 s, for the handover tests (Lease duration 75 s).
PER_100S = {"scaleUp": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 100}]}}


def rate_limited(behavior: dict[str, Any] = RATE_LIMITED) -> dict[str, Any]:
    body = policy(behavior=behavior)
    body["metadata"]["uid"] = "uid-1"
    return body


# -- the status write fails after the /scale write ------------------------------------------


def test_a_lost_status_after_a_clock_step_back_does_not_scale_twice() -> None:
    """The stored status looks newer than the retry's (the clock was an hour fast, then
    stepped back): the retry still plans from the state this process wrote last."""
    controller, kube, _, clock = setup(rate=100.0)
    body = rate_limited()
    paused = copy.deepcopy(body)
    paused["metadata"]["annotations"] = {"forescale.dev/paused": "true"}
    clock.now = T0 + 3600
    controller.cycle(paused)  # status written at T0+3600, nothing scaled
    assert kube.scale_writes == []
    stale = with_status(body, kube)  # kopf's view from now on: the paused status
    clock.now = T0  # NTP steps back an hour; unpaused; the status write after the scale fails
    kube.fail_status_patches = 1
    controller.cycle(stale)
    assert kube.scale_writes == [(NS, "web", 3)]
    clock.now += controller.settings.retry_seconds
    controller.cycle(stale)  # the retry; kopf's body still has the paused status
    assert kube.scale_writes == [(NS, "web", 3)]
    assert [e[1] for e in kube.events].count("ScaledUp") == 1


def test_a_status_written_by_someone_else_since_is_the_one_planned_from() -> None:
    """Once kopf's view changes from the one this process planned from, the stored status
    is newer than anything remembered (another replica wrote it): it wins."""
    controller, kube, _, clock = setup(rate=100.0)
    body = rate_limited()
    controller.cycle(body)
    theirs = with_status(body, kube)
    theirs["status"]["planState"]["replicas"] = 7  # another writer's state
    clock.now += 30
    assert controller.previous_status(theirs)["planState"]["replicas"] == 7
    assert controller.previous_status(body)["planState"]["replicas"] == 3  # ours, unseen


@pytest.mark.parametrize("fault", ["invalid annotation", "decision failed"])
def test_a_lost_status_without_a_plan_keeps_the_scale_events(fault: str) -> None:
    """A cycle that makes no plan (InvalidSpec, DecisionFailed) writes no planState: the
    API server keeps the old one, and so must this process's memory of the status."""
    controller, kube, source, clock = setup(rate=100.0)
    body = rate_limited()
    controller.cycle(body)
    assert kube.scale_writes == [(NS, "web", 3)]
    good = with_status(body, kube)
    clock.now += 30
    kube.fail_status_patches = 1  # this cycle's status write is lost
    if fault == "invalid annotation":
        typo = copy.deepcopy(good)
        typo["metadata"]["annotations"] = {"forescale.dev/paused": "yes"}
        controller.cycle(typo)
    else:
        source.error = ZeroDivisionError("boom")
        controller.cycle(good)
        source.error = None
    assert kube.fail_status_patches == 0
    clock.now += 2
    controller.cycle(good)
    assert kube.scale_writes == [(NS, "web", 3)]


@pytest.mark.parametrize("successor", ["op-a", "op-b"])
def test_a_write_whose_status_died_with_its_process_is_remembered(successor: str) -> None:
    """The process dies between its /scale write and the status write (an OOM kill, a
    node drain): the process after it (the same replica restarted, or another taking the
    Lease over) learns of the write from the intent its writer left on the Lease. It grants
    no rate-limit allowance twice and does not take the write for someone else's."""
    first, kube, source, clock = setup(rate=100.0)
    body = rate_limited()
    first.cycle(body)  # 2 -> 3, and its status
    clock.now += 700  # the next allowance of 1 pod per 600 s
    kube.fail_status_patches = 1
    first.cycle(with_status(body, kube))  # 3 -> 4; the status is lost with the process
    assert kube.scale_writes == [(NS, "web", 3), (NS, "web", 4)]
    assert kube.statuses[NS, "web"]["planState"]["replicas"] == 3
    clock.now += 30 if successor == "op-a" else 80  # op-b: once op-a's Lease (75 s) lapsed
    replica(successor, kube, clock, source).cycle(with_status(body, kube))
    assert kube.scale_writes == [(NS, "web", 3), (NS, "web", 4)]
    stored = kube.statuses[NS, "web"]
    assert stored["decidedBy"] == successor
    assert "ExternallyScaled" not in stored["reasons"]
    assert stored["planState"]["replicas"] == 4
    assert stored["planState"]["scaleEvents"] == [[T0 + 700, 1]]  # the lost status's
    assert [e[1] for e in kube.events].count("ScaledUp") == 2


@pytest.mark.parametrize("skew", [0.0, 3600.0])
def test_an_intent_the_status_accounts_for_is_not_taken_for_a_lost_write(skew: float) -> None:
    """The intent stays on the Lease after its write was reported: when somebody later
    scales the target by hand to the count it names, that is someone else's change, also
    after the clock that wrote the intent ran an hour fast and was stepped back."""
    controller, kube, source, clock = setup(rate=100.0)
    body = rate_limited()
    clock.now = T0 + skew
    controller.cycle(body)  # 2 -> 3 (intent 2 -> 3 on the Lease)
    clock.now = T0
    kube.replicas[NS, "web"] = 2  # scaled back by hand
    clock.now += 30
    paused = with_status(body, kube)
    paused["metadata"]["annotations"] = {"forescale.dev/paused": "true"}
    controller.cycle(paused)  # held at 2: the status now says 2
    assert kube.statuses[NS, "web"]["planState"]["replicas"] == 2
    kube.replicas[NS, "web"] = 3  # by hand again
    clock.now += 30
    replica("op-a", kube, clock, source).cycle(with_status(body, kube))
    assert "ExternallyScaled" in kube.statuses[NS, "web"]["reasons"]


def first_write(kube: FakeKube) -> tuple[Controller, FakeSource, Clock, dict[str, Any]]:
    """op-a scales 2 -> 3 and reports it; the clock then moves 700 s on, to the next
    allowance of 1 pod per 600 s."""
    source, clock = FakeSource(100.0), Clock(T0)
    kube.replicas[NS, "web"] = 2
    first = replica("op-a", kube, clock, source)
    body = rate_limited()
    first.cycle(body)
    clock.now += 700
    return first, source, clock, body


def lost_write() -> tuple[Controller, FakeKube, FakeSource, Clock, dict[str, Any]]:
    """:func:`first_write`, then 3 -> 4, and that status is lost."""
    kube = FakeKube()
    first, source, clock, body = first_write(kube)
    kube.fail_status_patches = 1
    first.cycle(with_status(body, kube))
    assert kube.scale_writes == [(NS, "web", 3), (NS, "web", 4)]
    return first, kube, source, clock, body


def test_a_status_without_a_plan_since_does_not_hide_the_lost_write() -> None:
    """A status without a plan (InvalidSpec: a typo in the pause annotation) after the
    lost one moves lastDecisionTime but leaves the plan state before the write: the write
    is still planned from."""
    _, kube, source, clock, body = lost_write()
    restarted = replica("op-a", kube, clock, source)
    clock.now += 30
    typo = with_status(body, kube)
    typo["metadata"]["annotations"] = {"forescale.dev/paused": "yes"}
    restarted.cycle(typo)
    assert conditions(kube)["Ready"][1] == "InvalidSpec"
    clock.now += 30
    restarted.cycle(with_status(body, kube))
    assert kube.scale_writes == [(NS, "web", 3), (NS, "web", 4)]
    assert "ExternallyScaled" not in kube.statuses[NS, "web"]["reasons"]


class SigtermKube(FakeKube):
    """SIGTERM arrives while a /scale write is in flight (a rolling update, a drain)."""

    def __init__(self) -> None:
        super().__init__()
        self.during_write: Callable[[], None] | None = None

    def patch_scale(self, *args: Any, **kwargs: Any) -> Any:
        result = super().patch_scale(*args, **kwargs)
        if self.during_write is not None:
            hook, self.during_write = self.during_write, None
            hook()
        return result


def test_a_write_cut_short_by_sigterm_is_remembered_by_the_next_holder() -> None:
    """The stopping cycle leaves its status to the next holder and the Lease is released:
    released, not deleted, so that the write's intent is still there to be read."""
    kube = SigtermKube()
    a, source, clock, body = first_write(kube)
    stopper: list[threading.Thread] = []

    def sigterm() -> None:
        stopper.append(threading.Thread(target=a.release_all))
        stopper[0].start()
        while not a.stopping:
            pass

    kube.during_write = sigterm
    a.cycle(with_status(body, kube))  # 3 -> 4, no status (stopping)
    stopper[0].join(5)
    assert kube.scale_writes[-1] == (NS, "web", 4)
    assert kube.statuses[NS, "web"]["planState"]["replicas"] == 3
    lease = kube.leases[LEASE]
    assert "holderIdentity" not in lease["spec"]  # released: anyone may take it at once
    clock.now += 5
    replica("op-b", kube, clock, source).cycle(with_status(body, kube))
    assert kube.scale_writes == [(NS, "web", 3), (NS, "web", 4)]
    stored = kube.statuses[NS, "web"]
    assert stored["decidedBy"] == "op-b" and "ExternallyScaled" not in stored["reasons"]
    assert kube.leases[LEASE]["spec"]["holderIdentity"] == "op-b"


def test_a_retry_after_a_lost_status_stores_which_write_it_accounts_for() -> None:
    """The retry plans from this process's copy of the lost status; its own status must
    carry that copy's scaleIntent to the API server, or the stored state (after the
    write) sits beside the key from before it, and a later hand scale back to the write's
    counts is taken for the write."""
    controller, kube, source, clock = setup(rate=100.0)
    body = rate_limited()
    controller.cycle(body)
    clock.now += 700
    kube.fail_status_patches = 1
    controller.cycle(with_status(body, kube))  # 3 -> 4, its status lost
    stale = with_status(body, kube)
    clock.now += 2
    controller.cycle(stale)  # the retry, from the copy
    intent = kube.leases[LEASE]["metadata"]["annotations"][INTENT_ANNOTATION]
    stored = kube.statuses[NS, "web"]
    assert stored["planState"]["replicas"] == 4
    assert stored["scaleIntent"] == intent_key(intent)
    paused = rate_limited()
    paused["metadata"]["annotations"] = {"forescale.dev/paused": "true"}
    for hand in (3, 4):  # paused, scaled by hand back to 3 and up to 4 again
        kube.replicas[NS, "web"] = hand
        kube.scale_rv[NS, "web"] = kube.scale_rv.get((NS, "web"), 1) + 1
        clock.now += 30
        replica("op-a", kube, clock, source).cycle(with_status(paused, kube))
    assert "ExternallyScaled" in kube.statuses[NS, "web"]["reasons"]


def test_a_refused_write_is_accounted_for() -> None:
    """Refused with an answer (409 while the Deployment changes), the write is known not
    made: a count someone sets later, even the one it asked for, is theirs."""
    controller, kube, _, clock = setup(rate=100.0)
    body = rate_limited()
    controller.cycle(body)
    clock.now += 700
    kube.fail_scale_writes = Conflict(409, "Conflict", "the object has been modified")
    controller.cycle(with_status(body, kube))  # 3 -> 4 refused
    kube.fail_scale_writes = None
    assert conditions(kube)["ScalingActive"][1] == "ScaleFailed"
    intent = kube.leases[LEASE]["metadata"]["annotations"][INTENT_ANNOTATION]
    assert kube.statuses[NS, "web"]["scaleIntent"] == intent_key(intent)
    kube.replicas[NS, "web"] = 4  # an admin scales to what forescale asked for
    kube.scale_rv[NS, "web"] = kube.scale_rv.get((NS, "web"), 1) + 1
    clock.now += 30
    controller.cycle(with_status(body, kube))
    assert "ExternallyScaled" in kube.statuses[NS, "web"]["reasons"]


class BlindKube(FakeKube):
    """Once ``armed``, a /scale write gets no answer, and then no read of /scale either."""

    def __init__(self, status: int) -> None:
        super().__init__()
        self.status, self.armed, self.blind = status, False, False

    def patch_scale(self, *args: Any, **kwargs: Any) -> Any:
        if not self.armed:
            return super().patch_scale(*args, **kwargs)
        self.blind = True
        raise KubeError(self.status, "Unreachable", "timed out")

    def get_scale(self, *args: Any, **kwargs: Any) -> Any:
        if self.blind:
            raise KubeError(self.status, "Unreachable", "timed out")
        return super().get_scale(*args, **kwargs)


@pytest.mark.parametrize("status", [0, 504])
def test_a_write_whose_outcome_nobody_knows_is_not_accounted_for(status: int) -> None:
    """No answer, and the read after it fails too: whether the write was made is not
    known, so the status leaves its intent to the next decision, which tells by /scale."""
    kube = BlindKube(status)
    controller, _, _, body = first_write(kube)
    before = kube.statuses[NS, "web"]["scaleIntent"]
    kube.armed = True
    controller.cycle(with_status(body, kube))
    assert conditions(kube)["ScalingActive"][1] == "ScaleFailed"
    assert kube.statuses[NS, "web"]["scaleIntent"] == before


def test_a_lost_write_survives_the_handover_to_a_replica_that_joins() -> None:
    """A replica joins right after a write whose status was lost, and the target is
    assigned to it: the holder hands the Lease over with the write's intent on it."""
    shared = "forescale-system"
    target = lease_name("Deployment", "web", namespace=NS)
    joiner = next(f"op-b{i}" for i in range(100)
                  if assign([target], ["op-a", f"op-b{i}"])[target] == f"op-b{i}")
    kube, source, clock = FakeKube(), FakeSource(100.0), Clock(T0)
    kube.replicas[NS, "web"] = 2

    def member(identity: str) -> Controller:
        return Controller(ControllerSettings(identity=identity,
                                             prometheus_url="http://prom:9090",
                                             step_seconds=60.0, lease_namespace=shared),
                          kube, OperatorMetrics(), clock=clock, sources=lambda url: source)

    a = member("op-a")
    a.heartbeat()
    body = rate_limited()
    a.cycle(body)
    clock.now += 700
    kube.fail_status_patches = 1
    a.cycle(with_status(body, kube))  # 3 -> 4, its status lost
    b = member(joiner)
    b.heartbeat()
    clock.now += 5
    a.cycle(with_status(body, kube))  # hands the target over
    assert "holderIdentity" not in kube.leases[shared, target]["spec"]
    b.cycle(with_status(body, kube))
    assert kube.scale_writes == [(NS, "web", 3), (NS, "web", 4)]
    stored = kube.statuses[NS, "web"]
    assert stored["decidedBy"] == joiner and "ExternallyScaled" not in stored["reasons"]


def test_a_lease_without_an_intent_is_deleted_on_release() -> None:
    """Nothing to hand over (no write yet): the Lease goes, as before intents."""
    kube, source, clock = FakeKube(), FakeSource(100.0), Clock(T0)
    kube.replicas[NS, "web"] = 2
    a = replica("op-a", kube, clock, source)
    paused = rate_limited()
    paused["metadata"]["annotations"] = {"forescale.dev/paused": "true"}
    a.cycle(paused)  # the Lease is taken, nothing is written
    assert kube.scale_writes == [] and LEASE in kube.leases
    assert a.release_all() == 1 and kube.leases == {}


# -- the /scale answer is lost ---------------------------------------------------------------


class LostAnswerKube(FakeKube):
    """Applies a /scale write and then loses the answer (a client timeout, a 504)."""

    def __init__(self, status: int) -> None:
        super().__init__()
        self.lose_next_answer = False
        self.status = status

    def patch_scale(self, *args: Any, **kwargs: Any) -> Any:
        result = super().patch_scale(*args, **kwargs)
        if self.lose_next_answer:
            self.lose_next_answer = False
            raise KubeError(self.status, "Unreachable", "ReadTimeoutError: read timed out")
        return result


def lost_answer_setup(status: int) -> tuple[Controller, LostAnswerKube, Clock]:
    controller, _, _, clock = setup(rate=100.0)
    kube = LostAnswerKube(status)
    kube.replicas[NS, "web"] = 2
    controller.kube = kube
    controller.lease = type(controller.lease)(kube, identity=controller.settings.identity)
    return controller, kube, clock


@pytest.mark.parametrize("status", [0, 504])
def test_an_applied_write_whose_answer_was_lost_is_not_made_twice(status: int) -> None:
    controller, kube, clock = lost_answer_setup(status)
    body = rate_limited()
    kube.lose_next_answer = True
    controller.cycle(body)
    assert kube.replicas[NS, "web"] == 3  # the write took effect
    stored = kube.statuses[NS, "web"]
    assert stored["lastScaleTime"] and stored["planState"]["replicas"] == 3
    reasons = {c["type"]: c["reason"] for c in stored["conditions"]}
    assert reasons["ScalingActive"] != "ScaleFailed"
    clock.now += 30
    controller.cycle(with_status(body, kube))
    assert kube.scale_writes == [(NS, "web", 3)]  # 1 pod per 600 s


def test_a_write_that_was_not_applied_is_a_scale_failure() -> None:
    controller, kube, _ = lost_answer_setup(0)
    kube.fail_scale_writes = KubeError(0, "Unreachable", "connection refused")
    controller.cycle(rate_limited())
    assert kube.replicas[NS, "web"] == 2
    stored = kube.statuses[NS, "web"]
    assert {c["type"]: c["reason"] for c in stored["conditions"]}["ScalingActive"] == \
        "ScaleFailed"
    assert "lastScaleTime" not in stored and stored["planState"]["replicas"] == 2


# -- the Lease changes hands during a slow cycle -------------------------------------------


class SlowSource(FakeSource):
    """A rate read during which ``hook`` runs once (what happens while it is slow)."""

    def __init__(self, rate: float) -> None:
        super().__init__(rate)
        self.hook: Callable[[], None] | None = None

    def read_rate(self, *args: Any, **kwargs: Any) -> Any:
        if self.hook is not None:
            hook, self.hook = self.hook, None
            hook()
        return super().read_rate(*args, **kwargs)


def replica(identity: str, kube: FakeKube, clock: Clock, source: FakeSource) -> Controller:
    return Controller(ControllerSettings(identity=identity, prometheus_url="http://prom:9090",
                                         step_seconds=60.0),
                      kube, OperatorMetrics(), clock=clock, sources=lambda url: source)


def slow_cycle(take_over: bool, *, paused: bool = False
               ) -> tuple[FakeKube, Clock, dict[str, Any]]:
    """Replica A scales 2 → 3, then runs a cycle (``paused``: one that writes no /scale)
    whose read takes 80 s (its Lease lasts 75 s), during which replica B takes the Lease
    over (or nobody does)."""
    kube = FakeKube()
    kube.replicas[NS, "web"] = 2
    clock_a, clock_b = Clock(T0), Clock(T0)
    source_a = SlowSource(100.0)
    a = replica("op-a", kube, clock_a, source_a)
    b = replica("op-b", kube, clock_b, FakeSource(100.0))
    body = rate_limited(PER_100S)
    a.cycle(body)
    assert kube.replicas[NS, "web"] == 3

    def slow() -> None:
        clock_a.now += 80
        clock_b.now = clock_a.now
        if take_over:
            b.cycle(with_status(body, kube))

    clock_a.now = T0 + 120
    source_a.hook = slow
    second = with_status(body, kube)
    if paused:
        second["metadata"]["annotations"] = {"forescale.dev/paused": "true"}
    a.cycle(second)
    return kube, clock_b, body


def test_a_replica_that_lost_the_lease_mid_cycle_leaves_the_holders_status() -> None:
    kube, clock_b, body = slow_cycle(take_over=True)
    assert kube.scale_writes == [(NS, "web", 3), (NS, "web", 4)]  # B's, under its Lease
    status = kube.statuses[NS, "web"]
    assert status["decidedBy"] == "op-b"
    assert status["planState"]["replicas"] == 4
    # B's pod restarts 10 s after its scale-up and plans from its own state.
    restarted = replica("op-b", kube, Clock(clock_b.now + 10), FakeSource(100.0))
    restarted.cycle(with_status(body, kube))
    assert kube.scale_writes == [(NS, "web", 3), (NS, "web", 4)]  # 1 pod per 100 s


def test_a_slow_cycle_whose_lease_nobody_took_still_reports() -> None:
    """Its Lease expired during the cycle but still names it: nobody else acted."""
    kube, _, _ = slow_cycle(take_over=False, paused=True)
    status = kube.statuses[NS, "web"]
    assert status["decidedBy"] == "op-a"
    assert status["lastDecisionTime"] == rfc3339(T0 + 120)  # this cycle's report
    assert {c["type"]: c["reason"] for c in status["conditions"]}["Paused"] == "PausedByAnnotation"
    assert kube.scale_writes == [(NS, "web", 3)]


def test_a_paused_replica_that_lost_the_lease_mid_cycle_does_not_report() -> None:
    kube, _, _ = slow_cycle(take_over=True, paused=True)
    assert kube.statuses[NS, "web"]["decidedBy"] == "op-b"


# -- the policy was deleted, and nobody told this replica -------------------------------


class GoneKube(FakeKube):
    """The policy was deleted while this replica's watch was down: its status is 404."""

    def patch_policy_status(self, namespace: str, name: str, status: Any) -> Any:
        raise NotFound(404, "NotFound", f"scalingpolicies.forescale.dev {name} not found")


def test_a_policy_found_deleted_stops_scaling_and_releases_its_lease() -> None:
    """A re-list after a 410 Gone reports no deletions: the daemon of a deleted policy ran
    on, took the released Lease again and wrote /scale every cycle."""
    controller, _, source, clock = setup(rate=100.0)
    kube = GoneKube()
    kube.replicas[NS, "web"] = 2
    controller.kube = kube
    controller.lease = type(controller.lease)(kube, identity=controller.settings.identity)
    body = rate_limited(PER_100S)
    controller.cycle(body)
    assert kube.scale_writes == [(NS, "web", 3)]  # the one write before the 404 told
    assert controller.gone(body)
    assert controller.release(body)  # what the daemon does next
    assert (NS, "forescale-deployment-web") not in kube.leases
    for _ in range(3):
        clock.now += 200
        source.rate *= 3
        controller.cycle(body)
    assert kube.scale_writes == [(NS, "web", 3)]
    assert (NS, "forescale-deployment-web") not in kube.leases


# -- the policy's target changes ----------------------------------------------------------


def test_a_retargeted_policy_releases_the_lease_of_its_former_target() -> None:
    controller, kube, _, clock = setup(rate=100.0)
    kube.replicas[NS, "api"] = 2
    body = rate_limited()
    controller.cycle(body)
    assert (NS, "forescale-deployment-web") in kube.leases
    moved = with_status(body, kube)
    moved["spec"]["scaleTargetRef"]["name"] = "api"
    clock.now += 30
    controller.cycle(moved)
    assert (NS, "forescale-deployment-web") not in kube.leases  # free for another policy
    assert kube.leases[NS, "forescale-deployment-api"]["spec"]["holderIdentity"] == "op-a"
    assert kube.scale_writes[-1] == (NS, "api", 3)


# -- what the process remembers a status write to leave ------------------------------------


def test_merge_patch_is_what_the_api_server_leaves() -> None:
    before = {"planState": {"replicas": 3, "events": [1, 2]}, "reasons": ["A"], "x": 1}
    after = merge_patch(before, {"planState": {"replicas": 4}, "reasons": [], "x": None})
    assert after == {"planState": {"replicas": 4, "events": [1, 2]}, "reasons": []}
    assert before["planState"]["replicas"] == 3  # not modified


# -- a policy deleted while its cycle runs ----------------------------------------------------


def _series_of(controller: Controller, name: str) -> list[str]:
    return [f"{sample.name}{sample.labels}"
            for family in controller.metrics.registry.collect()
            for sample in family.samples if sample.labels.get("policy") == name]


def test_a_cycle_outliving_the_delete_handlers_wait_leaves_nothing_behind() -> None:
    """A slow Prometheus read outlasted release()'s wait; kopf then cancelled the daemon,
    so its cleanup never ran, and the cycle set the deleted policy's series (13 of them),
    its models and history again: on dashboards and in memory until a restart."""
    controller, kube, source, clock = setup(rate=100.0)
    body = rate_limited()
    for _ in range(3):
        controller.cycle(with_status(body, kube))
        clock.now += 30
    assert _series_of(controller, "web")
    read = source.read_rate

    def read_while_deleted(query: str, **kwargs: Any) -> Any:
        assert controller.release(copy.deepcopy(body), wait_seconds=0)  # the delete handler
        # ... then kopf removes the finalizer: the policy is gone.
        kube.patch_policy_status = GoneKube.patch_policy_status.__get__(kube)  # type: ignore[method-assign]
        return read(query, **kwargs)

    writes = len(kube.scale_writes)
    source.read_rate = read_while_deleted  # type: ignore[method-assign]
    controller.cycle(with_status(body, kube))
    assert controller.gone(body)
    assert len(kube.scale_writes) == writes  # a hold: nothing to write
    assert _series_of(controller, "web") == []
    assert not controller._chains and not controller._reported


def test_release_during_a_cycle_taking_the_lease_leaves_no_lease() -> None:
    """The policy's first cycle has read "no Lease" and is about to create it when the
    policy is deleted: release() must wait for that cycle, or it finds nothing to release
    and the cycle then creates a Lease nobody will ever release."""
    controller, _, _, _ = setup(rate=100.0)
    kube = GatedKube(after_read=True)
    kube.replicas[NS, "web"] = 2
    controller.kube = kube
    controller.lease = LeaseLock(kube, identity="op-a")
    body = policy()
    body["metadata"]["uid"] = "uid-1"
    cycle = threading.Thread(target=controller.cycle, args=(body,))
    kube.gated = cycle
    cycle.start()
    assert kube.entered.wait(5)  # the cycle has read the Lease (none) and will create it
    released: list[bool] = []
    deleter = threading.Thread(target=lambda: released.append(
        controller.release(body, wait_seconds=5)))
    deleter.start()
    deleter.join(0.3)
    kube.gate.set()
    cycle.join(5)
    deleter.join(5)
    assert kube.leases == {}, "the Lease outlived the policy's deletion"
