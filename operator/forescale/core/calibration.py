"""Calibrated upper bounds of the arrival *intensity*, and every stage's track record.

Two things the plan learns from its own past forecasts, scored honestly out of sample
(each forecast is recorded when it is made and scored only once what it predicted has been
observed), and kept in :class:`Records`, which lives in the plan state (the status), so a
restarted operator carries on with what it has learnt:

**Track records** (the chain's relative gate). Every stage that ran records the mean level
it forecast over the horizon; once the horizon has passed it is scored against the observed
*intensity* over it (the mean from half an intensity window before its first step to half
a window after its last), as the bound and the SLO are. A stage's recent error is the WAPE
over its last scored origins, and two stages are compared over the origins both forecast.
Scored against the raw steps of a three-step horizon, a sparse service's stages differed
mostly in counting noise, and the gate chose among them by chance (a NASA fortnight thinned
to ~1 request a minute: 1.99 % violations at 10.8 x the oracle; scored against the
intensity, 0.92 % at 10.0 x, one run each).

**Bound widths per stage** (the relative gate's second test). At the aligned origins every
stage's forecast is also scored step by step as the calibration below scores the served
one, into the stage's own histograms (keyed ``"<stage>|<step>"``). A stage's *width* is how
far above its forecasts' median error its calibrated bound would reach:
``Q_q − Q_0.5`` of its scores (``q`` = :data:`WIDTH_COVERAGE`, held at the far-out fence),
averaged over the horizon steps. WAPE judges the centre of the errors; the plan pays for
their upper tail. On NASA's second fortnight the LSTM's WAPE was within 3 % of the
alternatives' while its bound was the widest: now and then it forecast far below the
recent level at quiet hours, and the served bound was taken over those misses.

**Calibration** (the size of the margin above the forecast). The plan sizes for an upper
bound of the *intensity* — the rate averaged over ``intensity_seconds`` (5 minutes by
default) — not for one noisy minute: the Poisson randomness of requests around that
intensity is what Erlang C already models. For every horizon step of every served forecast
the score ``log((y + ε) / (ŷ + ε))`` is kept, where ``y`` is the observed intensity around
that step (a centred mean, available a few steps later) and ``ŷ`` the forecast mean.
The upper bound at coverage ``q`` is ``(ŷ + ε) · exp(Q_q) − ε`` with ``Q_q`` the weighted
``q``-quantile of the scores: split conformal prediction, with weights that halve every
``half_life`` so that the bound adapts when the traffic's behaviour drifts (weighted
conformal prediction for non-exchangeable data, Barber et al. 2023). The scores are kept
per horizon step and per *regime* — the forecast above or below the day's median
intensity — because a quiet night's relative error is wider than a busy afternoon's. A
cell with too little weight borrows the horizon step's pooled histogram; with too little of
that, the plan uses the model's own interval and says so (``calibrated`` False).

Scores are binned (``BIN_WIDTH`` in log space, i.e. 2.5 % steps of the ratio), which keeps
the state small (a few hundred numbers); quantiles interpolate within a bin.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from forescale.core.checks import finite
from forescale.core.errors import InvalidInputError
from forescale.core.metrics import wape
from forescale.core.series import (
    DAY_SECONDS,
    REVISABLE_STEPS,
    FloatArray,
    Series,
    window_means,
)

#: Log-ratio bins: [LOW, HIGH) in steps of BIN_WIDTH, plus one under- and one overflow bin.
BIN_WIDTH = 0.025
LOW, HIGH = -2.0, 3.0
N_BINS = round((HIGH - LOW) / BIN_WIDTH) + 2
#: Effective samples a histogram needs before its quantiles are trusted.
MIN_WEIGHT = 60.0
#: Scored origins kept per stage for its track record.
TRACK_LENGTH = 30
#: Scored origins two stages must share before they are compared.
MIN_COMMON = 10
#: ε of the log ratio, as a share of the day's median rate (a quiet service's zeros); never
#: less than one request in an intensity window (see :func:`day_level`).
EPSILON_SHARE = 0.02
REGIMES = ("low", "high")
#: Adaptive conformal inference on two time scales (see :meth:`Records.score_decisions`):
#: the step sizes of the slow (integrating) and the fast (decaying) part of the miss level,
#: the fast part's half-life in seconds, and the range the level may take.
ACI_SLOW_GAMMA = 0.002
ACI_FAST_GAMMA = 0.005
ACI_FAST_HALF_LIFE = 3600.0
ACI_RANGE = (0.0005, 0.25)
#: A forecast made from a *collapse* — the rate of the last ``COLLAPSE_SECONDS`` below
#: ``COLLAPSE_SHARE`` of the day's median, right after an hour at half the median or more:
#: an outage upstream, a broken exporter, a drained region — is no evidence of how wide the
#: bound must be, and the decisions made from it miss when the traffic returns whatever the
#: bound. Sudden, from a normal level, and ten minutes long: on the sparse scenario (~2
#: requests a minute) a quiet five minutes, or a quiet night, is not an outage.
COLLAPSE_SHARE = 0.1
COLLAPSE_SECONDS = 600.0
#: Tukey's far-out fence: a bound is never taken above ``Q3 + FENCE_IQR · (Q3 − Q1)`` of
#: the scores it comes from. Scores beyond it are flash crowds and one-off jumps — a
#: spike at the same hour every morning, a crawler — that no margin can cover short of
#: ten times the forecast; the reactive floor meets them one decision later whatever the
#: margin. Without the fence, once such jumps were more than the miss level's share of the
#: scores, the bound jumped from ~1.4 to ~15 times the forecast at every decision the
#: level dipped below their share (a pre-tournament fortnight of the World Cup trace: a
#: tenth of the night's decisions). For errors that are normal in log space the fence is
#: 4.7 standard deviations out, beyond any level the miss level asks for: it never binds.
FENCE_IQR = 3.0
#: The scores' spread is taken as at least this many bins (their resolution) for the fence.
MIN_SPREAD_BINS = 2
#: A bin holding half the scores whose upper edge is this far below 0 is a sparse service's
#: windows without a request: they score log(ε / (mean + ε)), ε one request in the window,
#: which is below −0.1 wherever the forecast is above 0.11 of a request per window.
SPARSE_BIN_BELOW = -0.1
#: Where a day's rates are not whole multiples of their smallest step, steps below this
#: share of the rates they lie between are no quantum (see :func:`day_quantum`).
#: Prometheus's ``rate()`` extrapolates a window's increase by window / (last − first
#: sample time), which moves with each scrape's timing wherever it is not aligned to the
#: schedule (a loaded server, more than 2 ms late): one request reads as 1/105.002 or
#: 1/104.998 req/s, steps of 10⁻⁵ of a request that were taken as the quantum, so ε fell
#: to a few 10⁻⁹ req/s and the sparse service's scores left the histograms again.
JITTER_SHARE = 0.01
#: How far from a whole multiple of the smallest step a rate may be on counts (float
#: rounding of rescaled counts stays below 10⁻⁴ up to 10⁶ requests in a step).
LATTICE_TOLERANCE = 1e-3
#: The quantile of a stage's scores its bound width is measured at (see the module
#: docstring): near the level the plan's bound is taken at (its miss level is ~3 % on the
#: shared traces), where a few hundred scores still estimate it.
WIDTH_COVERAGE = 0.97


def _bin(score: float) -> int:
    if score < LOW:
        return 0
    if score >= HIGH:
        return N_BINS - 1
    return 1 + int((score - LOW) / BIN_WIDTH)


#: Horizon steps up to this one have calibration histograms of their own; further ones
#: share them, in groups that double in length (:func:`step_group`).
OWN_STEPS = 12
#: Forecast values the pending forecasts may hold in all. They are stored in the policy's
#: status (etcd bounds an object at 1.5 MiB; a value is ~6 bytes of JSON): a day's lead
#: time at one decision a minute kept 1,440 forecasts of 1,500 steps pending, ~13 MB, and
#: every status write would have been refused. Past the budget a new forecast is not
#: recorded until older ones are scored: fewer, not wrong, calibration samples.
MAX_PENDING_VALUES = 100_000


def step_group(h: int) -> int:
    """The calibration histograms' key of horizon step ``h``: ``h`` itself for the first
    :data:`OWN_STEPS` steps, then one per doubling, named by its first step (12–23 share
    12, 24–47 share 24, 48–95 share 48, …).

    A history of 15 s steps and a lead time of an hour is a horizon of 244 steps: one
    histogram per step, regime and stage made a plan state (stored in the policy's status,
    which etcd bounds at 1.5 MiB) of 330 KB after 12 hours, and growing as their bins
    filled. Errors far ahead change slowly with the step, so sharing costs little there."""
    return h if h < OWN_STEPS else OWN_STEPS << ((h // OWN_STEPS).bit_length() - 1)


def _grouped_key(key: str) -> bool:
    """Whether a histogram key is one :func:`step_group` gives (a state written before the
    groups has one per step; those beyond :data:`OWN_STEPS` are learnt again)."""
    step = key.rsplit("|", maxsplit=1)[-1].split(":", maxsplit=1)[0]
    return not (step.isascii() and step.isdigit()) or step_group(int(step)) == int(step)


def _upper_edge(index: int) -> float:
    if index <= 0:
        return LOW
    if index >= N_BINS - 1:
        return math.inf
    return LOW + index * BIN_WIDTH


@dataclass
class Histogram:
    """Exponentially decayed weights of binned scores (mutable; copied by :class:`Records`)."""

    weights: dict[int, float] = field(default_factory=dict)
    #: Time of the last decay, seconds.
    updated: float | None = None

    @property
    def total(self) -> float:
        return sum(self.weights.values())

    def copy(self) -> Histogram:
        return Histogram(dict(self.weights), self.updated)

    def decay_to(self, now: float, half_life: float) -> None:
        if self.updated is not None and now > self.updated:
            factor = 0.5 ** ((now - self.updated) / half_life)
            self.weights = {k: w * factor for k, w in self.weights.items() if w * factor > 1e-3}
        # Now, also when it was ahead (a state written by a clock that ran ahead): kept in
        # the future, nothing decayed until the clock caught up, for as long as it differed.
        self.updated = now

    def add(self, score: float) -> None:
        b = _bin(score)
        self.weights[b] = self.weights.get(b, 0.0) + 1.0

    def quantile(self, q: float) -> float:
        """The weighted ``q``-quantile, interpolated within its bin, with the finite-sample
        correction of split conformal prediction (one more, unseen, score counts at +inf).
        """
        ordered = sorted(self.weights.items())
        # The total summed in the order the loop below sums: summed in another order, it
        # could round a hair above the loop's last sum, and the highest level the scores
        # support, total / (total + 1), came out +inf (1 histogram in 6, at random).
        total = 0.0
        for _, weight in ordered:
            total += weight
        target = q * (total + 1.0)
        if target > total * (1.0 + 1e-12):
            return math.inf
        target = min(target, total)  # q = total / (total + 1) can round a hair above
        running = 0.0
        for index, weight in ordered:
            if running + weight >= target:
                if index <= 0 or index >= N_BINS - 1:
                    return _upper_edge(index)  # the open-ended bins have no width
                share = (target - running) / weight
                return _upper_edge(index) - (1.0 - share) * BIN_WIDTH
            running += weight
        return math.inf

    def far_out_fence(self, min_spread: float | None = None) -> float | None:
        """Tukey's far-out fence of the scores, ``Q3 + FENCE_IQR · (Q3 − Q1)`` (see
        :data:`FENCE_IQR`), the spread taken as at least :data:`MIN_SPREAD_BINS` bins, or
        None for a sparse service's scores.

        When half of the scores or more share one bin, Q1 and Q3 both fall in it. On a
        sparse service that bin holds the windows without a request, well below the
        forecast (:data:`SPARSE_BIN_BELOW`): a fence there sat on that one score and every
        request was "beyond" it (NASA thinned to ~0.1 request a minute at weekends: the
        bound held at x1.4 the forecast, a miss in one decision in ten), so there is none.
        On busy, smooth traffic the shared bin is at the forecast: without a fence there,
        the few scores of one jump (a level shift, a flash crowd) set a 99.7 % bound at
        x2.9 the forecast for as long as they kept weight, 3x the replicas needed for
        hours; with the spread taken as the bins' resolution, they are fenced.

        ``min_spread`` is the scores' resolution where it is coarser than the bins': the
        score of one request more than forecast (:func:`resolution`). Below a tenth of a
        request per window the windows without one score above :data:`SPARSE_BIN_BELOW`,
        their bin is no exception, and a fence at two bins held the bound below one
        request whatever the miss level: every request a miss (NASA thinned to ~0.1 a
        minute at weekends, drawn at another seed: 1.5 % violations, a Sunday's every
        request missed).

        The exception is for windows without a request, so only where one request is at
        least a bin (``min_spread`` >= :data:`BIN_WIDTH`, ~40 requests a window or fewer;
        None: not known, as for :meth:`Records.width`). On busy traffic the same shape is
        a model over-forecasting by a tenth or more with tight scores: without a fence
        there, one old score (a spiked sample's) set the 99.7 % bound at x11 the forecast,
        196 replicas where 14 were needed for half an hour."""
        q1, q3 = self.quantile(0.25), self.quantile(0.75)
        if self.weights and (min_spread is None or min_spread >= BIN_WIDTH):
            shared, weight = max(self.weights.items(), key=lambda kw: kw[1])
            if 2.0 * weight >= self.total and _upper_edge(shared) <= SPARSE_BIN_BELOW:
                return None
        return q3 + FENCE_IQR * max(q3 - q1, MIN_SPREAD_BINS * BIN_WIDTH, min_spread or 0.0)

    def fenced(self, q: float, min_spread: float | None = None) -> tuple[float, bool]:
        """``q`` (possibly infinite: in the open top bin) held at :meth:`far_out_fence`
        where there is one within the histogram's range, and whether it was. Beyond the
        range (scores so spread that Q3 + 3 IQR is ~x10^4) the fence says nothing."""
        fence = self.far_out_fence(min_spread)
        if fence is not None and q > fence and fence < HIGH:
            return fence, True
        return q, False

    def to_list(self) -> list[Any]:
        return [self.updated, [[k, round(w, 4)] for k, w in sorted(self.weights.items())]]

    @classmethod
    def from_list(cls, data: Sequence[Any]) -> Histogram:
        updated, pairs = data
        weights = {int(k): float(w) for k, w in pairs}
        if any(not (0 <= k < N_BINS) or not (w >= 0 and math.isfinite(w))
               for k, w in weights.items()):
            raise ValueError("histogram bin out of range")
        return cls(weights, None if updated is None else finite(updated))


@dataclass(frozen=True)
class Pending:
    """A forecast made at ``origin`` whose outcome is not yet fully observed."""

    origin: float
    stage: str
    #: It served: its steps are scored for calibration.
    served: bool
    #: It was made at an aligned origin: its level is scored for the stage's track record.
    track: bool
    #: Forecast means of the steps from ``origin`` on (req/s).
    means: tuple[float, ...]

    def to_list(self) -> list[Any]:
        return [self.origin, self.stage, int(self.served) + 2 * int(self.track),
                [_round(m) for m in self.means]]

    @classmethod
    def from_list(cls, data: Sequence[Any]) -> Pending:
        origin, stage, flags, means = data
        values = tuple(float(m) for m in means)
        if not values or any(not (math.isfinite(m) and m >= 0) for m in values):
            raise ValueError("pending forecast has no or bad values")
        flags = int(flags)
        return cls(finite(origin), str(stage), bool(flags & 1), bool(flags & 2), values)


@dataclass(frozen=True)
class Comparison:
    """Two stages' track records over the origins both forecast (``(this, other)`` pairs)."""

    #: WAPE of each: the centre of its errors, weighted by the traffic.
    wape: tuple[float, float]
    #: Median absolute error of each forecast level (req/s): its typical miss.
    median: tuple[float, float]
    origins: int


@dataclass(frozen=True)
class Scored:
    """One scored origin of a stage's track record: mean level forecast and observed."""

    origin: float
    predicted: float
    actual: float

    def to_list(self) -> list[float]:
        return [self.origin, _round(self.predicted), _round(self.actual)]


def _track_wape(track: Sequence[Scored]) -> float:
    return wape([s.actual for s in track], [s.predicted for s in track])


def _median_miss(track: Sequence[Scored]) -> float:
    """Median absolute error of the forecast levels (req/s)."""
    return float(np.median([abs(s.actual - s.predicted) for s in track]))


def _round(x: float) -> float:
    return float(f"{x:.5g}")


@dataclass(frozen=True)
class Bound:
    """The calibrated upper bounds of one forecast, step by step."""

    upper: FloatArray
    #: False: too little scored history yet; ``upper`` is the model's own interval.
    calibrated: bool
    coverage: float
    message: str


@dataclass
class Records:
    """Everything the plan learns from its own forecasts (see the module docstring).

    Mutable while one plan is being made; :meth:`copy` before changing a state's records.
    """

    pending: list[Pending] = field(default_factory=list)
    tracks: dict[str, list[Scored]] = field(default_factory=dict)
    #: Calibration histograms keyed ``"<step>:<regime>"`` and ``"<step>:all"``, and the
    #: stages' own ``"<stage>|<step>"``; ``<step>`` is the horizon step's :func:`step_group`.
    histograms: dict[str, Histogram] = field(default_factory=dict)
    #: Adaptive conformal inference: the slow part of the miss level the bound is taken at
    #: (None: the budget itself), and the decisions awaiting their outcome as (start of the
    #: step their pods are ready in, replicas decided).
    alpha: float | None = None
    decisions: list[tuple[float, int]] = field(default_factory=list)
    #: The fast part of the miss level, and the time it was last decayed to (seconds).
    fast: float = 0.0
    fast_time: float | None = None
    #: The violation budget the miss level was learnt at, and the sizing (``sizing_basis``)
    #: the pending decisions are to be judged by (None: not known, a state written before
    #: they were kept). See :meth:`rebase`.
    budget: float | None = None
    basis: str | None = None
    #: The history's step and the intensity window in steps the forecasts, scores and
    #: histograms were made on, as ``"<step seconds>/<steps>"`` (None: not known).
    grid: str | None = None
    #: The digest of each stage's model artifact its record was kept for (the LSTM's).
    artifacts: dict[str, str] = field(default_factory=dict)

    def copy(self) -> Records:
        return Records(list(self.pending), {k: list(v) for k, v in self.tracks.items()},
                       {k: h.copy() for k, h in self.histograms.items()},
                       self.alpha, list(self.decisions), self.fast, self.fast_time,
                       self.budget, self.basis, self.grid, dict(self.artifacts))

    # -- serialisation -------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "pending": [p.to_list() for p in self.pending],
            "tracks": {k: [s.to_list() for s in v] for k, v in sorted(self.tracks.items())},
            "calibration": {k: h.to_list() for k, h in sorted(self.histograms.items())},
            "aci": {"alpha": self.alpha, "fast": _round(self.fast), "fastTime": self.fast_time,
                    "decisions": [[t, n] for t, n in self.decisions],
                    "budget": self.budget, "basis": self.basis},
            "grid": self.grid,
            "artifacts": dict(sorted(self.artifacts.items())),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Records:
        if not data:
            return cls()
        try:
            pending = [Pending.from_list(p) for p in data.get("pending", [])]
            tracks = {str(k): [Scored(finite(o), finite(p), finite(a)) for o, p, a in v]
                      for k, v in dict(data.get("tracks", {})).items()}
            hists = {str(k): Histogram.from_list(v)
                     for k, v in dict(data.get("calibration", {})).items()
                     if _grouped_key(str(k))}
            aci = dict(data.get("aci") or {})
            alpha = aci.get("alpha")
            alpha = None if alpha is None else float(alpha)
            if alpha is not None and not ACI_RANGE[0] <= alpha <= ACI_RANGE[1]:
                raise ValueError(f"aci alpha {alpha!r} out of range")
            decisions = [(finite(t), int(n)) for t, n in aci.get("decisions", [])]
            if any(n < 0 for _, n in decisions):  # each would count as a miss
                raise ValueError("aci decision with negative replicas")
            fast = float(aci.get("fast", 0.0))  # absent in states written before it existed
            if not abs(fast) <= ACI_RANGE[1]:
                raise ValueError(f"aci fast level {fast!r} out of range")
            fast_time = aci.get("fastTime")
            fast_time = None if fast_time is None else finite(fast_time)
            budget = aci.get("budget")  # these two absent in states written before them
            if budget is not None and not 0.0 < finite(budget) < 1.0:
                raise ValueError(f"aci budget {budget!r} out of range")
            basis = aci.get("basis")
            basis = None if basis is None else str(basis)
            grid = data.get("grid")
            grid = None if grid is None else str(grid)
            artifacts = {str(k): str(v) for k, v in dict(data.get("artifacts") or {}).items()}
        except (TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise InvalidInputError(f"plan state's forecast records are malformed: {exc}") \
                from None
        return cls(pending, tracks, hists, alpha, decisions, fast, fast_time,
                   None if budget is None else float(budget), basis, grid, artifacts)

    # -- learning ------------------------------------------------------------------------

    def record(self, origin: float, stage: str, *, served: bool, track: bool,
               means: FloatArray) -> None:
        if not (served or track):
            return
        if any(p.origin == origin and p.stage == stage for p in self.pending):
            return  # decided again on the same history (a period shorter than the step)
        held = sum(len(p.means) for p in self.pending)
        if held + len(means) > MAX_PENDING_VALUES:
            return  # the state's size budget (see MAX_PENDING_VALUES)
        self.pending.append(Pending(origin, stage, served, track,
                                    tuple(float(max(m, 0.0)) for m in means)))

    def forget(self, stage: str) -> None:
        """Drop what was learnt of ``stage`` as a model: its track record, its own bound
        width's histograms and its forecasts awaiting a track score (one that served stays
        pending for the bound's calibration, which is the plan's, not the model's). For a
        model replaced under the same stage name, which must be judged on its own record."""
        self.tracks.pop(stage, None)
        prefix = f"{stage}|"
        self.histograms = {k: h for k, h in self.histograms.items()
                           if not k.startswith(prefix)}
        self.pending = [replace(p, track=False) if p.stage == stage else p
                        for p in self.pending if p.stage != stage or p.served]

    def last_track_origin(self) -> float | None:
        """The latest aligned origin any stage recorded for its track record."""
        times = [p.origin for p in self.pending if p.track]
        times += [t[-1].origin for t in self.tracks.values() if t]
        return max(times, default=None)

    def score(self, history: Series, *, intensity_steps: int, half_life: float,
              now: float, level: DayLevel | None = None) -> None:
        """Score every pending forecast whose outcome is now observed; drop stale ones.

        A forecast is scored when the history covers its last step plus the half
        intensity window after it; one older than a day with no data is dropped.
        ``level`` is :func:`day_level` of ``history``, if the caller has it.
        """
        if len(history) == 0:
            return
        step = history.step_seconds
        half = intensity_steps // 2
        values = history.values
        if level is None:
            level = day_level(history, intensity_steps)
        keep: list[Pending] = []
        for p in self.pending:
            if p.origin - now >= DAY_SECONDS:
                continue  # made a day or more ahead of now: see _forget_stale
            first = round((p.origin - history.start_seconds) / step)
            last = first + len(p.means) - 1
            if last + half >= len(history) or _late(values, first - half,
                                                    last + intensity_steps - half):
                # Kept until a day past its last step: counted from its origin, a horizon of
                # a day or more (a lead time the CRD allows) was dropped before it was seen.
                if now - (p.origin + len(p.means) * step) < DAY_SECONDS:
                    keep.append(p)
                continue
            if first - half < 0:
                continue  # history no longer reaches back to it (a restart with less)
            observed = values[first:last + 1]
            if np.isnan(observed).any():
                continue  # a gap: nothing honest to score against
            # Step by step: into the stage's own histograms (its bound width) at the
            # aligned origins, into the bound's if it served.
            self._score_steps(p, values, first, intensity_steps, level, now, half_life)
            if p.track:
                track = self.tracks.setdefault(p.stage, [])
                # Against the intensity over the horizon, as the bound and the SLO are
                # judged (see the module docstring); the raw steps across a gap.
                around = values[first - half:last + half + 1]
                actual = around if not np.isnan(around).any() else observed
                track.append(Scored(p.origin, float(np.mean(p.means)),
                                    float(actual.mean())))
                del track[:-TRACK_LENGTH]
        self.pending = keep
        self._forget_stale(now)

    def _forget_stale(self, now: float) -> None:
        """Drop track scores and stage bound widths last scored a day or more ago (after
        downtime, or a stage removed from the chain and added back): a week-old record
        gated a healthy model out at its first decision ("0.6 over its last 30 scored
        forecasts"). Without them the stage is judged as a new one is (the re-forecast
        check) until it has a record again. The plan's own bound keeps its histograms:
        they decay with the half-life where they are read."""
        for stage in list(self.tracks):
            # Nor a day or more ahead (a clock far ahead, a status edited by hand): never
            # stale, it kept the next aligned origin from coming, and the gate from scoring.
            fresh = [s for s in self.tracks[stage] if abs(now - s.origin) < DAY_SECONDS]
            if fresh:
                self.tracks[stage] = fresh
            else:
                del self.tracks[stage]
        self.histograms = {k: h for k, h in self.histograms.items()
                           if "|" not in k or h.updated is None
                           or now - h.updated < DAY_SECONDS}

    def _score_steps(self, p: Pending, values: FloatArray, first: int, intensity_steps: int,
                     level: DayLevel, now: float, half_life: float) -> None:
        """Add the score of each of ``p``'s steps to the stage's own histograms if it was
        made at an aligned origin (:meth:`width`), and to the bound's if it served (its
        regime's, which the day's median intensity sets, and the step's pooled one)."""
        eps = level.epsilon
        for h, mean in enumerate(p.means):
            y = _intensity(values, first + h, intensity_steps)
            if y is None:
                continue
            score = math.log((y + eps) / (mean + eps))
            g = step_group(h)
            keys = [f"{p.stage}|{g}"] if p.track else []
            if p.served:
                keys += [f"{g}:{REGIMES[int(mean >= level.split)]}", f"{g}:all"]
            for key in keys:
                hist = self.histograms.setdefault(key, Histogram())
                hist.decay_to(now, half_life)
                hist.add(score)

    def rebase(self, *, budget: float, basis: str, grid: str | None = None) -> None:
        """Carry what was learnt across an edit of the policy.

        The miss level was learnt at a violation budget: the floors and the stabilisation
        protect in proportion, so at a new budget it starts at the same multiple of it (a
        level learnt at 5 % took days to come down to a 0.3 % budget at the controller's
        step, the bound meanwhile sized for misses 30 times as often as allowed). The
        pending decisions are judged by the sizing (service rate, SLO, costs) they were
        made with; under another one their outcomes say nothing (half the service rate
        scored every pending decision as a miss), so they are dropped. The forecasts, track
        records and histograms hold one value per step of the history's ``grid`` (step and
        intensity window): on another grid they would be read at the wrong horizon (a
        15 s -> 60 s step widened the bound by 4-6 % for a day), so they are learnt again."""
        if grid is not None and self.grid is not None and grid != self.grid:
            self.pending, self.tracks, self.histograms = [], {}, {}
        if grid is not None:
            self.grid = grid
        if self.alpha is not None and self.budget is not None and budget != self.budget:
            ratio = budget / self.budget
            self.alpha = min(max(self.alpha * ratio, ACI_RANGE[0]), ACI_RANGE[1])
            self.fast = min(max(self.fast * ratio, -self.alpha), self.alpha)
        if self.basis is not None and basis != self.basis:
            self.decisions = []
        self.budget, self.basis = budget, basis

    def record_decision(self, ready_at: float, replicas: int, step_seconds: float) -> None:
        """Await the outcome of ``replicas`` ready at ``ready_at``. One outcome per step of
        the history: a later decision whose pods are ready in the same step (a decision
        period shorter than the step) replaces the earlier, which counted each outcome
        several times and moved the miss level that much faster."""
        slot = math.floor(ready_at / step_seconds + 1e-9)
        self.decisions = [(t, n) for t, n in self.decisions
                          if math.floor(t / step_seconds + 1e-9) != slot]
        self.decisions.append((ready_at, replicas))

    def score_decisions(self, history: Series, *, intensity_steps: int,
                        needed: Callable[[float], int], budget: float, now: float) -> None:
        """Adaptive conformal inference (Gibbs and Candès, 2021) on the plan's own misses.

        A decision *missed* when the replicas it asked for (after stabilisation, before rate
        limits and bounds) turned out fewer than the observed intensity at the step they
        were ready in needed. Each outcome moves the miss level the bound is taken at by
        ``gamma * (budget - missed)``, so that over time the share of misses tracks
        ``budget`` whatever else (stabilisation, floors, the max over the window) already
        protects — the coverage is tied to the SLO's violation budget, not to one step's
        forecast.

        The level has two parts. The slow part integrates every outcome with a small step
        (:data:`ACI_SLOW_GAMMA`): it is what holds the long-run miss share at the budget.
        (Integrating in log space instead, so that a run of misses shrinks it by a factor,
        measured worse: from the budget it rises too slowly to the level the floors and
        the stabilisation allow — 2.09 against 1.83 x the oracle on 14 days of the burst
        scenario, at the same violations.)
        The fast part (:data:`ACI_FAST_GAMMA`) makes a cluster of misses widen the bound at
        once (at most down to the floor, at most up to twice the slow part), and decays
        back to zero with a half-life of :data:`ACI_FAST_HALF_LIFE`. With
        one integrator fast enough to react, a quarter of an hour of misses (a flash crowd,
        traffic returning after an outage) pinned the level to its floor, and at a 0.5 %
        budget each miss takes ~200 hits to pay back: hours of over-provision afterwards.
        """
        if len(history) == 0:
            return
        # Clamped: a budget above the range (the spec allows up to 0.5) stored as the
        # level was refused when the state was read back, every cycle.
        slow = min(max(budget if self.alpha is None else self.alpha, ACI_RANGE[0]),
                   ACI_RANGE[1])
        fast, fast_time = self.fast, self.fast_time
        half = intensity_steps // 2
        keep: list[tuple[float, int]] = []
        for ready_at, replicas in self.decisions:
            k = math.floor((ready_at - history.start_seconds) / history.step_seconds + 1e-9)
            if k + half >= len(history) or _late(history.values, k - half,
                                                 k + intensity_steps - half):
                if now - ready_at < DAY_SECONDS:
                    keep.append((ready_at, replicas))
                continue
            if k - half < 0:
                continue
            y = _intensity(history.values, k, intensity_steps)
            if y is None:
                continue
            if fast_time is not None and ready_at > fast_time:
                fast *= 0.5 ** ((ready_at - fast_time) / ACI_FAST_HALF_LIFE)
            fast_time = ready_at if fast_time is None else max(fast_time, ready_at)
            error = budget - float(needed(y) > replicas)
            slow = min(max(slow + ACI_SLOW_GAMMA * error, ACI_RANGE[0]), ACI_RANGE[1])
            # The fast part can take the level down to the floor or up to twice the slow
            # part, no further: deeper, it would take hours to decay.
            fast = min(max(fast + ACI_FAST_GAMMA * error, -slow), slow)
        self.alpha, self.fast, self.fast_time = slow, fast, fast_time
        self.decisions = keep

    def level(self, budget: float) -> float:
        """The miss level the bound is taken at now (the budget until misses are seen)."""
        slow = budget if self.alpha is None else self.alpha
        return min(max(slow + self.fast, ACI_RANGE[0]), ACI_RANGE[1])

    # -- using what was learnt -------------------------------------------------------------

    def recent_error(self, stage: str) -> tuple[float | None, int]:
        """WAPE of ``stage``'s last scored origins, and how many there were."""
        track = self.tracks.get(stage, [])
        return (_track_wape(track) if track else None), len(track)

    def compare(self, stage: str, other: str) -> Comparison | None:
        """Both stages' errors over the origins both forecast, or None with too few."""
        mine = {s.origin for s in self.tracks.get(stage, [])}
        common = mine & {s.origin for s in self.tracks.get(other, [])}
        if len(common) < MIN_COMMON:
            return None
        a = [s for s in self.tracks[stage] if s.origin in common]
        b = [s for s in self.tracks[other] if s.origin in common]
        return Comparison((_track_wape(a), _track_wape(b)), (_median_miss(a), _median_miss(b)),
                          len(a))

    def width(self, stage: str) -> float | None:
        """``stage``'s bound width (see the module docstring), or None while one of its
        horizon steps has too few scores (:data:`MIN_WEIGHT`) or none is finite."""
        prefix = f"{stage}|"
        widths = []
        for key, hist in self.histograms.items():
            if not key.startswith(prefix):
                continue
            if hist.total < MIN_WEIGHT:
                return None
            top, _ = hist.fenced(hist.quantile(WIDTH_COVERAGE))
            if not math.isfinite(top):
                return None
            widths.append(top - hist.quantile(0.5))
        return float(np.mean(widths)) if widths else None

    def upper_bound(self, means: FloatArray, model_upper: FloatArray, history: Series, *,
                    coverage: float, now: float, half_life: float, intensity_steps: int,
                    level: DayLevel | None = None) -> Bound:
        """Calibrated upper bounds of the intensity for forecast ``means`` (see above);
        ``level`` as in :meth:`score`."""
        if level is None:
            level = day_level(history, intensity_steps)
        eps, split = level.epsilon, level.split
        upper = np.empty_like(means)
        widest = 0.0
        capped = fenced = False
        for h, mean in enumerate(means):
            regime = REGIMES[int(mean >= split)]
            # Each quantile is fenced before its finiteness is checked: one in the open
            # top bin is held at the fence too.
            spread = resolution(mean, level)
            q = None
            held = False
            usable: list[Histogram] = []
            g = step_group(h)
            for key in (f"{g}:{regime}", f"{g}:all"):
                hist = self.histograms.get(key)
                if hist is None:
                    continue
                decayed = hist.copy()
                decayed.decay_to(now, half_life)
                # Split conformal needs n >= q / (1 - q) scores for a finite quantile.
                if decayed.total >= max(MIN_WEIGHT, coverage / (1.0 - coverage) + 1.0):
                    q, held = decayed.fenced(decayed.quantile(coverage), spread)
                    break
                if decayed.total >= MIN_WEIGHT:
                    usable.append(decayed)
            if q is None:
                # Enough scores, but not for a level this high (after a run of misses the
                # controller asks for 99.9 % and more): the highest quantile they support,
                # their largest score — never the model's own interval, which is narrower
                # exactly when a wider bound was asked for.
                for candidate in usable:
                    top, held = candidate.fenced(
                        candidate.quantile(candidate.total / (candidate.total + 1.0)), spread)
                    if math.isfinite(top):
                        q, capped = top, True
                        break
            if q is None:
                return Bound(np.asarray(model_upper, dtype=np.float64), False, coverage,
                             "too few scored forecasts to calibrate yet: the model's own "
                             "interval")
            fenced = fenced or held
            if not math.isfinite(q):
                return Bound(np.asarray(model_upper, dtype=np.float64), False, coverage,
                             f"the scores at this level are beyond x{math.exp(HIGH):.0f} "
                             "the forecast, and so is their far-out fence: the model's own "
                             "interval")
            widest = max(widest, q)
            upper[h] = max((mean + eps) * math.exp(q) - eps, 0.0)
        note = ("; the level needs more scores than there are: capped at the largest"
                if capped else "")
        if fenced:
            note += ("; held at the scores' far-out fence (Q3 + 3 IQR): jumps beyond it are "
                     "left to the reactive floor")
        return Bound(upper, True, coverage,
                     f"calibrated {coverage:.1%} bound of the intensity "
                     f"(up to x{math.exp(widest):.2f} the forecast{note})")


def intensity_steps(intensity_seconds: float, step_seconds: float) -> int:
    """Odd number of steps the intensity is averaged over (centred)."""
    steps = max(1, round(intensity_seconds / step_seconds))
    return steps if steps % 2 else steps + 1


def _late(values: FloatArray, start: int, end: int) -> bool:
    """Whether ``values[start:end]`` has a gap among the newest samples, which a late scrape
    may still fill (:data:`~forescale.core.series.REVISABLE_STEPS`): what needs them waits
    for the next cycle rather than being dropped as unscorable. Dropped, a newest sample
    always late (remote write) left a policy uncalibrated for good at some periods."""
    tail = values[max(start, len(values) - REVISABLE_STEPS):end]
    return bool(np.isnan(tail).any())


def _intensity(values: FloatArray, k: int, steps: int) -> float | None:
    """The observed intensity at step ``k``: the centred mean of ``steps`` samples around it
    (the caller has checked they are all in ``values``); None across a gap."""
    half = steps // 2
    around = values[k - half:k + steps - half]
    if np.isnan(around).any():
        return None
    return float(around.mean())


def collapsed(history: Series, day_median: float | None = None) -> bool:
    """Whether the traffic has collapsed (see :data:`COLLAPSE_SHARE`); ``day_median`` is
    :func:`median_of_day` of ``history``, if the caller has it."""
    steps = max(1, round(COLLAPSE_SECONDS / history.step_seconds))
    hour = max(1, round(3600.0 / history.step_seconds))
    if len(history) < steps + hour:
        return False
    values = history.values
    recent, before = values[-steps:], values[-steps - hour:-steps]
    if np.isnan(recent).any() or np.isnan(before).all():
        return False
    median = median_of_day(history) if day_median is None else day_median
    return bool(float(recent.mean()) < COLLAPSE_SHARE * median
                and float(np.nanmean(before)) >= 0.5 * median)


def median_of_day(history: Series) -> float:
    """The median rate of the history's last day (NaNs left out; 0 with none): the level
    the collapse rule is measured against (:func:`day_level` has it too)."""
    day = history.last_day()
    recent = day[~np.isnan(day)]
    return float(np.median(recent)) if recent.size else 0.0


@dataclass(frozen=True)
class DayLevel:
    """What scores and bounds are measured against, from the history's last day."""

    #: The median rate (NaNs left out; 0 with none): ε and the collapse rule.
    median: float
    #: ε of the log ratio ``log((y + ε) / (ŷ + ε))`` (req/s).
    epsilon: float
    #: The median *intensity* (the mean over an intensity window, the rate the bound is
    #: of): forecasts at or above it are in the ``high`` regime, the others in ``low``.
    #: The median minute would do for dense traffic, but on a sparse service most minutes
    #: have no request, the median is 0, and every forecast fell in one regime: the quiet
    #: night's wide relative errors then set the busy afternoon's bound too.
    split: float
    #: One request in an intensity window (req/s; 0 when the data has no quantum): the
    #: scores' resolution (:func:`resolution`).
    quantum: float = 0.0


def resolution(mean: float, level: DayLevel) -> float:
    """The score of one request more than a forecast of ``mean`` in its window,
    ``log((mean + ε + quantum) / (mean + ε))``: the finest step the scores of such
    forecasts can take. Negligible on busy traffic (0.005 at 200 requests a window); log 2
    where almost nothing is forecast."""
    return math.log1p(level.quantum / (mean + level.epsilon))


def day_level(history: Series, intensity_steps: int) -> DayLevel:
    """The day's median, ε and median intensity (:class:`DayLevel`). ε is
    :data:`EPSILON_SHARE` of the median, but never less
    than one request in an intensity window. One request is the data's own quantum
    (:func:`day_quantum`): the smallest step between the distinct rates of the day
    (counts per interval come in whole requests, and Prometheus's ``rate()`` reads them
    give or take its scrapes' jitter; a float-valued metric has no quantum to speak of,
    and ε stays the median's share).

    On a sparse service most minutes have no request, the median is 0 and ε was 10⁻⁹: a
    forecast of nearly nothing and one request in the window scored as a miss by ×10⁸,
    every score fell beyond the histograms' range (×20), and the plan used the model's
    own interval, often far too narrow and at times absurd (NASA thinned to ~0.3
    request/min: three quarters of the decisions, 2.7 % violations, and bounds of 10¹⁶
    req/s). With this ε, one request where almost none was forecast is a miss by about
    ×2, which is what it is at this resolution. Where the median minute has more than ten
    requests the median's share is the larger, and nothing changes."""
    day = history.last_day()
    recent = day[~np.isnan(day)]
    if not recent.size:
        return DayLevel(0.0, 1e-9, 0.0)
    median = float(np.median(recent))
    quantum = day_quantum(np.unique(recent)) / max(intensity_steps, 1)
    return DayLevel(median, max(EPSILON_SHARE * median, quantum, 1e-9),
                    _median_intensity(day, intensity_steps, median), quantum)


def day_quantum(distinct: FloatArray) -> float:
    """One request, in the units of ``distinct`` (a day's distinct rates, sorted): the
    smallest step between them where every rate is a whole multiple of one step (counts
    per interval, however rescaled), and otherwise the smallest step above
    :data:`JITTER_SHARE` of the smallest rate above 0 (Prometheus's ``rate()`` over
    scrapes off their schedule reads k requests as k / 105.002 req/s, and a float metric
    has no quantum to speak of). Steps below a millionth of the rates they lie between
    are taken for float rounding (a day of a million requests a minute then has a
    quantum of two), and 0 means no step at all. One request is never more than the
    smallest rate above 0.

    Each step is judged against the rates it lies between, not the day's largest or
    smallest: one minute of 2,000,000 requests on a service of 0.3 a minute hid every step
    below it as "rounding", ε became 6,667 req/s and the bound asked for 170 replicas where
    one did; and ``rate()``'s jitter at a busy hour's 300 requests a window, larger than a
    hundredth of the quiet hours' one request, was taken for the quantum (ε 100 times too
    small, the quiet hours' 97 % bound covering 93.7 %)."""
    if distinct.size < 2:
        return 0.0
    gaps = np.diff(distinct)
    at = np.abs(distinct[1:])  # the larger rate of each step (sorted)
    unit = gaps[gaps > 1e-9 * at]
    keep = gaps > 1e-6 * at
    gaps, at = gaps[keep], at[keep]
    if not gaps.size:
        return 0.0
    positive = distinct[distinct > 0]
    smallest = float(positive.min()) if positive.size else math.inf
    multiples = positive / float(unit.min())
    if np.all(np.abs(multiples - np.rint(multiples)) <= LATTICE_TOLERANCE):
        return min(float(gaps.min()), smallest)
    gaps = gaps[gaps > JITTER_SHARE * at]
    return min(float(gaps.min()), smallest) if gaps.size else 0.0


def _median_intensity(day: FloatArray, intensity_steps: int, fallback: float) -> float:
    """The median of the mean of every ``intensity_steps`` consecutive samples of ``day``
    (windows across a gap left out; ``fallback`` with none)."""
    means = window_means(day, intensity_steps)
    means = means[~np.isnan(means)]
    return float(np.median(means)) if means.size else fallback
