"""Erlang C for the M/M/c queue, exact and numerically stable up to c = 100,000 and beyond.

Why not the textbook formula: it sums ``a**k / k!`` for k < c, and both ``a**c`` and ``c!``
overflow a float near c = 170, long before the 100,000 pods BENCHMARK.md §4 allows. Why not
the Erlang-B recursion: it is stable but O(c), and sizing evaluates Erlang C a dozen times
per decision, so 100,000 Python steps per evaluation would blow the 1 ms budget.

What we do instead: Erlang B is the Poisson(a) pmf at c divided by its cdf at c (B is the
blocking probability of the truncated Poisson distribution), so

    log B = log pmf(c; a) − log Q(c+1, a)

with the regularised upper incomplete gamma ``gammaincc`` (= the Poisson cdf) and the pmf
in log space (Loader's deviance form, which keeps ~1e-13 relative accuracy at c = 100,000
where the naive −a + c·log a − log Γ(c+1) keeps only ~1e-10), and then
C = B / (1 − ρ(1 − B)) with ρ = a/c. Nothing here overflows: a pmf that underflows to 0
just means that waiting is vanishingly rare.

Every public function works on one value through plain-``math`` scalar kernels (a few µs
per evaluation, which is what a sizing search needs); the ``_array`` functions evaluate many
server counts in one vectorised call with the same formulas (cost mode scans a range).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import numpy.typing as npt
from scipy.special import gammaincc, gammaln

from forescale.core.errors import InvalidInputError

FloatArray = npt.NDArray[np.float64]


# --- validation -------------------------------------------------------------------------


def check_servers(servers: int) -> int:
    """A server (replica) count: an integer ≥ 1 (bool is not a count)."""
    if isinstance(servers, bool) or not isinstance(servers, numbers.Integral):
        raise InvalidInputError(f"servers must be an integer, got {servers!r}")
    if servers < 1:
        raise InvalidInputError(f"servers must be at least 1, got {servers!r}")
    return int(servers)


def _finite_number(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidInputError(f"{name} must be a number, got {value!r}")
    x = float(value)
    if math.isnan(x):
        raise InvalidInputError(f"{name} must be a number, got NaN")
    if math.isinf(x):
        raise InvalidInputError(f"{name} must be finite, got {x!r}")
    return x


def check_arrival_rate(arrival_rate: float) -> float:
    """Arrival rate in requests per second: finite and ≥ 0."""
    x = _finite_number("arrival_rate", arrival_rate)
    if x < 0:
        raise InvalidInputError(f"arrival_rate must be non-negative, got {x:g} req/s")
    return x


def check_service_rate(service_rate: float) -> float:
    """Service rate of one replica in requests per second: finite and > 0."""
    x = _finite_number("service_rate", service_rate)
    if x <= 0:
        raise InvalidInputError(f"service_rate must be positive, got {x:g} req/s")
    return x


def check_wait_seconds(wait_seconds: float) -> float:
    """A queueing-delay threshold in seconds: finite and ≥ 0."""
    x = _finite_number("wait_seconds", wait_seconds)
    if x < 0:
        raise InvalidInputError(f"wait_seconds must be non-negative, got {x:g} s")
    return x


def _check_offered_load(offered_load: float) -> float:
    x = _finite_number("offered_load", offered_load)
    if x < 0:
        raise InvalidInputError(f"offered_load must be non-negative, got {x:g} Erlang")
    return x


# --- vectorised kernels (no validation: callers validate once) ----------------------------


#: Below this n the asymptotic series is not accurate to double precision; tabulate instead.
_STIRLING_TABLE_MAX = 15
_STIRLING_TABLE: FloatArray = np.array(
    [0.0] + [float(gammaln(k + 1.0)) - (k + 0.5) * math.log(k) + k - 0.5 * math.log(2 * math.pi)
             for k in range(1, _STIRLING_TABLE_MAX + 1)])


def _stirling_error_array(n: FloatArray) -> FloatArray:
    """log Γ(n+1) − [(n + ½)·log n − n + ½·log 2π], the error of Stirling's formula.

    Splitting it off lets the Poisson pmf be written without the ~10⁶-sized terms
    ``c·log a`` and ``log Γ(c+1)`` that cancel down to a number of order one (catastrophic
    cancellation costs ~1e-10 relative at c = 100,000); Loader's method, as in R's dpois.
    """
    small = n <= _STIRLING_TABLE_MAX
    n2 = n * n
    series = (1.0 / 12 - (1.0 / 360 - (1.0 / 1260 - 1.0 / (1680 * n2)) / n2) / n2) / n
    table = _STIRLING_TABLE[np.minimum(n, _STIRLING_TABLE_MAX).astype(np.int64)]
    return np.where(small, table, series)


def _log_poisson_pmf_array(k: FloatArray, mean: float) -> FloatArray:
    """log P(X = k) for X ~ Poisson(mean), k ≥ 1, mean > 0, accurate to ~1e-13 at k = 10⁵.

    log pmf = −D − ½·log(2πk) − stirling_error(k), with the deviance
    D = k·log(k/m) + m − k = m·[(1 + r)·log1p(r) − r], r = (k − m)/m; the log1p form keeps
    D's absolute error at ~eps·|k − m| where the plain form loses ~eps·k·log k.
    """
    near = k <= 2.0 * mean
    r = (np.where(near, k, mean) - mean) / mean  # only used where near, so r ≤ 1
    deviance = np.where(near,
                        mean * ((1.0 + r) * np.log1p(r) - r),
                        k * (np.log(k) - math.log(mean)) + mean - k)
    result: FloatArray = -deviance - 0.5 * np.log(2.0 * math.pi * k) - _stirling_error_array(k)
    return result


def erlang_c_array(servers: npt.NDArray[np.int64], offered_load: float) -> FloatArray:
    """Erlang C for each server count in ``servers`` at one offered load ``a`` (Erlang).

    1.0 where a ≥ c (the queue is unstable: every request waits), 0.0 when a = 0.
    """
    c = np.asarray(servers, dtype=np.float64)
    a = float(offered_load)
    out = np.ones_like(c)
    if a == 0.0:
        return np.zeros_like(c)
    stable = c > a
    if not stable.any():
        return out
    cs = c[stable]
    # Erlang B = Poisson pmf at c / Poisson cdf at c, and the cdf is Q(c + 1, a). With c > a
    # the cdf is above ~½, so its log is harmless.
    log_b = _log_poisson_pmf_array(cs, a) - np.log(gammaincc(cs + 1.0, a))
    b = np.exp(np.minimum(log_b, 0.0))  # B ≤ 1; clip rounding above it
    # C = B / (1 − ρ(1 − B)) written as B / ((1 − ρ) + ρB): two non-negative terms, so no
    # cancellation even when ρ → 1; (c − a)/c is 1 − ρ without rounding ρ first.
    out[stable] = b / ((cs - a) / cs + (a / cs) * b)
    return out


def prob_wait_exceeds_array(servers: npt.NDArray[np.int64], arrival_rate: float,
                            service_rate: float, wait_seconds: float) -> FloatArray:
    """P(W_q > t) = C(c, λ/μ) · exp(−(cμ − λ)t) per server count; 1.0 where λ ≥ cμ."""
    c = np.asarray(servers, dtype=np.float64)
    lam, mu, t = float(arrival_rate), float(service_rate), float(wait_seconds)
    p = erlang_c_array(servers, lam / mu)
    # With μ or t near the float maximum, cμ and slack·t overflow to +inf: exp(−inf) = 0 is
    # the right limit (no wait), so the overflow is expected, not a warning for the log.
    with np.errstate(over="ignore"):
        slack = c * mu - lam  # spare capacity cμ − λ, req/s
        stable = slack > 0
        # exp(−slack·t) ≤ 1 on the stable side; the unstable side stays 1 (every request
        # waits "for ever" in the long run), which also keeps λ/μ rounding just below c from
        # looking stable when λ ≥ cμ.
        return np.where(stable, p * np.exp(-np.where(stable, slack, 0.0) * t), 1.0)


# --- scalar kernels (no validation) ---------------------------------------------------------
# The same formulas as the array kernels in plain ``math``: a dozen numpy calls on a
# one-element array cost ~40 µs, these a few µs, and a sizing search makes a dozen of them.
# The two agree to ~1e-15 relative (a test holds them to 1e-13); not bit for bit.


def _log_poisson_pmf(k: int, mean: float) -> float:
    if k <= _STIRLING_TABLE_MAX:
        stirling = float(_STIRLING_TABLE[k])
    else:
        n2 = float(k) * k
        stirling = (1.0 / 12 - (1.0 / 360 - (1.0 / 1260 - 1.0 / (1680 * n2)) / n2) / n2) / k
    if k <= 2.0 * mean:
        r = (k - mean) / mean
        deviance = mean * ((1.0 + r) * math.log1p(r) - r)
    else:  # far from the mean: no cancellation to fear, and log k − log m cannot overflow
        deviance = k * (math.log(k) - math.log(mean)) + mean - k
    return -deviance - 0.5 * math.log(2.0 * math.pi * k) - stirling


def _erlang_c(servers: int, offered_load: float) -> float:
    c, a = servers, offered_load
    if a == 0.0:
        return 0.0
    if a >= c:
        return 1.0
    log_b = _log_poisson_pmf(c, a) - math.log(float(gammaincc(c + 1.0, a)))
    b = math.exp(min(log_b, 0.0))
    return b / ((c - a) / c + (a / c) * b)


def _prob_wait_exceeds(servers: int, arrival_rate: float, service_rate: float,
                       wait_seconds: float) -> float:
    slack = servers * service_rate - arrival_rate
    if slack <= 0:
        return 1.0
    return _erlang_c(servers, arrival_rate / service_rate) * math.exp(-slack * wait_seconds)


def _mean_wait_seconds(servers: int, arrival_rate: float, service_rate: float) -> float:
    slack = servers * service_rate - arrival_rate
    if slack <= 0:
        return math.inf
    return _erlang_c(servers, arrival_rate / service_rate) / slack


# --- public scalar API ----------------------------------------------------------------------


def erlang_c(servers: int, offered_load: float) -> float:
    """Probability that an arriving request has to wait in an M/M/c queue.

    ``offered_load`` is a = λ/μ in Erlang. Returns 1.0 when a ≥ c (an unstable queue: the
    backlog grows without bound, so every request eventually waits) and 0.0 when a = 0.
    """
    return _erlang_c(check_servers(servers), _check_offered_load(offered_load))


def mean_wait_seconds(servers: int, arrival_rate: float, service_rate: float) -> float:
    """Mean time a request waits in the queue, E[W_q] = C(c, a) / (cμ − λ), in seconds.

    Derivation: given that it waits, a request sees c busy servers finishing at a combined
    rate cμ while arrivals keep coming at λ, so the wait is exponential with rate cμ − λ;
    E[W_q] = P(wait) · 1/(cμ − λ). (A widely copied snippet multiplies by an extra ρ; for
    c = 1 it would give ρ²/(μ − λ) instead of the M/M/1 textbook ρ/(μ − λ).)
    Returns +inf when λ ≥ cμ.
    """
    c = check_servers(servers)
    lam = check_arrival_rate(arrival_rate)
    mu = check_service_rate(service_rate)
    return _mean_wait_seconds(c, lam, mu)


def prob_wait_exceeds(servers: int, arrival_rate: float, service_rate: float,
                      wait_seconds: float) -> float:
    """P(W_q > t) = C(c, a) · exp(−(cμ − λ)·t): the share of requests queued longer than t.

    The conditional wait of a queued request is exponential with rate cμ − λ (see
    :func:`mean_wait_seconds`), hence the exponential tail. 1.0 when λ ≥ cμ.
    """
    return _prob_wait_exceeds(check_servers(servers), check_arrival_rate(arrival_rate),
                              check_service_rate(service_rate),
                              check_wait_seconds(wait_seconds))
