"""The simulated world of the scaling benchmark, protocol v1 (``/work/shared/BENCHMARK.md``).

One place implements every rule of the protocol, so that every policy (oracle, HPA,
forescale) is scored by the same code:

* step Δ = the trace interval (60 s; coarser traces are refused), λ_t = requests_t / Δ;
* every rate is multiplied by k = multiple·μ / p99.9(λ over the scored steps);
* a step is judged against λ*_t, the centred 5-step moving average of λ (pandas'
  ``rolling(5, center=True, min_periods=1)``), with c ready pods: it violates when c is
  below ``min_replicas(λ*_t)``, the smallest c meeting the M/M/c SLO (§4 below);
* pods asked for by the decision at the start of step t are ready from step t + L
  (L = 2 steps of 60 s); scale-down is immediate and removes starting pods first;
* cost is pod-hours of every pod that exists, starting or ready;
* the warm-up (7 days; 4 for a trace shorter than 15 days) and intervals a trace's README
  marks as missing are not scored; policies still see them;
* scaling actions are counted on every step after the warm-up, the missing-data ones
  included: §7 leaves those out of the cost and the violations only.

Two choices the protocol leaves open, made here once:

* **When the policies take over.** The warm-up is history only, so policies start acting at
  its end — but L steps early (step ``W − L``), in the unscored warm-up. Otherwise the pods
  of the very first decision could not be ready before the second scored step, and even the
  oracle, which by §"Reference policies" never violates, would violate there. Every policy
  starts with ``min_replicas(λ*)`` of that first simulated step, ready.
* **Which starting pods go first** on a scale-down: the newest. The pods then form a stack,
  which is what makes the oracle's schedule (see :mod:`.oracle`) the cheapest possible.

The violation test uses ``ready < required``: P(W_q > t) falls as c grows (Erlang C falls
and the exponential factor shrinks), so "c violates" is exactly "c is below the smallest c
that does not". A unit test checks this against the §4 formula directly.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd

from forescale.core.errors import InvalidInputError
from forescale.core.series import DAY_SECONDS, FloatArray, Series
from forescale.core.sizing import min_replicas_protocol, prob_wait_exceeds
from forescale.core.spec import SLO, PolicySpec

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

PROTOCOL_VERSION = "v1"
#: Δ, the protocol's time step (§1); finer traces are replayed, and said to be adapted.
PROTOCOL_STEP_SECONDS = 60.0


@dataclass(frozen=True)
class ProtocolParameters:
    """The world of protocol v1. The defaults *are* the protocol; change them only for
    scenarios other than the reference one (and say so next to any figure)."""

    #: μ, requests per second one pod serves (exponential service, mean 1/μ).
    service_rate: float = 10.0
    slo_wait_seconds: float = 0.05
    #: Share of requests that must wait at most ``slo_wait_seconds`` (tail = 1 − this).
    slo_percentile: float = 0.95
    #: L in seconds: from the decision that asks for a pod until it is ready.
    startup_seconds: float = 120.0
    #: The scored p99.9 of λ is rescaled to this many pods' worth of service; None keeps
    #: the trace's own rates (for hand-computed tests and what-if scenarios).
    p999_multiple: float | None = 100.0
    min_pods: int = 1
    max_pods: int = 100_000
    #: Width of the centred moving average that gives the scoring rate λ*.
    smoothing_steps: int = 5
    #: None: 7 days, or 4 days for a trace shorter than 15 days.
    warmup_seconds: float | None = None
    #: Coarser traces are refused: their counting noise swamps every policy's score.
    max_step_seconds: float = 60.0

    def __post_init__(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise InvalidInputError(message)

        need(math.isfinite(self.service_rate) and self.service_rate > 0,
             f"service rate must be a positive number, got {self.service_rate!r}")
        need(math.isfinite(self.slo_wait_seconds) and self.slo_wait_seconds >= 0,
             f"SLO wait must be a non-negative number of seconds, got {self.slo_wait_seconds!r}")
        need(0 < self.slo_percentile < 1,
             f"SLO percentile must be in (0, 1), got {self.slo_percentile!r}")
        need(math.isfinite(self.startup_seconds) and self.startup_seconds >= 0,
             f"startup must be a non-negative number of seconds, got {self.startup_seconds!r}")
        need(self.p999_multiple is None
             or (math.isfinite(self.p999_multiple) and self.p999_multiple > 0),
             f"p99.9 multiple must be a positive number, got {self.p999_multiple!r}")
        need(1 <= self.min_pods <= self.max_pods,
             f"pod bounds must satisfy 1 <= min <= max, got {self.min_pods}..{self.max_pods}")
        need(self.smoothing_steps >= 1,
             f"smoothing window must be at least 1 step, got {self.smoothing_steps}")
        need(self.warmup_seconds is None
             or (math.isfinite(self.warmup_seconds) and self.warmup_seconds >= 0),
             f"warm-up must be a non-negative number of seconds, got {self.warmup_seconds!r}")

    @property
    def slo_tail(self) -> float:
        # 1 − 0.95 is 0.050000000000000044 in binary; §4 compares against 0.05 itself.
        return round(1.0 - self.slo_percentile, 12)

    def warmup_for(self, duration_seconds: float) -> float:
        if self.warmup_seconds is not None:
            return self.warmup_seconds
        return (7 if duration_seconds >= 15 * DAY_SECONDS else 4) * DAY_SECONDS

    def deviations(self) -> tuple[str, ...]:
        """Where these parameters depart from protocol v1's (empty: the protocol itself)."""
        reference = ProtocolParameters()
        names = {"service_rate": "μ", "slo_wait_seconds": "SLO wait (s)",
                 "slo_percentile": "SLO percentile", "startup_seconds": "L (s)",
                 "p999_multiple": "p99.9 rescaled to pods", "min_pods": "min pods",
                 "max_pods": "max pods", "smoothing_steps": "scoring window (steps)",
                 "warmup_seconds": "warm-up (s)"}
        return tuple(f"{label} {getattr(self, field)!r:.12} instead of "
                     f"{getattr(reference, field)!r:.12}"
                     for field, label in names.items()
                     if getattr(self, field) != getattr(reference, field))

    def to_dict(self) -> dict[str, object]:
        return {
            "service_rate": self.service_rate,
            "slo_wait_seconds": self.slo_wait_seconds,
            "slo_percentile": self.slo_percentile,
            "startup_seconds": self.startup_seconds,
            "p999_multiple": self.p999_multiple,
            "min_pods": self.min_pods,
            "max_pods": self.max_pods,
            "smoothing_steps": self.smoothing_steps,
        }


# --- the SLO (§4) ----------------------------------------------------------------------


def min_replicas(arrival_rate: float, params: ProtocolParameters) -> int:
    """The smallest pod count ≥ 1 that meets the SLO at ``arrival_rate`` (1 for λ = 0).

    Searched up to one above the pod bound, so that a rate no allowed count can serve comes
    back as ``max_pods + 1`` and every step at it counts as violating.
    """
    return min_replicas_protocol(arrival_rate, params.service_rate,
                                 wait_seconds=params.slo_wait_seconds, tail=params.slo_tail,
                                 max_replicas=params.max_pods + 1)


def violates(ready: int, arrival_rate: float, params: ProtocolParameters) -> bool:
    """§4 verbatim: λ* ≥ cμ, or P(W_q > t) above the tail. The simulation uses the
    equivalent ``ready < min_replicas(λ*)``; this is the reference it is tested against."""
    if ready < 1 or arrival_rate >= ready * params.service_rate:
        return True
    return prob_wait_exceeds(ready, arrival_rate, params.service_rate,
                             params.slo_wait_seconds) > params.slo_tail


def required_replicas(arrival_rates: FloatArray, params: ProtocolParameters) -> IntArray:
    """``min_replicas`` of every rate; computed once per distinct value.

    λ* of a low-volume trace takes few distinct values (sums of five integer counts), so
    this is far cheaper than one search per step.
    """
    values, inverse = np.unique(arrival_rates, return_inverse=True)
    sized = np.fromiter((min_replicas(float(v), params) for v in values), dtype=np.int64,
                        count=values.size)
    result: IntArray = sized[inverse.reshape(-1)]
    return result


def smoothed(rates: FloatArray, window: int) -> FloatArray:
    """λ*: the centred moving average, exactly pandas' (ends cut off, not padded)."""
    out: FloatArray = (pd.Series(rates).rolling(window, center=True, min_periods=1)
                       .mean().to_numpy(dtype=np.float64))
    return out


def world_policy_spec(params: ProtocolParameters, step_seconds: float) -> PolicySpec:
    """The ScalingPolicy that describes the benchmark world to forescale (μ, SLO, lead time,
    decision period, pod bounds); every other setting is the core's default."""
    return PolicySpec(
        service_rate_per_replica=params.service_rate,
        min_replicas=params.min_pods,
        max_replicas=params.max_pods,
        slo=SLO(wait_seconds=params.slo_wait_seconds, percentile=params.slo_percentile),
        lead_time_seconds=params.startup_seconds,
        decision_period_seconds=step_seconds,
    )


def parameters_for(spec: PolicySpec, **protocol: Any) -> ProtocolParameters:
    """The world ``spec`` plans for: its μ and SLO, the protocol's defaults (or
    ``protocol``'s values) for the rest. A policy replayed on other pods is judged on a
    service it does not plan for (:func:`check_policy_world` refuses that)."""
    return ProtocolParameters(service_rate=spec.service_rate_per_replica,
                              slo_wait_seconds=spec.slo.wait_seconds,
                              slo_percentile=spec.slo.percentile, **protocol)


def check_policy_world(spec: PolicySpec, params: ProtocolParameters) -> None:
    """Refuse a policy whose μ or SLO differs from the world's: 40 req/s per pod planned
    on pods serving 10 violated the SLO at 99 % of the steps, unannounced (one line)."""
    for label, own, world in (
            ("serviceRatePerReplica", spec.service_rate_per_replica, params.service_rate),
            ("slo.waitSeconds", spec.slo.wait_seconds, params.slo_wait_seconds),
            ("slo.percentile", spec.slo.percentile, params.slo_percentile)):
        if not math.isclose(own, world):
            raise InvalidInputError(
                f"the policy's {label} ({own:g}) differs from the replay's ({world:g}): it "
                f"would be judged on a service it does not plan for; build the world with "
                f"parameters_for(spec)")


# --- the world ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ExcludedInterval:
    """``[start_seconds, end_seconds)`` of missing source data: seen by policies, not scored."""

    start_seconds: float
    end_seconds: float
    note: str = ""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.start_seconds) and math.isfinite(self.end_seconds)
                and self.end_seconds > self.start_seconds):
            raise InvalidInputError(f"excluded interval must have start < end, got "
                                    f"{self.start_seconds!r}..{self.end_seconds!r}")


@dataclass(frozen=True)
class World:
    """A trace turned into the protocol's world, with everything scoring needs precomputed.

    Arrays cover the whole trace (index = trace step); policies act from ``first_step``.
    """

    params: ProtocolParameters
    start_seconds: float
    step_seconds: float
    #: λ_t after rescaling: what a policy observes (read-only).
    observed: FloatArray
    #: λ*_t: what a step is judged against.
    underlying: FloatArray
    #: min_replicas(λ*_t).
    required: IntArray
    scored: BoolArray
    warmup_steps: int
    startup_steps: int
    first_step: int
    scale_factor: float
    excluded: tuple[ExcludedInterval, ...] = ()

    def __len__(self) -> int:
        return int(self.observed.shape[0])

    def time_of(self, step: int) -> float:
        """Start of ``step``: the time of the decision made before it."""
        return self.start_seconds + step * self.step_seconds

    def observed_series(self) -> Series:
        return Series(self.start_seconds, self.step_seconds, self.observed)

    @property
    def initial_pods(self) -> int:
        return clamp(int(self.required[self.first_step]), self.params)

    @property
    def scored_steps(self) -> int:
        return int(self.scored.sum())

    def deviations(self) -> tuple[str, ...]:
        """Where this world departs from protocol v1 (a step finer than its 60 s, changed
        parameters): said next to every figure, which are then not the protocol's."""
        step = () if self.step_seconds == PROTOCOL_STEP_SECONDS else (
            f"{self.step_seconds:g}s steps instead of {PROTOCOL_STEP_SECONDS:g}s (the "
            f"scoring window, L and the HPA's metric lag are counted in steps)",)
        return step + self.params.deviations()

    def protocol(self) -> str:
        """"protocol v1", or "protocol v1, adapted (…)" naming every departure."""
        changed = self.deviations()
        return f"protocol {PROTOCOL_VERSION}" + (
            f", adapted ({'; '.join(changed)})" if changed else "")

    def to_dict(self) -> dict[str, object]:
        return {
            "protocol": PROTOCOL_VERSION,
            "deviations": list(self.deviations()),
            **self.params.to_dict(),
            "step_seconds": self.step_seconds,
            "startup_steps": self.startup_steps,
            "warmup_steps": self.warmup_steps,
            "warmup_seconds": self.warmup_steps * self.step_seconds,
            "first_policy_step": self.first_step,
            "steps": len(self),
            "scored_steps": self.scored_steps,
            "scale_factor": self.scale_factor,
            "initial_pods": self.initial_pods,
            "excluded_intervals": [
                {"start_seconds": iv.start_seconds, "end_seconds": iv.end_seconds,
                 "note": iv.note} for iv in self.excluded],
        }


def clamp(pods: int, params: ProtocolParameters) -> int:
    return min(max(pods, params.min_pods), params.max_pods)


def build_world(rates: Series, params: ProtocolParameters | None = None, *,
                excluded: Sequence[ExcludedInterval] = (), name: str = "trace") -> World:
    """Turn an observed arrival-rate series (req/s, as read from a trace) into the world."""
    params = params or ProtocolParameters()
    step = rates.step_seconds
    if step > params.max_step_seconds + 1e-9:
        raise InvalidInputError(
            f"{name} has {step:g}s steps: protocol {PROTOCOL_VERSION} scores "
            f"{params.max_step_seconds:g}s steps or finer (coarser traces are for forecast "
            f"evaluation only)")
    if rates.missing:
        raise InvalidInputError(f"{name} has {rates.missing} missing samples; a trace has "
                                f"counts for every interval (fill missing ones with 0 and "
                                f"exclude them)")
    n = len(rates)
    warmup_seconds = params.warmup_for(n * step)
    warmup = math.ceil(warmup_seconds / step - 1e-9)
    if n <= warmup:
        raise InvalidInputError(
            f"{name} is shorter than the warm-up: {n * step / DAY_SECONDS:.2f} days, "
            f"the first {warmup_seconds / DAY_SECONDS:g} days are history only and at "
            f"least one step must be scored")
    startup = math.ceil(params.startup_seconds / step - 1e-9)

    starts = rates.timestamps()
    scored = np.arange(n) >= warmup
    for iv in excluded:
        # A step is unscored if any part of it lies in the interval.
        scored &= ~((starts < iv.end_seconds) & (starts + step > iv.start_seconds))
    if not scored.any():
        raise InvalidInputError(f"{name}: every step after the warm-up is excluded")

    raw = np.asarray(rates.values, dtype=np.float64)
    if params.p999_multiple is None:
        k = 1.0
    else:
        p999 = float(np.percentile(raw[scored], 99.9))
        if p999 <= 0:
            raise InvalidInputError(f"{name} has no traffic in its scored steps "
                                    f"(p99.9 of the arrival rate is 0)")
        k = params.p999_multiple * params.service_rate / p999
    observed = raw * k
    observed.setflags(write=False)
    underlying = smoothed(observed, params.smoothing_steps)
    underlying.setflags(write=False)
    required = required_replicas(underlying, params)
    required.setflags(write=False)
    scored.setflags(write=False)
    return World(params=params, start_seconds=rates.start_seconds, step_seconds=step,
                 observed=observed, underlying=underlying, required=required, scored=scored,
                 warmup_steps=warmup, startup_steps=startup,
                 first_step=max(warmup - startup, 0), scale_factor=k,
                 excluded=tuple(excluded))


# --- policies and the simulation --------------------------------------------------------


@dataclass(frozen=True)
class Observation:
    """What a policy may know when it decides at the start of ``step``."""

    step: int
    now_seconds: float
    #: λ_0 … λ_{step−1}: every finished step, nothing after (a read-only view).
    observed: FloatArray
    #: Pods ready now (those asked for L steps ago included), before this decision.
    ready: int
    starting: int
    #: Pods that were ready during the previous step (the HPA's metric lag needs it).
    ready_last_step: int

    @property
    def current(self) -> int:
        """What the target's ``/scale`` reports: ready plus starting."""
        return self.ready + self.starting


class Policy(Protocol):
    name: str

    def decide(self, observation: Observation) -> int:
        """Desired pod count from this step on (the world clamps it to its bounds)."""
        ...


ProgressCallback = Callable[[int], None]


@dataclass(frozen=True)
class PolicyRun:
    """One policy's replay; arrays cover the simulated steps ``first_step`` … end."""

    name: str
    first_step: int
    initial_pods: int
    requested: IntArray
    ready: IntArray
    existing: IntArray
    violating: BoolArray
    #: Scored steps among the simulated ones.
    scored: BoolArray
    #: Steps after the warm-up among the simulated ones, missing-data ones included: where
    #: scaling actions are counted.
    counted: BoolArray
    step_seconds: float
    wall_seconds: float
    details: dict[str, object] = field(default_factory=dict)

    @property
    def cost_pod_hours(self) -> float:
        return float(self.existing[self.scored].sum()) * self.step_seconds / 3600.0

    @property
    def violations(self) -> int:
        return int((self.violating & self.scored).sum())

    @property
    def violation_rate(self) -> float:
        return self.violations / max(int(self.scored.sum()), 1)

    @property
    def scaling_actions(self) -> int:
        """Steps after the warm-up whose requested count differs from the step before's."""
        previous = np.concatenate(([self.initial_pods], self.requested[:-1]))
        return int(((self.requested != previous) & self.counted).sum())


def simulate(world: World, policy: Policy, *, progress: ProgressCallback | None = None,
             progress_every: int = 500) -> PolicyRun:
    """Replay ``policy`` in ``world`` from its first simulated step to the end."""
    params = world.params
    first, n, lag = world.first_step, len(world), world.startup_steps
    ready = world.initial_pods
    ready_last = ready
    # Starting pods as [ready_step, count] batches, oldest first; scale-down takes from the
    # newest end, so the surviving pods are always the oldest (a stack).
    starting: deque[list[int]] = deque()
    n_starting = 0
    size = n - first
    requested = np.empty(size, dtype=np.int64)
    ready_during = np.empty(size, dtype=np.int64)
    existing = np.empty(size, dtype=np.int64)
    observed = world.observed
    began = time.perf_counter()
    for i in range(size):
        t = first + i
        while starting and starting[0][0] <= t:
            ready += starting[0][1]
            n_starting -= starting.popleft()[1]
        want = policy.decide(Observation(step=t, now_seconds=world.time_of(t),
                                         observed=observed[:t], ready=ready,
                                         starting=n_starting, ready_last_step=ready_last))
        want = min(max(int(want), params.min_pods), params.max_pods)
        have = ready + n_starting
        if want > have:
            starting.append([t + lag, want - have])
            n_starting += want - have
        elif want < have:
            drop = have - want
            while drop and starting:
                take = min(drop, starting[-1][1])
                starting[-1][1] -= take
                n_starting -= take
                drop -= take
                if starting[-1][1] == 0:
                    starting.pop()
            ready -= drop
        if lag == 0:  # instant start-up: asked for now, serving now
            while starting:
                ready += starting.popleft()[1]
            n_starting = 0
        requested[i] = want
        ready_during[i] = ready
        existing[i] = ready + n_starting
        ready_last = ready
        if progress is not None and (i + 1) % progress_every == 0:
            progress(progress_every)
    if progress is not None and size % progress_every:
        progress(size % progress_every)
    wall = time.perf_counter() - began
    violating = ready_during < world.required[first:]
    return PolicyRun(name=policy.name, first_step=first, initial_pods=world.initial_pods,
                     requested=requested,
                     ready=ready_during, existing=existing, violating=violating,
                     scored=np.asarray(world.scored[first:]),
                     counted=np.arange(first, len(world)) >= world.warmup_steps,
                     step_seconds=world.step_seconds, wall_seconds=wall)
