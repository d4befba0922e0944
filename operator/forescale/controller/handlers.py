"""kopf wiring only: login, one daemon per ScalingPolicy, release on deletion and on
shutdown, the heartbeat behind the liveness probe, settings.

A daemon rather than a timer: kopf timers share one interval per handler, while every
policy has its own ``decisionPeriodSeconds`` (and a failing Prometheus wants a shorter
retry). The daemon's ``body`` is kopf's live view, so spec edits apply on the next cycle.
Cycles run on the controller's own thread pool: one policy has at most one cycle in it at a
time, so no policy can take more than its share of the workers.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf

from forescale.controller.kube import KubeError
from forescale.controller.worker import Controller

GROUP, VERSION, PLURAL = "forescale.dev", "v1alpha1", "scalingpolicies"
FINALIZER = "forescale.dev/release-lease"
#: How often kopf's event loop proves it is alive to the liveness probe.
HEARTBEAT_SECONDS = 5.0

logger = logging.getLogger("forescale.controller")


def operator_settings(*, standalone: bool, peering: str | None) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    # Our own finalizer name: it is what keeps a deleted policy until its lease is released.
    settings.persistence.finalizer = FINALIZER
    # Events for handler failures only; our decisions post their own, rate-limited events.
    settings.posting.level = logging.WARNING
    # A watch that silently stalls would freeze spec changes: reconnect every few minutes
    # (server side), and give up on a connection that stays silent longer than that.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    # API calls of kopf itself (patches of finalizers) must not hang a shutdown.
    settings.networking.request_timeout = 30
    settings.networking.connect_timeout = 10
    # Deleting a policy stops its daemon; a cycle in a thread cannot be interrupted, so
    # give it a moment to finish before kopf abandons it.
    settings.background.cancellation_polling = 1
    # Standalone by default: per-target Leases, not kopf's peering, decide who scales, so
    # every replica may observe and report. --peering adds kopf's whole-operator pause.
    settings.peering.standalone = standalone
    if peering:
        settings.peering.name = peering
        settings.peering.mandatory = True
    return settings


def build_registry(controller: Controller, *, workers: int = 8) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decide")
    background: set[asyncio.Task[None]] = set()

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        # Explicit: the kubernetes client read $KUBECONFIG at import; use --kubeconfig.
        params = {k: v for k, v in controller.kube.connection_params().items()
                  if v is not None}
        return kopf.ConnectionInfo(**params)

    @kopf.on.startup(registry=registry)
    async def startup(**_: Any) -> None:
        async def beat() -> None:
            # Liveness is "the event loop ticks": this task does nothing else, so a slow
            # or unreachable API server (each call up to its timeout) does not make a live
            # loop look stuck and get every replica restarted during an API outage.
            while True:
                controller.health.beat()
                await asyncio.sleep(HEARTBEAT_SECONDS)

        async def keep_in_touch() -> None:
            loop = asyncio.get_running_loop()
            reached = False
            while True:
                if not reached:  # ready once the API answers (discovery: any user may)
                    try:  # at every beat until it does: one failure at startup (a sidecar
                        # not ready yet) left a replica with no status to write unready
                        await loop.run_in_executor(
                            pool, controller.kube.resolve_scale, "apps/v1", "Deployment")
                        controller.health.api_reached()
                        reached = True
                    except KubeError as exc:
                        logger.warning("the Kubernetes API did not answer: %s", exc)
                try:  # the membership Lease: how the other replicas know this one is alive
                    await loop.run_in_executor(None, controller.heartbeat)
                except KubeError as exc:
                    logger.warning("could not renew the membership lease: %s", exc)
                await asyncio.sleep(HEARTBEAT_SECONDS)

        for work in (beat(), keep_in_touch()):
            background.add(asyncio.get_running_loop().create_task(work))

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        # SIGTERM (a rolling update): hand every target over now, not after a Lease
        # duration; the other replicas take them on their next cycle.
        released = await asyncio.get_running_loop().run_in_executor(
            None, controller.release_all)
        logger.info("released %d lease(s) on shutdown", released)
        for task in background:
            task.cancel()
        pool.shutdown(wait=False, cancel_futures=True)

    @kopf.on.daemon(GROUP, VERSION, PLURAL, registry=registry, cancellation_timeout=30)
    async def decide(stopped: kopf.DaemonStopped, body: kopf.Body, **_: Any) -> None:
        snapshot: dict[str, Any] = {}
        loop = asyncio.get_running_loop()
        while not stopped:
            snapshot = copy.deepcopy(dict(body))
            try:  # an API error is the cycle's to count and back off from
                delay = await loop.run_in_executor(pool, controller.cycle, snapshot)
            except RuntimeError:  # the pool is shut down: the operator is exiting
                return
            if controller.gone(snapshot):  # deleted, though kopf did not tell us
                await asyncio.to_thread(controller.release, snapshot)
                return
            await stopped.wait(delay)
        if stopped.reason is not None and \
                stopped.reason & kopf.DaemonStoppingReason.RESOURCE_DELETED and snapshot:
            await asyncio.to_thread(controller.release, snapshot)

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry)
    async def release(body: kopf.Body, **_: Any) -> None:
        try:
            await asyncio.to_thread(controller.release, copy.deepcopy(dict(body)))
        except KubeError as exc:
            # No answer, or none to go by (a body cut short, an expired token, a 5xx): again.
            if exc.status < 400 or exc.status in (401, 408, 429) or exc.status >= 500:
                raise kopf.TemporaryError(f"could not release the lease: {exc}",
                                          delay=2) from exc
            # Refused (403: Leases not granted, the LeaseForbidden state): retrying would
            # keep the finalizer, and the policy's deletion, for ever. Whatever Lease there
            # is expires by itself.
            logger.warning("could not release the lease of deleted policy %s/%s (it "
                           "expires by itself): %s", body.get("metadata", {}).get("namespace"),
                           body.get("metadata", {}).get("name"), exc)

    return registry


def run_operator(controller: Controller, *, standalone: bool, peering: str | None,
                 all_namespaces: bool, namespaces: Sequence[str], workers: int = 8) -> None:
    """Run kopf until it is signalled to stop."""
    kopf.run(registry=build_registry(controller, workers=workers),
             settings=operator_settings(standalone=standalone, peering=peering),
             standalone=standalone, peering_name=peering,
             clusterwide=all_namespaces, namespaces=list(namespaces))
