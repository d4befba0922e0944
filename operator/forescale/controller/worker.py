"""One policy's decision cycle, as a short sequence of small named steps:

    read the policy → read the target → guard → read the history → plan → apply → report

Synchronous (run in a thread by the kopf daemon), so that a slow model fit never blocks
kopf's event loop. Each step takes what it needs and returns what it found; the ones that
talk to the cluster go through :class:`KubeApi`, so every step can be tested without one.

The guard comes before the history: a replica whose target's Lease another replica holds
neither reads metrics nor forecasts (the holder does, and writes the status), so a second
replica costs Prometheus nothing. ``now`` comes from the injected clock (read once per
cycle at this boundary); the core never reads a clock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

import numpy as np

from forescale.adapters.prometheus import BadQuery, MetricsError
from forescale.adapters.promql import scope_query
from forescale.controller.decision_metrics import remove_series
from forescale.controller.health import Health
from forescale.controller.history import HistoryReader, RateSource
from forescale.controller.intent import ScaleIntent, intent_key, resumed_state
from forescale.controller.kube import JSON, KubeError, NotFound, ScaleResource, parse_time
from forescale.controller.lease import (
    LeaseLock,
    LeaseState,
    lease_duration_seconds,
    lease_name,
)
from forescale.controller.membership import Membership
from forescale.controller.metrics import OperatorMetrics
from forescale.controller.overrides import Override, apply_override, read_override
from forescale.controller.settings import ControllerSettings
from forescale.controller.status import (
    Decision,
    build_status,
    events,
    merge_patch,
    plain,
    scale_event,
)
from forescale.core.errors import InvalidInputError
from forescale.core.forecast.chain import ForecastChain
from forescale.core.guardrail import GuardrailReading
from forescale.core.plan import Plan, PlanState, plan
from forescale.core.series import Series
from forescale.core.spec import ForecastSettings
from forescale.core.window import history_window
from forescale.policy import Policy, ScaleTarget, policy_from_resource, target_of

logger = logging.getLogger("forescale.controller")

Clock = Callable[[], float]

#: The decision period assumed before a spec could be read (the CRD's default).
DEFAULT_PERIOD_SECONDS = 60.0
#: How long a namespace's list of HPAs and ScaledObjects is reused.
AUTOSCALERS_TTL_SECONDS = 5.0
#: Answers to a read of the target that a retry will not change (besides 403 and 404).
UNREADABLE_STATUSES = frozenset({400, 405, 406, 415, 422})
#: Why a stopping operator neither takes a Lease nor scales.
SHUTTING_DOWN = "the operator is shutting down: another replica takes the target over"
#: A failure's message in the status: the exception's type and its first line, bounded.
_MAX_FAILURE_TEXT = 300
#: A target assigned to another replica whose Lease this one has seen free for this many
#: Lease durations is taken anyway: the replicas' views of the targets differ (one does not
#: watch the policy's namespace, say) and it would otherwise stay nobody's. Its assigned
#: replica, alive and agreeing, takes a free Lease within a period (a Lease lasts two).
ORPHAN_LEASE_DURATIONS = 2


class KubeApi(Protocol):
    """What the cycle needs of the Kubernetes API (:class:`KubeClient`, or a fake in unit
    tests). The Lease calls go through :class:`LeaseLock`, which needs the lease calls."""

    def connection_params(self) -> dict[str, Any]: ...
    def resolve_scale(self, api_version: str, kind: str) -> ScaleResource | None: ...
    def get_scale(self, resource: ScaleResource, namespace: str, name: str) -> JSON: ...
    def patch_scale(self, resource: ScaleResource, namespace: str, name: str, *,
                    replicas: int, resource_version: str) -> JSON: ...
    def list_hpas(self, namespace: str) -> list[JSON]: ...
    def list_scaled_objects(self, namespace: str) -> list[JSON]: ...
    def get_lease(self, namespace: str, name: str) -> JSON | None: ...
    def list_leases(self, namespace: str, *, label_selector: str) -> list[JSON]: ...
    def create_lease(self, namespace: str, name: str, spec: JSON, *,
                     labels: Mapping[str, str], annotations: Mapping[str, str]) -> JSON: ...
    def replace_lease(self, lease: JSON, spec: JSON) -> JSON: ...
    def delete_lease(self, lease: JSON) -> None: ...
    def patch_policy_status(self, namespace: str, name: str, status: JSON) -> JSON: ...
    def create_event(self, *, involved: Mapping[str, Any], type_: str, reason: str,
                     message: str, now: float, component: str, instance: str) -> None: ...


class Invalid(Exception):  # noqa: N818 (a step's outcome, not an error of the operator)
    """A step found the policy cannot be acted on: ``reason`` (InvalidSpec,
    TargetNotFound, ...) for the metrics counter, ``condition`` for the Ready and
    ScalingActive conditions, the message for the status."""

    def __init__(self, reason: str, message: str, *, condition: str = "InvalidSpec") -> None:
        super().__init__(message)
        self.reason = reason
        self.condition = condition


@dataclasses.dataclass(frozen=True)
class Target:
    """The scale target as ``/scale`` reported it at the start of the cycle."""

    resource: ScaleResource
    current_replicas: int
    resource_version: str


@dataclasses.dataclass(frozen=True)
class History:
    """The history read for a decision, or why it could not be read."""

    series: Series
    #: (reason, message) from the adapter, or None when the read worked.
    error: tuple[str, str] | None = None
    #: Set when the error is the spec's to fix (a query Prometheus rejects).
    invalid: str | None = None


# --- pure steps ---------------------------------------------------------------------------


def read_policy(body: Mapping[str, Any], settings: ControllerSettings) -> Policy:
    """The typed policy, with its Prometheus URL checked against the allow-list and, with
    tenant isolation, every query it sends (the arrival rate's and each guardrail's)
    scoped to its namespace."""
    try:
        policy = policy_from_resource(body, models_dir=settings.models_dir)
    except InvalidInputError as exc:
        raise Invalid("InvalidSpec", str(exc)) from None
    label = settings.tenant_label
    if label is not None:
        def scoped(query: str, field: str) -> str:
            try:
                return scope_query(query, label, policy.namespace)
            except InvalidInputError as exc:
                raise Invalid("InvalidSpec", f"{field}: {exc}") from None

        guardrails = tuple(
            dataclasses.replace(g, query=scoped(g.query, f"spec.guardrails[{i}].query"))
            for i, g in enumerate(policy.spec.guardrails))
        policy = dataclasses.replace(
            policy,
            metrics=dataclasses.replace(
                policy.metrics, query=scoped(policy.metrics.query, "spec.metrics.query")),
            spec=dataclasses.replace(policy.spec, guardrails=guardrails))
    url = policy.metrics.prometheus_url
    if url is not None:
        problem = settings.check_prometheus_url(url)
        if problem is not None:
            raise Invalid("InvalidSpec", problem)
    elif not settings.prometheus_url:
        raise Invalid("InvalidSpec", "no Prometheus: set spec.metrics.prometheusUrl or "
                                     "--prometheus-url")
    return policy


def conflicting_autoscaler(policy: Policy, hpas: list[JSON],
                           scaled_objects: list[JSON]) -> tuple[str, str] | None:
    """Another autoscaler of the same target: the operator must not fight it."""
    kind, name = policy.target.kind, policy.target.name
    for hpa in hpas:
        ref = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
        if ref.get("kind") == kind and ref.get("name") == name:
            return ("ConflictingAutoscaler", f"HorizontalPodAutoscaler "
                    f"{hpa['metadata']['name']} already scales {kind} {name}")
    for so in scaled_objects:
        ref = (so.get("spec") or {}).get("scaleTargetRef") or {}
        if ref.get("kind", "Deployment") == kind and ref.get("name") == name:
            return ("ConflictingAutoscaler", f"KEDA ScaledObject "
                    f"{so['metadata']['name']} already scales {kind} {name}")
    return None


def previous_state(previous: Mapping[str, Any], key: object = "policy") -> PlanState:
    """The plan state the last decision stored. A damaged one is never a failed decision:
    damaged forecast records alone are learnt again and the rest (stabilisation, cooldown,
    rate limits) kept; otherwise the decision starts from the initial state. Either is
    logged, once a cycle."""
    data = previous.get("planState")
    try:
        return PlanState.from_dict(data)
    except InvalidInputError as exc:
        problem = str(exc)
    if isinstance(data, Mapping) and data.get("forecasts") is not None:
        try:
            state = PlanState.from_dict({**data, "forecasts": None})
        except InvalidInputError:
            pass
        else:
            logger.warning("%s: status.planState: %s; its forecast records are learnt "
                           "again, the rest is kept", key, problem)
            return state
    logger.warning("%s: status.planState: %s; the decision starts from the initial state "
                   "(no stabilisation, cooldown or rate-limit memory)", key, problem)
    return PlanState.initial()


@dataclasses.dataclass(frozen=True)
class Guard:
    """Why this replica must not scale the target now (None: it may), and which replica
    holds (or is assigned) the target's Lease when that is not this one."""

    blocked: tuple[str, str] | None
    other: str | None = None
    #: The scale intent found on the Lease (forescale.controller.intent), if it was read.
    intent: str | None = None


def standing_by(guard: Guard, previous: Mapping[str, Any], identity: str) -> bool:
    """Another replica holds (or is assigned) the target's Lease and reports this policy:
    this one neither reads nor plans nor writes the status (which would flap between the
    two)."""
    if guard.blocked is None or guard.blocked[0] != "TargetLocked":
        return False
    return (guard.other not in (None, identity)
            or previous.get("decidedBy") not in (None, identity))


def _policy_key(body: Mapping[str, Any]) -> str:
    """``namespace/name`` of a ScalingPolicy object."""
    meta = body.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


def _decision_time(status: Mapping[str, Any]) -> float | None:
    """A status's lastDecisionTime in seconds, or None if it has none it can read."""
    try:
        return parse_time(status.get("lastDecisionTime"))
    except (TypeError, ValueError, AttributeError):
        return None


def failure_message(exc: BaseException) -> str:
    first = (str(exc).splitlines() or [""])[0]
    text = f"the decision failed ({type(exc).__name__}: {first})"
    return text if len(text) <= _MAX_FAILURE_TEXT else text[: _MAX_FAILURE_TEXT - 1] + "…"


# --- the controller -----------------------------------------------------------------------


class Controller:
    """Shared by every policy of one operator process; keeps one chain per policy."""

    def __init__(self, settings: ControllerSettings, kube: KubeApi,
                 metrics: OperatorMetrics, *, clock: Clock = time.time,
                 sources: Callable[[str], RateSource] | None = None,
                 health: Health | None = None) -> None:
        self.settings = settings
        self.kube = kube
        self.metrics = metrics
        self.health = health if health is not None else Health()
        self.lease = LeaseLock(kube, identity=settings.identity)
        self.history = HistoryReader()
        self._clock = clock
        self._make_source: Callable[[str], RateSource] = (
            sources if sources is not None else settings.prometheus_source)
        self._chains: dict[str, tuple[ForecastSettings, ForecastChain]] = {}
        self._sources: dict[str, RateSource] = {}
        self._failures: dict[str, int] = {}
        #: The status last written per policy key: (uid, kopf's status when it was
        #: written, the status after the write): :meth:`previous_status`.
        self._reported: dict[str, tuple[Any, JSON, JSON]] = {}
        #: Leases this process holds: policy key → (namespace, lease name), to release on
        #: shutdown so that a rolling update hands over at once.
        self._held: dict[str, tuple[str, str]] = {}
        #: uids of deleted policies: a cycle still running when its policy was deleted
        #: must not take the Lease again after the release.
        self._deleted: set[str] = set()
        self._autoscaler_lists: dict[str, tuple[float, list[JSON], list[JSON]]] = {}
        #: Target Leases this replica knows of: policy key → the Lease of its target, for
        #: every policy whose target can be read, whatever its mode or state (what every
        #: replica sees alike, from the ScalingPolicy objects): what the replicas share.
        self._targets: dict[str, str] = {}
        #: policy key → (first, last) time this replica saw the free Lease of a target
        #: assigned to another replica, in sightings at most a Lease duration apart.
        self._free_since: dict[str, tuple[float, float]] = {}
        #: policy key → the assignment's input (targets, replicas) when this replica took a
        #: target assigned to another (ORPHAN_LEASE_DURATIONS): kept while that input holds,
        #: handed over when it changes (and taken again if still nobody takes it).
        self._rescued: dict[str, tuple[frozenset[str], tuple[str, ...]]] = {}
        self.membership = (Membership(kube, identity=settings.identity,
                                      namespace=settings.lease_namespace,
                                      group=settings.replica_group)
                           if settings.lease_namespace else None)
        self._lock = threading.Lock()
        #: Set on shutdown (:meth:`release_all`): no Lease is taken or renewed, no /scale
        #: written and no status reported after it.
        self._stopping = False
        #: Lease and /scale calls in progress, which :meth:`release_all` waits for.
        self._in_flight = 0
        self._idle = threading.Condition(self._lock)

    # -- the cycle -----------------------------------------------------------------------

    def cycle(self, body: Mapping[str, Any]) -> float:
        """Run one decision for ``body``; return the seconds until the next one.

        Never raises: an API error (unreachable, refused) is logged, counted and retried
        with backoff; anything else becomes a DecisionFailed status with the reason. A
        policy deleted while its cycle ran (a slow Prometheus outlasting the delete
        handler's wait; kopf then cancels the daemon, which never cleans up) leaves nothing
        behind: the series, models and history the cycle set again are dropped."""
        delay = self._cycle(body)
        if self.gone(body):
            meta = body.get("metadata") or {}
            self.forget(str(meta.get("namespace")), str(meta.get("name")))
        return delay

    def _cycle(self, body: Mapping[str, Any]) -> float:
        began, cpu_began = time.monotonic(), time.thread_time()
        key = _policy_key(body)
        if self.stopping:
            return self.settings.retry_seconds  # shutting down: the other replicas decide
        if not self.health.cycle_started(key):
            return self.settings.retry_seconds  # the previous cycle still runs
        try:
            decision, period = self._decide(body, key)
        except KubeError as exc:
            self.metrics.errors.labels("KubernetesApi").inc()
            logger.warning("%s: Kubernetes API error: %s", key, exc)
            # No decision: the last one's series would read as current (as on the other
            # paths without a plan).
            meta = body.get("metadata") or {}
            self.metrics.forget_plan(str(meta.get("namespace")), str(meta.get("name")))
            return self._backoff(key, _period_of(body))
        except Exception as exc:  # the status says why; the log keeps the traceback
            logger.exception("%s: the decision failed", key)
            self.metrics.errors.labels("DecisionFailed").inc()
            meta = body.get("metadata") or {}
            self.metrics.forget_plan(str(meta.get("namespace")), str(meta.get("name")))
            decision = Decision(now=self._clock(), generation=meta.get("generation"),
                                mode=str((body.get("spec") or {}).get("mode") or "Scale"),
                                identity=self.settings.identity,
                                failure=("DecisionFailed", failure_message(exc)))
            period = DEFAULT_PERIOD_SECONDS
            with contextlib.suppress(KubeError):
                self.report(body, decision, self.previous_status(body))
        finally:
            self.health.cycle_finished(key)
            self.metrics.latency.observe(time.monotonic() - began)
            self.metrics.cpu.observe(time.thread_time() - cpu_began)
        return self._next_delay(key, decision, period)

    def _decide(self, body: Mapping[str, Any], key: str) -> tuple[Decision, float]:
        previous = self.previous_status(body)
        now = self._clock()
        self._note_target(body, key)
        meta = body.get("metadata") or {}
        base = Decision(now=now, generation=meta.get("generation"),
                        mode=str((body.get("spec") or {}).get("mode") or "Scale"),
                        identity=self.settings.identity)
        try:
            policy = read_policy(body, self.settings)
            base = dataclasses.replace(base, mode=policy.mode,
                                       lstm_configured=policy.spec.forecast.lstm_model
                                       is not None)
            target = self.read_target(policy)
            override = self.read_override(body, policy)
            base = dataclasses.replace(base, override_read=True)
        except Invalid as exc:
            self.metrics.errors.labels(exc.reason).inc()
            self.metrics.forget_plan(str(meta.get("namespace")), str(meta.get("name")))
            decision = dataclasses.replace(base, invalid_spec=str(exc),
                                           invalid_reason=exc.condition)
            self.report(body, decision, previous)
            period = _period_of(body)
            return decision, period
        period = policy.decision_period_seconds

        guard = self.guard(policy, now, previous)
        blocked = guard.blocked
        if standing_by(guard, previous, self.settings.identity):
            # The replica that reports the policy exports its series; ours, from before a
            # handover, would stay frozen beside them (and alerts fire on the stale copy).
            self.metrics.forget(policy.namespace, policy.name)
            return dataclasses.replace(base, blocked=blocked), period
        if self.stopping:
            return dataclasses.replace(base, blocked=blocked), period
        if blocked is None and override is not None and override.replicas is None:
            blocked = (override.reason, override.message)  # paused: hold, never write
        if blocked is None and target.current_replicas == 0 and override is None:
            # Someone scaled it to zero (maintenance, an incident): as the HPA does, that
            # disables scaling until the target is scaled up again (a pin still applies).
            blocked = ("ScalingDisabled", f"{policy.target.kind} {policy.target.name} has 0 "
                       f"replicas: scaling is disabled, as the HPA does, until it is scaled "
                       f"to at least 1 (or pinned)")

        history = self.read_history(policy, now)
        state, resumed = self.resume(policy, previous, target, guard.intent)
        result = apply_override(self.plan(policy, history, target, state, now), override,
                                policy.spec)
        intent = None if policy.uid is None else ScaleIntent.of(
            policy.uid, target.current_replicas, result.desired_replicas,
            result.state).encode()
        scaled_to, blocked, settled = self.apply(policy, target, result, blocked,
                                                 intent=intent)
        if guard.blocked is None and not self._still_held(policy, now, blocked):
            # Another replica took the Lease over while this cycle ran (a slow read or fit)
            # and reports the policy from the state after its own writes: ours, planned
            # from the state before them, would overwrite its scale events.
            logger.warning("%s: lost the Lease of its target during the cycle; the new "
                           "holder reports the policy", policy.key)
            self.metrics.forget(policy.namespace, policy.name)
            decision = dataclasses.replace(base, plan=result, blocked=blocked,
                                           scaled_to=scaled_to)
            self._post_scale_event(body, decision)
            return decision, period
        decision = dataclasses.replace(
            base, plan=result, metrics_error=history.error, invalid_spec=history.invalid,
            blocked=blocked, scaled_to=scaled_to, observed_rate=_last_finite(history.series),
            paused=None if override is None else (override.reason, override.message),
            scale_intent=intent_key(intent) if settled and intent else resumed)
        self._observe(policy, decision)
        if not self.stopping:  # else the next holder reports (ours could overwrite its)
            self.report(body, decision, previous)
        else:  # but a scale that happened is said, whoever reports the status
            self._post_scale_event(body, decision)
        return decision, period

    def _post_scale_event(self, body: Mapping[str, Any], d: Decision) -> None:
        """The ScaledUp/ScaledDown Event of a write this cycle made but does not report."""
        event = scale_event(d)
        if event is not None:
            self._event(body, event.type, event.reason, event.message, d.now)

    def _next_delay(self, key: str, decision: Decision, period: float) -> float:
        if (decision.metrics_error is not None and decision.invalid_spec is None) or \
                decision.failure is not None:
            return self._backoff(key, period)
        with self._lock:
            self._failures[key] = 0
        return period

    def _backoff(self, key: str, period: float) -> float:
        """Back off from a failing dependency (Prometheus, the Kubernetes API): quick first
        retries, then once a period."""
        with self._lock:
            failures = self._failures.get(key, 0)
            self._failures[key] = failures + 1
        return float(min(period, self.settings.retry_seconds * 2 ** min(failures, 16)))

    def previous_status(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        """The policy's status as last written: kopf's view of it, or the one this process
        last wrote for the policy (same uid) while kopf's view is still the one that write
        was planned from (the write failed, or its watch event has not arrived). A status
        write that failed after a /scale write must not lose the scale event: a retry
        planning from the older status would write /scale again under a fresh rate-limit
        allowance, forget the scale-down stabilisation and post ScaledUp/ScaledDown again.
        Which status is newer is never judged by lastDecisionTime: a clock stepped back
        (or another replica's running fast) would make the older one look newer."""
        status: Mapping[str, Any] = body.get("status") or {}
        with self._lock:
            mine = self._reported.get(_policy_key(body))
        if mine is None or mine[0] != (body.get("metadata") or {}).get("uid"):
            return status
        return mine[2] if plain(status) == mine[1] else status

    # -- the steps -----------------------------------------------------------------------

    def read_target(self, policy: Policy) -> Target:
        ref = policy.target
        resource = self.kube.resolve_scale(ref.api_version, ref.kind)
        if resource is None:
            raise Invalid("InvalidSpec", f"scaleTargetRef {ref.api_version} {ref.kind} has "
                                         f"no /scale subresource in this cluster")
        try:
            scale = self.kube.get_scale(resource, policy.namespace, ref.name)
        except NotFound:
            raise Invalid("TargetNotFound", f"scale target {ref.kind} {policy.namespace}/"
                                            f"{ref.name} not found",
                          condition="TargetNotFound") from None
        except KubeError as exc:
            # An answer that retrying will not change: say so in the status (once a period)
            # rather than retrying unseen. Anything else (no answer, 5xx) is retried.
            if exc.status == 403:
                group = resource.group or "core"
                raise Invalid("TargetForbidden", (
                    f"the operator may not read the /scale of {ref.kind} {policy.namespace}/"
                    f"{ref.name}: grant its ServiceAccount get and patch on "
                    f"{resource.plural}/scale in API group {group} "
                    f"({exc.reason}: {exc.message[:200]})"),
                    condition="TargetForbidden") from None
            if exc.status in UNREADABLE_STATUSES:
                raise Invalid("TargetUnreadable", (
                    f"the API server refuses to read the /scale of {ref.kind} "
                    f"{policy.namespace}/{ref.name}: {str(exc)[:200]}"),
                    condition="TargetUnreadable") from None
            raise
        replicas = (scale.get("spec") or {}).get("replicas") or 0
        return Target(resource=resource,
                      current_replicas=replicas if isinstance(replicas, int) else 0,
                      resource_version=str((scale.get("metadata") or {})
                                           .get("resourceVersion", "")))

    def read_override(self, body: Mapping[str, Any], policy: Policy) -> Override | None:
        """A pause or pin annotation (controller.overrides); an unreadable one is an
        InvalidSpec, so that whoever tried to pause never finds the workload scaled."""
        annotations = (body.get("metadata") or {}).get("annotations")
        try:
            return read_override(annotations if isinstance(annotations, Mapping) else None,
                                 policy.spec)
        except InvalidInputError as exc:
            raise Invalid("InvalidSpec", str(exc)) from None

    def guard(self, policy: Policy, now: float,
              previous: Mapping[str, Any] | None = None) -> Guard:
        """Whether this replica may scale the target now (it holds the Lease)."""
        if policy.mode == "Observe":
            return self._observer(policy, now, previous or {}, (
                "ObserveMode", "Observe mode: forecasting only, the target is not scaled"))
        try:
            hpas, scaled_objects = self._autoscalers(policy.namespace, now)
        except KubeError as exc:
            if exc.status != 403:
                raise
            # Without knowing the other autoscalers it must not scale: it could fight one.
            return Guard(("AutoscalersForbidden", (
                f"the operator may not list the autoscalers of namespace "
                f"{policy.namespace}, so it does not scale: grant its ServiceAccount list on "
                f"horizontalpodautoscalers (API group autoscaling) and scaledobjects "
                f"(keda.sh) ({exc.reason}: {exc.message[:200]})")))
        conflict = conflicting_autoscaler(policy, hpas, scaled_objects)
        if conflict is not None:
            return self._observer(policy, now, previous or {}, conflict)
        try:
            held = self._ensure_lease(policy, now)
        except KubeError as exc:
            if exc.status != 403:
                raise
            namespace, _ = self.lease_ref(policy)
            return Guard(("LeaseForbidden", (
                f"the operator may not use Leases in namespace {namespace}, so it does not "
                f"scale: grant its ServiceAccount get, create, update and delete on leases "
                f"(API group coordination.k8s.io) there, or run it with --lease-namespace "
                f"({exc.reason}: {exc.message[:200]})")))
        if held.held:
            return Guard(None, intent=held.intent)
        return Guard(("TargetLocked", held.message), other=held.holder)

    def _observer(self, policy: Policy, now: float, previous: Mapping[str, Any],
                  blocked: tuple[str, str]) -> Guard:
        """A policy nobody may scale (Observe mode, another autoscaler) is still read,
        planned and reported, without a Lease: by the replica its target is assigned to,
        as if it held one, so that a second replica costs Prometheus nothing and the status
        does not alternate between writers. This replica reports it anyway when it did at
        the last decision, or when nobody has for :data:`ORPHAN_LEASE_DURATIONS` Lease
        durations (the assigned replica does not see the policy)."""
        if self.membership is None:
            return Guard(blocked)
        _, name = self.lease_ref(policy)
        owner = self.membership.assigned(name, self._known_targets(name), now)
        me = self.settings.identity
        if owner in (None, me) or previous.get("decidedBy") in (None, me):
            return Guard(blocked)
        last = _decision_time(previous)
        if last is None or not 0 <= now - last <= ORPHAN_LEASE_DURATIONS * \
                self._duration(policy):
            return Guard(blocked)
        return Guard(("TargetLocked", f"{blocked[0]}: reported by replica {owner}, the one "
                                      f"its target is assigned to"), other=owner)

    def _autoscalers(self, namespace: str, now: float) -> tuple[list[JSON], list[JSON]]:
        """The namespace's HPAs and ScaledObjects, listed at most every
        :data:`AUTOSCALERS_TTL_SECONDS`: a thousand policies in one namespace must not mean
        two thousand LISTs a period, and a new HPA is noticed within seconds anyway."""
        with self._lock:
            cached = self._autoscaler_lists.get(namespace)
        if cached is not None and 0 <= now - cached[0] < AUTOSCALERS_TTL_SECONDS:
            return cached[1], cached[2]
        hpas = self.kube.list_hpas(namespace)
        scaled_objects = self.kube.list_scaled_objects(namespace)
        with self._lock:
            self._autoscaler_lists[namespace] = (now, hpas, scaled_objects)
        return hpas, scaled_objects

    def read_history(self, policy: Policy, now: float) -> History:
        step = self.settings.step_seconds
        url = policy.metrics.prometheus_url or self.settings.prometheus_url
        assert url  # read_policy refuses a policy without one
        start, end = history_window(now, policy.spec.forecast.history_seconds, step)
        empty = Series.from_array(np.array([]), start_seconds=now, step_seconds=step)
        try:
            read = self.history.read(policy.key, self._source(url), url=url,
                                     query=policy.metrics.query, start=start, end=end,
                                     step_seconds=step)
        except BadQuery as exc:
            self.metrics.errors.labels(exc.reason).inc()
            return History(empty, (exc.reason, str(exc)), str(exc))
        except MetricsError as exc:
            self.metrics.errors.labels(exc.reason).inc()
            return History(empty, (exc.reason, str(exc)))
        except InvalidInputError as exc:
            return History(empty, ("BadQuery", str(exc)), str(exc))
        self.metrics.points_read.inc(read.points_read)
        return History(read.series)

    def resume(self, policy: Policy, previous: Mapping[str, Any], target: Target,
               annotation: str | None) -> tuple[PlanState, str | None]:
        """The state to plan from: the status's, or the one a write left whose status was
        lost (``annotation``: the Lease's record of it, forescale.controller.intent); and
        the key of that record when it was used, for the status to account for it."""
        stored = previous_state(previous, policy.key)
        found = ScaleIntent.decode(annotation)
        state = resumed_state(stored, found, policy_uid=policy.uid,
                              current_replicas=target.current_replicas,
                              accounted=previous.get("scaleIntent"))
        if state is stored or found is None:
            return stored, None
        logger.warning("%s: the status does not account for this policy's last /scale write "
                       "(to %s replicas), which the Lease records: planning from the state "
                       "after it", policy.key, target.current_replicas)
        return state, found.key

    def plan(self, policy: Policy, history: History, target: Target, state: PlanState,
             now: float) -> Plan:
        return plan(history.series, policy.spec, state, now,
                    current_replicas=target.current_replicas,
                    chain=self._chain(policy.key, policy.spec.forecast),
                    guardrails=self.read_guardrails(policy, history, now))

    def read_guardrails(self, policy: Policy, history: History,
                        now: float) -> list[GuardrailReading]:
        """Each guardrail query's value now; None where it has none (a guardrail without
        a value asks for nothing). Read when the arrival rate could not be too (no series,
        several: the plan holds, but a guardrail may still scale up, as the HPA does with
        the metrics it can read), except when Prometheus itself is unavailable (every query
        would wait out its timeout) or rejects the rate query (InvalidSpec: fixed first)."""
        if not policy.spec.guardrails or history.invalid is not None or (
                history.error is not None and history.error[0] == "PrometheusUnavailable"):
            return []
        url = policy.metrics.prometheus_url or self.settings.prometheus_url
        assert url  # read_policy refuses a policy without one
        source = self._source(url)
        readings = []
        for g in policy.spec.guardrails:
            value: float | None
            try:
                value = source.read_value(g.query, at=now)
            except (MetricsError, InvalidInputError) as exc:
                self.metrics.errors.labels(getattr(exc, "reason", "BadQuery")).inc()
                logger.warning("%s: guardrail %s has no value: %s", policy.key, g.name, exc)
                value = None
            readings.append(GuardrailReading(g, value))
        return readings

    def apply(self, policy: Policy, target: Target, result: Plan,
              blocked: tuple[str, str] | None, *,
              intent: str | None) -> tuple[int | None, tuple[str, str] | None, bool]:
        """Write the desired replicas if allowed and needed: (replicas written or None,
        why not, whether ``intent`` was recorded and the write's outcome is known). Renews
        the Lease right before the write, with a fresh clock: a slow fit must not date the
        renewal back, or the lease could lapse before the write. The renewal records the
        write's ``intent``: a status lost after the write must not lose its scale event
        (forescale.controller.intent); a status that says the outcome accounts for it."""
        if blocked is not None or result.desired_replicas == target.current_replicas:
            return None, blocked, False
        with self._operation() as allowed:
            if not allowed:
                return None, ("TargetLocked", SHUTTING_DOWN), False
            return self._write_scale(policy, target, result, intent)

    def _still_held(self, policy: Policy, renewed: float,
                    blocked: tuple[str, str] | None) -> bool:
        """Whether nobody has taken over the target's Lease, which this replica renewed at
        ``renewed``, so that it may report the cycle. Nobody can take a Lease over within
        its duration of the last renewal: only a cycle that outlasted half of it asks the
        API server."""
        if blocked is not None and blocked[0] == "TargetLocked":
            return False  # the renewal before the /scale write found it taken
        if 0 <= self._clock() - renewed < self._duration(policy) / 2:
            return True
        namespace, name = self.lease_ref(policy)
        with self._operation() as allowed:
            return allowed and not self.lease.taken_over(namespace, name, policy=policy.key)

    def _write_scale(self, policy: Policy, target: Target, result: Plan, intent: str | None
                     ) -> tuple[int | None, tuple[str, str] | None, bool]:
        renewed = self._clock()
        held = self._ensure_lease(policy, renewed, intent=intent)
        if not held.held:
            return None, ("TargetLocked", held.message), False
        ref = policy.target
        started = self._clock()
        try:
            written = self.kube.patch_scale(target.resource, policy.namespace, ref.name,
                                            replicas=result.desired_replicas,
                                            resource_version=target.resource_version)
        except KubeError as exc:
            applied, known = self._applied_anyway(policy, target, result, exc)
            if applied is None:
                self.metrics.errors.labels("ScaleFailed").inc()
                # A condition (ScalingActive=False), so the Warning is posted on the
                # transition and a write the authorizer forbids shows in the status, not
                # every cycle. Known not made, its intent is accounted for: a count someone
                # sets later is theirs, not this write's.
                return None, ("ScaleFailed", f"could not scale {ref.kind} {ref.name}: "
                                             f"{str(exc)[:200]}"), known
            written = applied
        _log_scale_write(identity=self.settings.identity, policy=policy.key, kind=ref.kind,
                         target=ref.name, replicas=result.desired_replicas,
                         resource_version=(written.get("metadata") or {}).get(
                             "resourceVersion"),
                         lease_renew_time=renewed, lease_duration=self._duration(policy),
                         started=started, finished=self._clock())
        self.metrics.scales.labels(
            "up" if result.desired_replicas > target.current_replicas else "down").inc()
        return result.desired_replicas, None, True

    def _applied_anyway(self, policy: Policy, target: Target, result: Plan,
                        exc: KubeError) -> tuple[JSON | None, bool]:
        """The /scale a write that got no answer (a timeout, a 5xx from a proxy) left, if
        the write was applied nonetheless: its replicas are the ones written and its
        resourceVersion moved. Recorded as not made, an applied write would be made again
        under a fresh rate-limit allowance (the next plan would see an outside change and
        drop the scale events). None when it was not applied or nobody can tell; and
        whether that is known (False: the read after it failed too)."""
        if not (exc.status == 0 or exc.status >= 500):
            return None, True  # an answer: the write was refused (409, 403, 422 ...)
        ref = policy.target
        try:
            scale = self.kube.get_scale(target.resource, policy.namespace, ref.name)
        except KubeError:
            return None, False
        version = str((scale.get("metadata") or {}).get("resourceVersion", ""))
        if (scale.get("spec") or {}).get("replicas") != result.desired_replicas or \
                version == target.resource_version:
            return None, True
        logger.warning("%s: the /scale write got no answer (%s) but was applied",
                       policy.key, exc)
        return scale, True

    def report(self, body: Mapping[str, Any], d: Decision,
               previous: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        for event in events(d, previous):
            self._event(body, event.type, event.reason, event.message, d.now)
        if d.metrics_error is not None:
            logger.warning("%s/%s: metrics unavailable: %s", meta.get("namespace"),
                           meta.get("name"), d.metrics_error[1])
        status = build_status(d, previous)
        with self._lock:  # what the next cycle plans from if this write fails
            self._reported[_policy_key(body)] = (
                meta.get("uid"), plain(body.get("status") or {}), merge_patch(previous, status))
        try:
            self.kube.patch_policy_status(str(meta.get("namespace")), str(meta.get("name")),
                                          status)
        except NotFound:
            # Deleted, and this replica was not told (its watch missed the event: a
            # re-list after a 410 Gone reports no deletions): it must stop, or its daemon
            # would take the released Lease again and scale the workload for ever.
            self._mark_deleted(meta.get("uid"))
            logger.warning("%s/%s: the policy is gone; its decisions stop",
                           meta.get("namespace"), meta.get("name"))
            return
        self.metrics.decision.observe_conditions(str(meta.get("namespace")),
                                                 str(meta.get("name")), status["conditions"])
        self.health.api_reached()
        logger.info("%s/%s: %s", meta.get("namespace"), meta.get("name"),
                    d.invalid_spec or (d.failure[1] if d.failure else None)
                    or (d.plan.message if d.plan else "no decision"))

    # -- leases --------------------------------------------------------------------------

    def _duration(self, policy: Policy) -> int:
        return lease_duration_seconds(policy.decision_period_seconds,
                                      self.settings.lease_extra_seconds)

    def lease_ref(self, policy: Policy) -> tuple[str, str]:
        """(namespace, name) of the target's Lease."""
        return self._target_lease(policy.namespace, policy.target)

    def _target_lease(self, namespace: str, target: ScaleTarget) -> tuple[str, str]:
        shared = self.settings.lease_namespace
        if shared is None:
            return namespace, lease_name(target.kind, target.name)
        return shared, lease_name(target.kind, target.name, namespace=namespace)

    def _note_target(self, body: Mapping[str, Any], key: str) -> None:
        """Count this policy's target among the targets the replicas share, or stop counting
        it, at the start of every cycle, whatever the cycle then finds (an invalid spec, a
        missing target, Observe mode, another autoscaler): what is counted must be what
        every replica sees alike in the policy itself. Counting only the policies that
        reached their Lease made the replicas' views differ (one restarted after a policy
        went to Observe mode), and then a live target could be each one's in the other's
        view, so nobody's."""
        meta = body.get("metadata") or {}
        target = target_of(body)
        with self._lock:
            if meta.get("uid") in self._deleted:
                return  # being deleted: release() forgets it, a late cycle must not add it
            if target is None:
                self._targets.pop(key, None)
            else:
                self._targets[key] = self._target_lease(str(meta.get("namespace")), target)[1]

    def _known_targets(self, name: str) -> frozenset[str]:
        """The target Leases the replicas share, as this one knows them (noted at the start
        of each cycle: :meth:`_note_target`), ``name``'s own counted in any case."""
        with self._lock:
            return frozenset({*self._targets.values(), name})

    @contextlib.contextmanager
    def _operation(self) -> Iterator[bool]:
        """A Lease or /scale call: yields False once the operator is stopping (then nothing
        may be called); :meth:`release_all` waits for the ones in progress."""
        with self._lock:
            if self._stopping:
                allowed = False
            else:
                allowed = True
                self._in_flight += 1
        try:
            yield allowed
        finally:
            if allowed:
                with self._lock:
                    self._in_flight -= 1
                    self._idle.notify_all()

    @property
    def stopping(self) -> bool:
        with self._lock:
            return self._stopping

    def _ensure_lease(self, policy: Policy, now: float, *,
                      intent: str | None = None) -> LeaseState:
        with self._operation() as allowed:
            if not allowed:
                return LeaseState(False, None, SHUTTING_DOWN)
            return self._ensure_lease_now(policy, now, intent=intent)

    def _ensure_lease_now(self, policy: Policy, now: float, *,
                          intent: str | None = None) -> LeaseState:
        namespace, name = self.lease_ref(policy)
        with self._lock:
            if policy.uid is not None and policy.uid in self._deleted:
                return LeaseState(False, None, "the policy is being deleted")
        known = self._known_targets(name)
        if self.membership is not None:
            owner = self.membership.assigned(name, known, now)
            if owner is not None and owner != self.settings.identity:
                not_ours = self._assigned_elsewhere(policy, (namespace, name), owner, known,
                                                    now)
                if not_ours is not None:
                    return not_ours
            else:
                with self._lock:
                    self._free_since.pop(policy.key, None)
                    self._rescued.pop(policy.key, None)
        self._release_former(policy, (namespace, name))
        state = self.lease.ensure(namespace, name, policy=policy.key,
                                  duration=self._duration(policy), now=now, intent=intent)
        with self._lock:
            if state.held:
                self._held[policy.key] = (namespace, name)
            else:
                self._held.pop(policy.key, None)
        return state

    def _release_former(self, policy: Policy, lease: tuple[str, str]) -> None:
        """Release the Lease of the policy's former target (its scaleTargetRef changed):
        kept, it would stop another policy of that target for a Lease duration."""
        with self._lock:
            former = self._held.get(policy.key)
        if former is None or former == lease:
            return
        try:
            self.lease.release(*former, policy=policy.key)
        except KubeError as exc:
            logger.warning("%s: could not release the Lease %s/%s of its former target: %s",
                           policy.key, *former, exc)
            return  # it expires anyway; tried again next cycle
        with self._lock:
            if self._held.get(policy.key) == former:
                del self._held[policy.key]

    def _assigned_elsewhere(self, policy: Policy, lease: tuple[str, str], owner: str,
                            known: frozenset[str], now: float) -> LeaseState | None:
        """The target is assigned to ``owner``: hand it over if we hold it (a replica
        joined) and stand by — unless its Lease has stayed free for ORPHAN_LEASE_DURATIONS
        (the replicas' views differ and nobody takes it) or we took it so and the assignment
        has not changed since; None then: take or keep it (the Lease keeps it exclusive)."""
        assert self.membership is not None
        namespace, name = lease
        me, key = self.settings.identity, policy.key
        members = tuple(self.membership.members(now))
        holder = self.lease.peek(namespace, name, now=now)
        duration = self._duration(policy)
        with self._lock:
            if holder is not None:
                self._free_since.pop(key, None)
                free_for = 0.0
            else:
                first, last = self._free_since.get(key, (now, now))
                if not 0 <= now - last <= duration:  # a gap, or the clock stepped back
                    first = now
                self._free_since[key] = (first, now)
                free_for = now - first
            keep = holder in (me, None) and self._rescued.get(key) == (known, members)
        if keep:
            return None
        if holder is None and free_for >= ORPHAN_LEASE_DURATIONS * duration:
            logger.warning("%s: target %s/%s is assigned to replica %s but its Lease has "
                           "been free for %.0f s: taking it (the replicas' views of the "
                           "targets differ)", key, policy.namespace, policy.target.name,
                           owner, free_for)
            self.metrics.errors.labels("TargetUnowned").inc()
            with self._lock:
                self._rescued[key] = (known, members)
                self._free_since.pop(key, None)
            return None
        if holder == me:  # not ours any more: hand it over (a replica joined)
            self.lease.release(namespace, name, policy=key, handover=True)
        with self._lock:
            self._held.pop(key, None)
            self._rescued.pop(key, None)
        return LeaseState(False, owner, f"target assigned to replica {owner} "
                                        f"({len(members)} replicas share the targets)")

    def heartbeat(self) -> None:
        """Renew this replica's membership (from a timer in kopf's loop); never again once
        stopping (it would count this replica alive after it left)."""
        if self.membership is None:
            return
        with self._operation() as allowed:
            if allowed:
                self.membership.heartbeat(self._clock())

    def _mark_deleted(self, uid: object) -> None:
        """No cycle of the policy with ``uid`` takes its Lease again."""
        if isinstance(uid, str):
            with self._lock:
                self._deleted.add(uid)

    def gone(self, body: Mapping[str, Any]) -> bool:
        """Whether ``body``'s policy was deleted (told by kopf, or found by a status write
        that got 404): its daemon stops and releases its Lease."""
        uid = (body.get("metadata") or {}).get("uid")
        with self._lock:
            return uid in self._deleted

    def release(self, body: Mapping[str, Any], *, wait_seconds: float = 30.0) -> bool:
        """Give up the target's lease: the policy was deleted. A cycle of it still running
        is waited for (it may have just renewed the Lease) and cannot take it again."""
        meta = body.get("metadata") or {}
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        self._mark_deleted(meta.get("uid"))
        deadline = time.monotonic() + wait_seconds
        while self.health.running(f"{namespace}/{name}") and time.monotonic() < deadline:
            time.sleep(0.05)
        self.forget(namespace, name)
        target = target_of(body)
        if target is None:
            return False
        lease_ns, lease = self._target_lease(namespace, target)
        return self.lease.release(lease_ns, lease, policy=f"{namespace}/{name}")

    def release_all(self, *, wait_seconds: float = 15.0) -> int:
        """Release every Lease this process holds (on SIGTERM), membership first: the other
        replicas take the targets over on their next cycle instead of after a Lease
        duration. From now on no cycle takes or renews a Lease, writes /scale or reports;
        the Lease and /scale calls already in progress are waited for (at most
        ``wait_seconds``), so that none renews a Lease after its release."""
        with self._lock:
            self._stopping = True
            if not self._idle.wait_for(lambda: self._in_flight == 0, timeout=wait_seconds):
                logger.warning("shutting down with %d Lease or /scale call(s) still in "
                               "progress", self._in_flight)
        if self.membership is not None:
            self.membership.leave()
        with self._lock:
            held = dict(self._held)
            self._held.clear()
        released = 0
        for key, (namespace, name) in held.items():
            try:
                released += self.lease.release(namespace, name, policy=key, handover=True)
            except KubeError as exc:
                logger.warning("could not release lease %s/%s: %s", namespace, name, exc)
        return released

    # -- helpers -------------------------------------------------------------------------

    def _chain(self, key: str, settings: ForecastSettings) -> ForecastChain:
        with self._lock:
            known = self._chains.get(key)
            if known is None or known[0] != settings:
                # New settings mean new models: a chain fitted for others would mislead.
                known = (settings, ForecastChain(settings, clock=time.monotonic))
                self._chains[key] = known
            return known[1]

    def _source(self, url: str) -> RateSource:
        with self._lock:
            if url not in self._sources:
                self._sources[url] = self._make_source(url)
            return self._sources[url]

    def _event(self, body: Mapping[str, Any], type_: str, reason: str, message: str,
               now: float) -> None:
        try:
            self.kube.create_event(involved=body, type_=type_, reason=reason,
                                   message=message, now=now, component="forescale",
                                   instance=self.settings.identity)
        except KubeError as exc:  # an event is worth a log line, not a failed cycle
            logger.warning("could not post event %s: %s", reason, exc)

    def _observe(self, policy: Policy, d: Decision) -> None:
        m = self.metrics
        namespace, name = policy.namespace, policy.name
        # A value this decision has not (no sample, a hold) is removed, not left at the last.
        if d.observed_rate is not None:
            m.observed_rate.labels(namespace, name).set(d.observed_rate)
        else:
            remove_series(m.observed_rate, namespace, name)
        if d.plan is not None:
            m.desired.labels(namespace, name).set(d.plan.desired_replicas)
            m.current.labels(namespace, name).set(d.plan.current_replicas)
            if d.plan.planned_arrival_rate is not None:
                m.forecast_rate.labels(namespace, name).set(d.plan.planned_arrival_rate)
            else:
                remove_series(m.forecast_rate, namespace, name)
            m.set_serving(namespace, name, d.plan.served_by)
            m.decision.observe_plan(namespace, name, d.plan,
                                    lead_time_seconds=policy.spec.lead_time_seconds)

    def forget(self, namespace: str, name: str) -> None:
        key = f"{namespace}/{name}"
        with self._lock:
            self._chains.pop(key, None)
            self._failures.pop(key, None)
            self._reported.pop(key, None)
            self._held.pop(key, None)
            self._targets.pop(key, None)
            self._free_since.pop(key, None)
            self._rescued.pop(key, None)
        self.history.forget(key)
        self.metrics.forget(namespace, name)


#: The prefix of the one log line per scale write; the rest of the line is JSON.
SCALE_WRITE_LOG = "scale write "


def _log_scale_write(**fields: Any) -> None:
    """One machine-readable line per successful /scale write: who (identity), what
    (target, replicas, the resourceVersion the write produced), when (wall time before and
    after the request) and under which lease (the renewTime and duration this operator
    wrote right before). Audits on a real cluster, where the API server's own audit log is
    out of reach, match these against a watch of the target and of the Lease."""
    logger.info("%s%s", SCALE_WRITE_LOG, json.dumps(fields, sort_keys=True))


def _last_finite(series: Series) -> float | None:
    finite = series.values[np.isfinite(series.values)]
    return float(finite[-1]) if finite.size else None


def _period_of(body: Mapping[str, Any]) -> float:
    """The retry period of a policy whose spec did not validate: its own period if that
    much is readable and sane, else the default."""
    value = (body.get("spec") or {}).get("decisionPeriodSeconds")
    if isinstance(value, int | float) and not isinstance(value, bool) and 5 <= value <= 86400:
        return float(value)
    return DEFAULT_PERIOD_SECONDS
