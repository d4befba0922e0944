"""Two operator processes over the same policies: the per-target Lease decides who scales."""

from __future__ import annotations

import itertools
import time

import pytest

from forescale.controller.kube import parse_time
from forescale.core.sizing import size
from forescale.core.spec import SLO
from tests.integration.conftest import DEPLOYMENTS, RAMP_TO, World

pytestmark = pytest.mark.integration


def _holder(world: World, target: str) -> str | None:
    lease = world.lease(target)
    return None if lease is None else lease["spec"].get("holderIdentity")


def test_every_scale_write_is_made_by_the_lease_holder_of_that_moment(world: World) -> None:
    needs = size(RAMP_TO, 10, SLO(), None).replicas
    for name in ("web", "api"):
        world.deployment(name, replicas=1)
        world.policy(name, name)
    world.start_operator("operator-a")
    world.start_operator("operator-b")
    for name in ("web", "api"):
        world.wait(lambda n=name: world.replicas(n) > needs, what=f"{name} scaled up")
    # Several renewals: both processes have run several cycles over both policies (the
    # standby only reads the lease, so its work shows as its absence from the writes).
    world.wait(lambda: sum(e.type == "MODIFIED" for e in world.leases.snapshot()) >= 8,
               what="several lease renewals")
    # On any cluster: the Deployment and Lease watches against the operators' own log
    # lines of their scale writes (see World.check_scale_writes_by_lease_holders).
    assert world.check_scale_writes_by_lease_holders(["web", "api"]) >= 2
    if world.plane is not None:
        # On the control plane, from the apiserver's own audit log: every replica change
        # is a /scale write by the user holding the Lease at that moment ...
        assert world.audit_scale_writes_by_lease_holders(["web", "api"]) >= 2
        writers = {e.username for e in world.plane.scale_writes(namespace=world.namespace)}
        assert writers <= {"operator-a", "operator-b"} and writers, writers
        # ... and the targets' managedFields say spec.replicas was last set through /scale
        # by forescale's field manager.
        for name in ("web", "api"):
            owner = world.scale_manager(name)
            assert (owner["manager"], owner["subresource"], owner["operation"]) == (
                "forescale", "scale", "Update"), owner
        return
    if world.emulator is None:
        return
    # On the emulator, also from its audit log, which records who sent every request.
    audit = world.emulator.audit()
    writes = [e for e in audit if e.path.endswith("/scale") and e.method in ("PATCH", "PUT")]
    assert writes, "nobody scaled"
    for entry in writes:
        holder = world.emulator.lease_holder_at(entry.seq, namespace=world.namespace,
                                                name=f"forescale-deployment-{entry.name}")
        assert entry.identity == holder, (entry, holder)
    # A holder changes only when the previous lease had expired or was released (no
    # holder: a shutdown or handover keeps a Lease that records a scale intent).
    for name in ("web", "api"):
        lease_writes = [e for e in audit
                        if e.resource == "leases" and e.name == f"forescale-deployment-{name}"
                        and e.changed and e.method != "DELETE"]
        for before, after in itertools.pairwise(lease_writes):
            b, a = before.result["spec"], after.result["spec"]  # type: ignore[index]
            if b.get("holderIdentity") and a.get("holderIdentity") and \
                    a["holderIdentity"] != b["holderIdentity"]:
                expiry = parse_time(b["renewTime"]) + b["leaseDurationSeconds"]  # type: ignore[operator]
                assert after.wall_time >= expiry, (before, after)


def test_a_killed_holder_is_replaced_within_lease_duration_plus_period(world: World) -> None:
    world.deployment("web", replicas=1)
    world.policy("web", "web")
    first = world.start_operator("operator-a")
    world.wait(lambda: _holder(world, "web") == "operator-a", what="operator-a holds the lease")
    world.start_operator("operator-b")
    world.wait(lambda: (c := world.condition("web", "Ready")) and c["status"] == "True",
               what="a decision")
    first.kill()
    killed = time.monotonic()
    duration = 2 * 5 + 3  # 2 x period + --lease-extra-seconds
    world.wait(lambda: _holder(world, "web") == "operator-b", timeout=duration + 5 + 5,
               what="operator-b takes over")
    assert time.monotonic() - killed <= duration + 5 + 2  # + period, + polling slack
    if world.plane is not None:  # before and after the kill: only the holder wrote /scale
        world.audit_scale_writes_by_lease_holders(["web"])


def test_the_audit_check_catches_a_scale_write_by_someone_else(world: World) -> None:
    """The proof has teeth: a /scale write by anyone but the Lease holder fails it."""
    if world.plane is None:
        pytest.skip("the apiserver's audit log is needed (control-plane mode)")
    world.deployment("web", replicas=1)
    world.kube.patch(DEPLOYMENTS, "web", {"spec": {"replicas": 3}}, namespace=world.namespace,
                     subresource="scale")
    world.wait(lambda: any(c.replicas == 3 for c in world.replica_changes()),
               what="the watch saw the write")
    with pytest.raises(AssertionError, match="admin scaled web without a lease"):
        world.audit_scale_writes_by_lease_holders(["web"])
    owner = world.scale_manager("web")
    assert owner["manager"] != "forescale" and owner["subresource"] == "scale", owner
