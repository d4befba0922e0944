"""LeaseLock.release() contended: another writer updates the Lease between release()'s
read and its delete, over real HTTP against the session's real kube-apiserver (the
emulator with FORESCALE_TEST_API=emulator, any cluster with FORESCALE_TEST_KUBECONFIG).

release() reads the Lease, checks that it names this identity and policy, and deletes it.
What it checked is only true of the version it read: the DELETE must carry that version's
resourceVersion as a precondition (``KubeClient.delete_lease``), or a Lease another holder
wrote meanwhile is deleted from under it, and a third replica may take it and scale the
target beside the new holder. Without a write between the read and the delete the
precondition changes nothing, so the tests make one happen there, deterministically: the
releasing lock's ``get_lease`` is wrapped so that the competing write is made, and has
completed, right after the read has returned, before ``release()`` goes on to delete.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from forescale.controller.kube import JSON
from forescale.controller.lease import POLICY_ANNOTATION, LeaseLock
from tests.integration.conftest import LeaseAPI
from tests.integration.conftest import lease_lock as lock

pytestmark = pytest.mark.integration

LEASES = "coordination.k8s.io/v1/leases"
NAME = "forescale-deployment-web"
POLICY = "default/web"
DURATION = 13
#: Lease times are the callers' (``now=``): far in the past, so the expiry is the tests'.
T0 = 1_700_000_000.0


#: The lease tests' API server (tests/integration/conftest.py's ``lease_api``).
Server = LeaseAPI


@pytest.fixture
def server(lease_api: LeaseAPI) -> LeaseAPI:
    """A namespace of its own, where identities "a" and "b" may use Leases as the chart's
    RBAC allows (on the control plane they are the static users operator-a and operator-b,
    so the apiserver's audit log says who sent each DELETE and what it answered)."""
    return lease_api


def stored(server: Server) -> dict[str, Any] | None:
    lease = server.get(LEASES, NAME, namespace=server.ns)
    return None if lease is None else dict(lease)


@dataclass
class WriteAfterRead:
    """Wraps a lock's ``get_lease``: the first read returns, then ``competitor`` writes the
    Lease (synchronously: its write has been answered before the reader sees its read),
    then the reader gets what it read. Records what happened around that write."""

    server: Server
    reader: LeaseLock
    competitor: Callable[[], Any]
    #: The resourceVersion the reader read, and the one the competing write produced.
    read_version: str | None = None
    written_version: str | None = None
    reads: int = 0
    _original: Callable[[str, str], JSON | None] | None = field(default=None, repr=False)

    def __enter__(self) -> WriteAfterRead:
        kube = self.reader._kube
        self._original = kube.get_lease

        def get_lease(namespace: str, name: str) -> JSON | None:
            assert self._original is not None
            seen = self._original(namespace, name)
            self.reads += 1
            if self.reads == 1 and seen is not None:
                self.read_version = str(seen["metadata"]["resourceVersion"])
                self.competitor()
                now = stored(self.server)
                assert now is not None, "the competing write did not leave a Lease"
                self.written_version = str(now["metadata"]["resourceVersion"])
            return seen

        kube.get_lease = get_lease  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._original is not None
        self.reader._kube.get_lease = self._original  # type: ignore[method-assign]


def assert_one_refused_delete(server: Server, identity: str) -> None:
    """The server itself says: one DELETE of a Lease was sent, by ``identity``, and it
    was refused with 409 (the precondition's answer), not carried out."""
    if server.deletes is not None:
        assert server.deletes() == [(identity, 409)], server.deletes()


def release_while_taken_over(server: Server, releaser: LeaseLock, taker: LeaseLock, *,
                             policy: str, what: str) -> dict[str, Any]:
    """``releaser`` (holding the expired Lease for :data:`POLICY`) releases it while
    ``taker`` takes it over for ``policy`` between the release's read and its delete; the
    delete must be refused: the Lease ``taker`` wrote is returned, as the server has it."""
    took_over: list[Any] = []

    def take_over() -> None:
        took_over.append(taker.ensure(server.ns, NAME, policy=policy, duration=DURATION,
                                      now=T0 + DURATION))

    with WriteAfterRead(server, releaser, take_over) as race:
        released = releaser.release(server.ns, NAME, policy=POLICY)
    # The interleaving really happened: the release read the version that named it, the
    # taker wrote a newer one after that read and before the delete, which came after both.
    assert race.reads == 1 and len(took_over) == 1, (race, took_over)
    assert took_over[0].held and "took over" in took_over[0].message, took_over[0]
    assert race.read_version != race.written_version, race
    # The releaser did not delete the Lease it no longer held ...
    lease = stored(server)
    assert lease is not None, f"the release deleted the Lease {what} had taken over"
    assert not released
    # ... and it is the taker's, exactly as written: not deleted and re-created, not rewritten.
    assert lease["metadata"]["resourceVersion"] == race.written_version
    assert lease["spec"]["leaseTransitions"] == 1
    assert lease["metadata"]["annotations"][POLICY_ANNOTATION] == policy
    assert_one_refused_delete(server, releaser.identity)
    return lease


def test_release_does_not_delete_a_lease_another_holder_took_over_after_its_read(
        server: Server) -> None:
    """a's Lease has expired; a (its policy being deleted) releases it while b takes it
    over. b's takeover lands between a's read (which still names a) and a's delete: the
    delete must be refused, and b must still hold the Lease afterwards."""
    a, b = lock(server, "a"), lock(server, "b")
    assert a.ensure(server.ns, NAME, policy=POLICY, duration=DURATION, now=T0).held
    lease = release_while_taken_over(server, a, b, policy=POLICY, what="b")
    assert lease["spec"]["holderIdentity"] == "b"
    # b holds it and goes on holding it; a knows it lost it.
    assert not b.taken_over(server.ns, NAME, policy=POLICY)
    assert a.taken_over(server.ns, NAME, policy=POLICY)
    renewed = b.ensure(server.ns, NAME, policy=POLICY, duration=DURATION,
                       now=T0 + DURATION + 1)
    assert renewed.held and "renewed" in renewed.message, renewed
    assert stored(server) is not None


def test_release_does_not_delete_a_lease_another_policy_took_over_after_its_read(
        server: Server) -> None:
    """The same identity, another policy: the operator process that held the Lease for
    policy web (being deleted) takes it, expired, for policy web-too of the same target
    (that policy's own cycle; a second LeaseLock here, so that its read is not the wrapped
    one) between web's read and web's delete. The holder's name did not change; only the
    resourceVersion says that the Lease is no longer the one web read, and the delete must
    be refused."""
    a = lock(server, "a")
    assert a.ensure(server.ns, NAME, policy=POLICY, duration=DURATION, now=T0).held
    other_cycle = lock(server, "a")
    lease = release_while_taken_over(server, a, other_cycle, policy="default/web-too",
                                     what="web-too")
    assert lease["spec"]["holderIdentity"] == "a"
    assert not other_cycle.taken_over(server.ns, NAME, policy="default/web-too")
    assert a.taken_over(server.ns, NAME, policy=POLICY)


def test_release_without_a_competing_write_deletes(server: Server) -> None:
    """The control: the same steps with the wrapper in place but nothing written between
    the read and the delete, so the tests above fail for the race alone."""
    a = lock(server, "a")
    assert a.ensure(server.ns, NAME, policy=POLICY, duration=DURATION, now=T0).held
    with WriteAfterRead(server, a, lambda: None) as race:
        released = a.release(server.ns, NAME, policy=POLICY)
    assert race.reads == 1 and race.read_version == race.written_version, race
    assert released
    assert stored(server) is None
    if server.deletes is not None:
        assert server.deletes() == [("a", 200)], server.deletes()
