"""Two operator processes over the same policies, with the contention itself proven.

``test_operator_locking`` proves that every /scale write was made by the Lease holder of
that moment; it would pass as well if the second operator had exited at startup, or never
reached the API, since a lone operator trivially holds every Lease. Here the second
operator must be seen contending: alive for the whole run, trying for the Lease of every
target from its start to after the last check, and refused it while the holder renews and
scales the targets (the holder must write /scale inside that window). The tries come from
a probe in each operator process (``lease_probe``: every outcome of ``LeaseLock.ensure``,
since a standby logs nothing), checked against the server: each refusal names the holder
and expiry of a Lease version the watch saw. The standby's own ``/healthz``, ``/readyz``
and ``/metrics`` (its decision cycles, no errors) corroborate them without the probe. Then
the guarantees of ``test_operator_locking`` are checked over the same run.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from forescale.controller.kube import parse_time
from forescale.core.sizing import size
from forescale.core.spec import SLO
from tests.integration.conftest import POLICIES, RAMP_TO, Operator, World
from tests.integration.lease_probe import sitecustomize_source

pytestmark = pytest.mark.integration

TARGETS = ("web", "api")
PERIOD = 5  # the scenarios' decisionPeriodSeconds (World.policy)
#: The longest a live standby may go between two tries for one target's Lease: its cycles
#: are a Lease read a period; this allows a loaded CI machine six periods of stall.
MAX_GAP_SECONDS = 6 * PERIOD
HELD_BY = re.compile(r" is held by (?P<holder>\S+) until (?P<until>\S+)$")


@dataclass(frozen=True)
class Attempt:
    """One outcome of ``LeaseLock.ensure`` in an operator process (see ``lease_probe``)."""

    identity: str
    lease: str
    held: bool | None
    holder: str | None
    message: str
    error: str | None
    began: float
    finished: float


class OperatorExitedError(Exception):
    """An operator process ended during the run (not an assertion: a wait must not turn
    it into a timeout)."""


def wait(world: World, predicate: Callable[[], object], *, what: str,
         alive: tuple[Operator, ...]) -> None:
    """``world.wait``, failing at once when one of ``alive`` has exited meanwhile."""
    def check() -> object:
        for op in alive:
            if op.process.poll() is not None:
                raise OperatorExitedError(
                    f"{op.identity} exited ({op.process.returncode}) while waiting for "
                    f"{what}; log tail:\n{op.log()}")
        return predicate()

    world.wait(check, what=what)


def lease_of(target: str) -> str:
    return f"forescale-deployment-{target}"


@contextlib.contextmanager
def probed(world: World) -> Iterator[Path]:
    """While inside, operators started by ``world.start_operator`` load the probe; yields
    the directory its records go to."""
    out = world.tmp / "lease-probe"
    site = world.tmp / "lease-probe-site"
    out.mkdir()
    site.mkdir()
    (site / "sitecustomize.py").write_text(sitecustomize_source(out))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join(
            [str(site), *filter(None, [os.environ.get("PYTHONPATH")])]))
        yield out


def attempts(out: Path, identity: str, target: str | None = None) -> list[Attempt]:
    path = out / f"{identity}.jsonl"
    found = []
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):  # a line being written
                raw = json.loads(line)
                found.append(Attempt(identity=raw["identity"], lease=raw["name"],
                                     held=raw.get("held"), holder=raw.get("holder"),
                                     message=str(raw.get("message") or ""),
                                     error=raw.get("error"), began=float(raw["began"]),
                                     finished=float(raw["finished"])))
    return [a for a in found if target is None or a.lease == lease_of(target)]


def refusals(out: Path, identity: str, target: str) -> list[Attempt]:
    """The attempts at the target's Lease that another holder's live Lease refused."""
    return [a for a in attempts(out, identity, target)
            if a.held is False and a.holder not in (None, identity)
            and HELD_BY.search(a.message)]


def metrics(op: Operator) -> dict[str, float]:
    """The operator's own /metrics, sample name (with labels) → value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{op.metrics_port}/metrics",
                                timeout=10) as response:
        text = response.read().decode()
    return {name + ("{" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}"
                    if labels else ""): value
            for family in text_string_to_metric_families(text)
            for name, labels, value, *_ in family.samples}


def http_status(op: Operator, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{op.metrics_port}{path}",
                                    timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def holder(world: World, target: str) -> str | None:
    lease = world.lease(target)
    return None if lease is None else lease["spec"].get("holderIdentity")


def test_the_standby_contends_for_every_lease_and_only_the_holder_scales(
        world: World) -> None:
    needs = size(RAMP_TO, 10, SLO(), None).replicas
    for name in TARGETS:
        world.deployment(name, replicas=1)
        world.policy(name, name)
    with probed(world) as out:
        a = world.start_operator("operator-a")
        # operator-a holds both Leases before operator-b exists: from its first cycle on,
        # every try of b's is a contention with a live holder (which it must lose).
        wait(world, lambda: all(holder(world, n) == "operator-a" for n in TARGETS),
             what="operator-a holds the Lease of every target", alive=(a,))
        b = world.start_operator("operator-b")
    both = (a, b)

    # 1. operator-b came up, ran its cycles and was refused every target's Lease.
    wait(world, lambda: all(refusals(out, "operator-b", n) for n in TARGETS),
         what="operator-b refused the Lease of every target (its probe records)",
         alive=both)
    first_refusal = {n: refusals(out, "operator-b", n)[0] for n in TARGETS}

    # 2. The holder works while b contends: the ramp's scale-up, then a minimum above the
    #    current replicas, which a can only meet by writing /scale now.
    for name in TARGETS:
        wait(world, lambda n=name: world.replicas(n) > needs, what=f"{name} scaled up",
             alive=both)
    raised = {n: world.replicas(n) + 3 for n in TARGETS}
    for name in TARGETS:
        world.kube.patch(POLICIES, name, {"spec": {"minReplicas": raised[name]}},
                         namespace=world.namespace)
    for name in TARGETS:  # as the watch saw it: the check below uses the watch's times
        wait(world, lambda n=name: any(c.name == n and c.replicas >= raised[n]
                                       for c in world.replica_changes()),
             what=f"{name} scaled to its raised minimum {raised[name]}", alive=both)
    # Several renewals after b's first refusal: both processes ran several cycles each.
    since = min(r.finished for r in first_refusal.values())
    wait(world, lambda: sum(e.type == "MODIFIED" and e.received > since
                            for e in world.leases.snapshot()) >= 2 * len(TARGETS),
         what="several lease renewals while operator-b contends", alive=both)

    # 3. Still contending at the end: trying again for every Lease after everything above
    #    (refused, unless a stalled past its Lease's expiry and b took over, as it may).
    checked = time.time()
    wait(world, lambda: all(t.began > checked for n in TARGETS
                            for t in attempts(out, "operator-b", n)[-1:]),
         what="operator-b tried for every Lease again after the checks", alive=both)
    for op in both:
        assert op.process.poll() is None, f"{op.identity} exited:\n{op.log()}"

    # 4. What b's refusals say is true of the server: each names operator-a and the
    #    expiry of a Lease version the watch saw; and none of b's tries failed.
    versions: dict[str, list[tuple[str, float]]] = {}
    for event in world.leases.snapshot():
        spec = event.object["spec"]
        versions.setdefault(event.name, []).append(
            (str(spec.get("holderIdentity")), (parse_time(spec.get("renewTime")) or 0.0)
             + float(spec.get("leaseDurationSeconds") or 0)))
    failed = [t for t in attempts(out, "operator-b") if t.error]
    assert not failed, failed
    for name in TARGETS:
        mine = refusals(out, "operator-b", name)
        for r in mine:
            match = HELD_BY.search(r.message)
            assert match is not None and match["holder"] == "operator-a", r
            until = parse_time(match["until"]) or 0.0
            assert any(h == "operator-a" and abs(u - until) < 1e-3
                       for h, u in versions.get(lease_of(name), [])), (r, versions)
        # Contended for the whole run, not only at its ends: no long silence.
        tries = attempts(out, "operator-b", name)
        gaps = [later.began - earlier.began for earlier, later in itertools.pairwise(tries)]
        assert max(gaps, default=0.0) <= MAX_GAP_SECONDS, (name, gaps)
        # ... and a held the Lease b was refused (a's own probe records).
        assert any(t.held for t in attempts(out, "operator-a", name)), name

    # 5. Without the probe: b's own endpoints show a live operator, ready (it reached the
    #    API), that ran a decision cycle for every try the probe recorded (one Lease try a
    #    cycle; the last cycle of each policy may still be running) and had no error.
    assert http_status(b, "/healthz") == 200 and http_status(b, "/readyz") == 200
    samples = metrics(b)
    cycles = samples.get("forescale_decision_seconds_count", 0.0)
    tried = len(attempts(out, "operator-b"))
    assert tried - len(TARGETS) <= cycles and cycles >= len(TARGETS), (cycles, tried)
    assert not {k: v for k, v in samples.items()
                if k.startswith("forescale_errors_total") and v > 0}, samples

    # 6. The guarantees of test_operator_locking, over this contended run: every replica
    #    change is a /scale write by the Lease holder of that moment (the watches against
    #    the operators' logs; on the control plane also the apiserver's audit log), the
    #    holders never overlap, and spec.replicas is owned by forescale through /scale.
    assert world.check_scale_writes_by_lease_holders(list(TARGETS)) >= 2 * len(TARGETS)
    changes = world.replica_changes()
    for name in TARGETS:
        # Some of those writes fell inside b's contention, between its first refusal and
        # its last try for that target: the lock was contended when it mattered.
        last = attempts(out, "operator-b", name)[-1]
        inside = [c for c in changes if c.name == name
                  and first_refusal[name].finished < c.time < last.began]
        assert inside, (name, first_refusal[name], last, changes)
    if world.plane is not None:
        assert world.audit_scale_writes_by_lease_holders(list(TARGETS)) >= 2 * len(TARGETS)
        writers = {e.username for e in world.plane.scale_writes(namespace=world.namespace)}
        assert writers <= {"operator-a", "operator-b"} and writers, writers
        for name in TARGETS:
            owner = world.scale_manager(name)
            assert (owner["manager"], owner["subresource"], owner["operation"]) == (
                "forescale", "scale", "Update"), owner
