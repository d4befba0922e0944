"""One policy's decision cycle: read, plan, lock, scale, report. Synchronous (run in a
thread by the kopf daemon), so that a slow model fit never blocks kopf's event loop.

``now`` comes from the injected clock (wall time by default, read once per cycle at this
boundary); the core never reads a clock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from forescale.adapters.prometheus import BadQuery, MetricsError, PrometheusSource
from forescale.controller.kube import KubeClient, KubeError, NotFound
from forescale.controller.lease import LeaseLock, lease_duration_seconds, lease_name
from forescale.controller.metrics import OperatorMetrics
from forescale.controller.settings import ControllerSettings
from forescale.controller.status import Decision, build_status, events
from forescale.core.errors import InvalidInputError
from forescale.core.forecast.chain import ForecastChain
from forescale.core.plan import PlanState, plan
from forescale.core.series import Series
from forescale.core.spec import ForecastSettings, PolicySpec
from forescale.policy import API_VERSION, KIND, policy_spec_from_manifest

logger = logging.getLogger("forescale.controller")

Clock = Callable[[], float]


class Controller:
    """Shared by every policy of one operator process; keeps one chain per policy."""

    def __init__(self, settings: ControllerSettings, kube: KubeClient,
                 metrics: OperatorMetrics, *, clock: Clock = time.time) -> None:
        self.settings = settings
        self.kube = kube
        self.metrics = metrics
        self.lease = LeaseLock(kube, identity=settings.identity)
        self._clock = clock
        self._chains: dict[str, tuple[ForecastSettings, ForecastChain]] = {}
        self._sources: dict[str, PrometheusSource] = {}
        self._failures: dict[str, int] = {}
        self._lock = threading.Lock()

    # -- helpers -------------------------------------------------------------------------

    def _chain(self, key: str, settings: ForecastSettings) -> ForecastChain:
        with self._lock:
            known = self._chains.get(key)
            if known is None or known[0] != settings:
                # New settings mean new models: a chain fitted for others would mislead.
                known = (settings, ForecastChain(settings, clock=time.monotonic))
                self._chains[key] = known
            return known[1]

    def _source(self, url: str) -> PrometheusSource:
        with self._lock:
            if url not in self._sources:
                self._sources[url] = self.settings.prometheus_source(url)
            return self._sources[url]

    def _event(self, body: Mapping[str, Any], type_: str, reason: str, message: str,
               now: float) -> None:
        try:
            self.kube.create_event(involved=body, type_=type_, reason=reason,
                                   message=message, now=now, component="forescale",
                                   instance=self.settings.identity)
        except KubeError as exc:  # an event is worth a log line, not a failed cycle
            logger.warning("could not post event %s: %s", reason, exc)

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._chains.pop(f"{namespace}/{name}", None)
            self._failures.pop(f"{namespace}/{name}", None)
        self.metrics.forget(namespace, name)

    # -- the cycle -----------------------------------------------------------------------

    def cycle(self, body: Mapping[str, Any]) -> float:
        """Run one decision for ``body``; return the seconds until the next one."""
        began = time.monotonic()
        meta = body.get("metadata") or {}
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        key = f"{namespace}/{name}"
        try:
            decision, period = self._decide(body, key)
        finally:
            self.metrics.latency.observe(time.monotonic() - began)
        failures = self._failures.get(key, 0)
        if decision.metrics_error is not None and decision.invalid_spec is None:
            # Back off from a failing Prometheus: quick first retries, then once a period.
            self._failures[key] = failures + 1
            return float(min(period, self.settings.retry_seconds * 2 ** failures))
        self._failures[key] = 0
        return period

    def _decide(self, body: Mapping[str, Any], key: str) -> tuple[Decision, float]:
        meta = body.get("metadata") or {}
        namespace = str(meta.get("namespace"))
        raw_spec = body.get("spec") or {}
        previous = body.get("status") or {}
        now = self._clock()
        mode = str(raw_spec.get("mode") or "Scale")
        base = Decision(now=now, generation=meta.get("generation"), mode=mode,
                        identity=self.settings.identity)
        period = float(raw_spec.get("decisionPeriodSeconds") or 60.0)

        def finish(decision: Decision, *, write: bool = True) -> tuple[Decision, float]:
            if write:
                self._report(body, decision, previous)
            return decision, period

        try:
            spec = policy_spec_from_manifest({"apiVersion": API_VERSION, "kind": KIND,
                                              "spec": raw_spec},
                                             models_dir=self.settings.models_dir)
        except InvalidInputError as exc:
            self.metrics.errors.labels("InvalidSpec").inc()
            return finish(dataclasses.replace(base, invalid_spec=str(exc)))
        period = spec.decision_period_seconds
        base = dataclasses.replace(base, lstm_configured=spec.forecast.lstm_model is not None)

        ref = raw_spec.get("scaleTargetRef") or {}
        api_version, kind, target = (str(ref.get("apiVersion", "apps/v1")),
                                     str(ref.get("kind", "Deployment")), str(ref.get("name")))
        resource = self.kube.resolve_scale(api_version, kind)
        if resource is None:
            self.metrics.errors.labels("InvalidSpec").inc()
            return finish(dataclasses.replace(base, invalid_spec=(
                f"scaleTargetRef {api_version} {kind} has no /scale subresource in this "
                f"cluster")))
        try:
            scale = self.kube.get_scale(resource, namespace, target)
        except NotFound:
            self.metrics.errors.labels("TargetNotFound").inc()
            return finish(dataclasses.replace(base, invalid_spec=(
                f"scale target {kind} {namespace}/{target} not found")))
        current = int((scale.get("spec") or {}).get("replicas") or 0)
        scale_rv = str((scale.get("metadata") or {}).get("resourceVersion", ""))

        history, metrics_error, invalid = self._history(raw_spec, spec, now)
        observed = _last_finite(history)
        try:
            state = PlanState.from_dict(previous.get("planState"))
        except InvalidInputError:
            state = PlanState.initial()  # a damaged state only loses stabilisation memory
        result = plan(history, spec, state, now, current_replicas=current,
                      chain=self._chain(key, spec.forecast))

        blocked = self._blocked(mode, namespace, kind, target, key, period, now)
        scaled_to = None
        if blocked is None and result.desired_replicas != current:
            # Renew right before the write: a successful, resourceVersion-checked renewal
            # means we hold the lease for a full duration from now.
            # With a fresh clock, not the cycle's: a slow fit must not date the renewal
            # back, or the lease could lapse before the write it guards.
            renewed = self._clock()
            duration = self._duration(period)
            state_now = self.lease.ensure(namespace, lease_name(kind, target), policy=key,
                                          duration=duration, now=renewed)
            if not state_now.held:
                blocked = ("TargetLocked", state_now.message)
            else:
                try:
                    started = self._clock()
                    written = self.kube.patch_scale(resource, namespace, target,
                                                    replicas=result.desired_replicas,
                                                    resource_version=scale_rv)
                    scaled_to = result.desired_replicas
                    _log_scale_write(identity=self.settings.identity, policy=key,
                                     kind=kind, target=target, replicas=scaled_to,
                                     resource_version=(written.get("metadata") or {}).get(
                                         "resourceVersion"),
                                     lease_renew_time=renewed, lease_duration=duration,
                                     started=started, finished=self._clock())
                    self.metrics.scales.labels(
                        "up" if scaled_to > current else "down").inc()
                except KubeError as exc:
                    self.metrics.errors.labels("ScaleFailed").inc()
                    self._event(body, "Warning", "ScaleFailed",
                                f"could not scale {kind} {target}: {exc}", now)
        if scaled_to is None and result.desired_replicas != current:
            # Nothing was applied: keep the rate-limit and cooldown memory as it was.
            result = dataclasses.replace(result, state=dataclasses.replace(
                result.state, scale_events=state.scale_events,
                last_scale_seconds=state.last_scale_seconds))
        decision = dataclasses.replace(base, plan=result, metrics_error=metrics_error,
                                       invalid_spec=invalid, blocked=blocked,
                                       scaled_to=scaled_to, observed_rate=observed)
        self._observe(namespace, str(meta.get("name")), decision)
        # A standby operator does not overwrite the status the lease holder writes.
        holder_reports = (blocked is not None and blocked[0] == "TargetLocked"
                          and previous.get("decidedBy") not in (None, self.settings.identity))
        return finish(decision, write=not holder_reports)

    def _duration(self, period: float) -> int:
        return lease_duration_seconds(period, self.settings.lease_extra_seconds)

    def _history(self, raw_spec: Mapping[str, Any], spec: PolicySpec,
                 now: float) -> tuple[Series, tuple[str, str] | None, str | None]:
        step = self.settings.step_seconds
        metrics = raw_spec.get("metrics") or {}
        url = metrics.get("prometheusUrl") or self.settings.prometheus_url
        empty = Series.from_array(np.array([]), start_seconds=now, step_seconds=step)
        if not url:
            msg = "no Prometheus: set spec.metrics.prometheusUrl or --prometheus-url"
            return empty, ("PrometheusUnavailable", msg), msg
        # On the step grid, so that consecutive reads continue each other and the fitted
        # ARIMA is updated rather than refitted every cycle.
        end = math.floor(now / step) * step
        start = end - math.floor(spec.forecast.history_seconds / step) * step
        try:
            series = self._source(str(url)).read_rate(str(metrics.get("query")),
                                                      start=start, end=end, step_seconds=step)
        except BadQuery as exc:
            self.metrics.errors.labels(exc.reason).inc()
            return empty, (exc.reason, str(exc)), str(exc)
        except MetricsError as exc:
            self.metrics.errors.labels(exc.reason).inc()
            return empty, (exc.reason, str(exc)), None
        except InvalidInputError as exc:
            return empty, ("BadQuery", str(exc)), str(exc)
        return series, None, None

    def _blocked(self, mode: str, namespace: str, kind: str, target: str, key: str,
                 period: float, now: float) -> tuple[str, str] | None:
        if mode == "Observe":
            return "ObserveMode", "Observe mode: forecasting only, the target is not scaled"
        for hpa in self.kube.list_hpas(namespace):
            ref = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
            if ref.get("kind") == kind and ref.get("name") == target:
                return ("ConflictingAutoscaler", f"HorizontalPodAutoscaler "
                        f"{hpa['metadata']['name']} already scales {kind} {target}")
        for so in self.kube.list_scaled_objects(namespace):
            ref = (so.get("spec") or {}).get("scaleTargetRef") or {}
            if ref.get("kind", "Deployment") == kind and ref.get("name") == target:
                return ("ConflictingAutoscaler", f"KEDA ScaledObject "
                        f"{so['metadata']['name']} already scales {kind} {target}")
        held = self.lease.ensure(namespace, lease_name(kind, target), policy=key,
                                 duration=self._duration(period), now=now)
        if not held.held:
            return "TargetLocked", held.message
        return None

    def _observe(self, namespace: str, name: str, d: Decision) -> None:
        m = self.metrics
        if d.observed_rate is not None:
            m.observed_rate.labels(namespace, name).set(d.observed_rate)
        if d.plan is not None:
            m.desired.labels(namespace, name).set(d.plan.desired_replicas)
            m.current.labels(namespace, name).set(d.plan.current_replicas)
            if d.plan.planned_arrival_rate is not None:
                m.forecast_rate.labels(namespace, name).set(d.plan.planned_arrival_rate)
            m.set_serving(namespace, name, d.plan.served_by)

    def _report(self, body: Mapping[str, Any], d: Decision,
                previous: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        for event in events(d, previous):
            self._event(body, event.type, event.reason, event.message, d.now)
        if d.metrics_error is not None:
            logger.warning("%s/%s: metrics unavailable: %s", meta.get("namespace"),
                           meta.get("name"), d.metrics_error[1])
        with contextlib.suppress(NotFound):  # deleted meanwhile
            self.kube.patch_policy_status(str(meta.get("namespace")), str(meta.get("name")),
                                          build_status(d, previous))
        logger.info("%s/%s: %s", meta.get("namespace"), meta.get("name"),
                    d.invalid_spec or (d.plan.message if d.plan else "no decision"))

    def release(self, body: Mapping[str, Any]) -> bool:
        """Give up the target's lease (policy deleted)."""
        meta = body.get("metadata") or {}
        ref = (body.get("spec") or {}).get("scaleTargetRef") or {}
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        self.forget(namespace, name)
        if not ref.get("name"):
            return False
        return self.lease.release(namespace, lease_name(str(ref.get("kind", "Deployment")),
                                                        str(ref["name"])),
                                  policy=f"{namespace}/{name}")


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
