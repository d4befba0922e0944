"""Erlang C against values computed independently of the code under test.

References: a published table value, hand-derived M/M/1 and M/M/2 closed forms, the
textbook sum formula and the stationary distribution evaluated in 50-digit mpmath, and the
Erlang-B recursion (a different algorithm) at c = 100,000.
"""

from __future__ import annotations

import math

import mpmath  # type: ignore[import-untyped]
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import quad

from forescale.core.errors import InvalidInputError
from forescale.core.sizing import erlang_c, mean_wait_seconds, prob_wait_exceeds
from forescale.core.sizing.erlang import erlang_c_array, prob_wait_exceeds_array


def textbook_erlang_c(c: int, a: float) -> mpmath.mpf:
    """C = (a^c/c! · c/(c−a)) / (Σ_{k<c} a^k/k! + a^c/c! · c/(c−a)), in 50 digits."""
    with mpmath.workdps(50):
        a_mp = mpmath.mpf(a)
        total, term = mpmath.mpf(0), mpmath.mpf(1)
        for k in range(c):
            total += term
            term *= a_mp / (k + 1)
        top = term * c / (c - a_mp)
        return top / (total + top)


def stationary_mean_wait(c: int, lam: float, mu: float) -> mpmath.mpf:
    """E[W_q] = L_q / λ from the M/M/c stationary distribution (Little's law), no Erlang C.

    π_0 = [Σ_{k<c} a^k/k! + a^c/c! · 1/(1−ρ)]⁻¹, π_n = π_c ρ^(n−c) for n ≥ c, and
    L_q = Σ_{n>c} (n−c) π_n = π_c ρ / (1−ρ)².
    """
    with mpmath.workdps(50):
        lam_mp, mu_mp = mpmath.mpf(lam), mpmath.mpf(mu)
        a = lam_mp / mu_mp
        rho = a / c
        total, term = mpmath.mpf(0), mpmath.mpf(1)
        for k in range(c):
            total += term
            term *= a / (k + 1)
        pi0 = 1 / (total + term / (1 - rho))
        pi_c = pi0 * term
        return pi_c * rho / (1 - rho) ** 2 / lam_mp


def erlang_b_recursion(c: int, a: float) -> float:
    """B(0) = 1, B(k) = a·B(k−1) / (k + a·B(k−1)); then C = B / (1 − ρ(1 − B))."""
    b = 1.0
    for k in range(1, c + 1):
        b = a * b / (k + a * b)
    rho = a / c
    return b / (1.0 - rho * (1.0 - b))


# --- known values -----------------------------------------------------------------------------


def test_published_value_c10_a8() -> None:
    # The usual call-centre textbook example: 10 agents, 8 Erlang → P(wait) ≈ 0.409.
    assert erlang_c(10, 8.0) == pytest.approx(0.4092, abs=5e-4)


@pytest.mark.parametrize("a", [0.01, 0.3, 0.8, 0.999])
def test_mm1_probability_of_waiting_is_rho(a: float) -> None:
    # M/M/1: a request waits iff the server is busy, which it is a fraction ρ = a of time.
    assert erlang_c(1, a) == pytest.approx(a, rel=1e-14)


@pytest.mark.parametrize("rho", [0.1, 0.5, 0.75, 0.99])
def test_mm2_closed_form(rho: float) -> None:
    # M/M/2 by hand: π0 = (1−ρ)/(1+ρ), C = π0·a²/2/(1−ρ) = 2ρ²/(1+ρ).
    assert erlang_c(2, 2 * rho) == pytest.approx(2 * rho**2 / (1 + rho), rel=1e-13)


def test_no_load_never_waits_and_overload_always_waits() -> None:
    assert erlang_c(5, 0.0) == 0.0
    assert erlang_c(5, 5.0) == 1.0
    assert erlang_c(5, 7.5) == 1.0
    assert prob_wait_exceeds(3, 30.0, 10.0, 0.05) == 1.0
    assert mean_wait_seconds(3, 30.0, 10.0) == math.inf


# --- against 50-digit references ------------------------------------------------------------


GRID = [(c, rho * c) for c in (1, 2, 5, 10, 50, 169, 170, 171, 500, 1000, 2500, 5000)
        for rho in (0.3, 0.8, 0.95, 0.999)]


@pytest.mark.parametrize(("c", "a"), GRID)
def test_matches_textbook_sum_in_mpmath(c: int, a: float) -> None:
    expected = float(textbook_erlang_c(c, a))
    assert erlang_c(c, a) == pytest.approx(expected, rel=1e-12, abs=1e-300)


def test_matches_textbook_sum_at_c_100000() -> None:
    # 100,000 terms of 50-digit arithmetic: ~1 s, the one expensive reference.
    assert erlang_c(100_000, 99_500.0) == pytest.approx(
        float(textbook_erlang_c(100_000, 99_500.0)), rel=1e-12)


@pytest.mark.parametrize("a", [98_500.0, 99_900.0, 99_999.0])
def test_matches_erlang_b_recursion_at_c_100000(a: float) -> None:
    # The recursion accumulates ~1e5 roundings, hence the looser tolerance.
    assert erlang_c(100_000, a) == pytest.approx(erlang_b_recursion(100_000, a), rel=1e-9)


def test_naive_factorial_range_is_no_problem() -> None:
    # The naive formula overflows from c ≈ 170 on; here it is just another number.
    for c in (170, 171, 172, 1000, 10_000, 100_000):
        value = erlang_c(c, 0.9 * c)
        assert 0.0 <= value <= 1.0
        assert math.isfinite(value)


# --- shape ------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(c=st.integers(min_value=1, max_value=20_000), rho=st.floats(0.0, 0.9999))
def test_monotone_decreasing_in_servers(c: int, rho: float) -> None:
    a = rho * c
    here, more = erlang_c(c, a), erlang_c(c + 1, a)
    assert more <= here
    if here > 1e-250:
        assert more < here


@settings(max_examples=150, deadline=None)
@given(c=st.integers(min_value=1, max_value=20_000), rho=st.floats(0.0, 0.9999),
       wait=st.floats(0.0, 1.0))
def test_tail_monotone_decreasing_in_servers(c: int, rho: float, wait: float) -> None:
    mu = 10.0
    lam = rho * c * mu
    assert prob_wait_exceeds(c + 1, lam, mu, wait) <= prob_wait_exceeds(c, lam, mu, wait)


@settings(max_examples=100, deadline=None)
@given(c=st.integers(min_value=1, max_value=20_000), r1=st.floats(0.0, 0.9999),
       r2=st.floats(0.0, 0.9999))
def test_monotone_increasing_in_load(c: int, r1: float, r2: float) -> None:
    lo, hi = sorted((r1 * c, r2 * c))
    assert erlang_c(c, lo) <= erlang_c(c, hi) + 1e-15


def test_continuous_at_c_100000() -> None:
    c = 100_000
    loads = np.linspace(98_000.0, c - 1e-3, 400)
    values = np.array([erlang_c(c, float(a)) for a in loads])
    assert np.all(np.isfinite(values))
    assert np.all(np.diff(values) > 0)  # strictly rising with load, no plateaus or jumps
    # Neighbouring loads 5 Erlang apart never differ by more than the local slope allows:
    # the largest step is a few percent, not a jump from 0 to 1.
    assert np.max(np.diff(values)) < 0.05
    # and the curve reaches 1 continuously at a → c (where the function is defined as 1).
    assert erlang_c(c, c - 1e-6) == pytest.approx(1.0, abs=1e-5)
    assert erlang_c(c, float(c)) == 1.0
    # Neighbouring server counts at the same load also sit close together.
    assert erlang_c(c + 1, 99_900.0) == pytest.approx(erlang_c(c, 99_900.0), rel=0.05)


@pytest.mark.parametrize("c", [1, 7, 15, 16, 17, 400, 100_000])
def test_scalar_and_array_kernels_agree(c: int) -> None:
    loads = [0.0, 0.25 * c, 0.9 * c, 0.999 * c, float(c), 2.0 * c]
    array = erlang_c_array(np.full(len(loads), c, dtype=np.int64), 0.0)
    assert array[0] == 0.0
    for a in loads:
        vector = float(erlang_c_array(np.array([c], dtype=np.int64), a)[0])
        assert vector == pytest.approx(erlang_c(c, a), rel=1e-13, abs=1e-300)
        lam = a * 10.0
        vector_tail = float(prob_wait_exceeds_array(np.array([c], dtype=np.int64),
                                                    lam, 10.0, 0.05)[0])
        assert vector_tail == pytest.approx(prob_wait_exceeds(c, lam, 10.0, 0.05),
                                            rel=1e-13, abs=1e-300)


# --- waiting times ----------------------------------------------------------------------------


def test_mm1_mean_wait_by_hand() -> None:
    # M/M/1, λ = 8, μ = 10: W_q = ρ/(μ − λ) = 0.8/2 = 0.4 s. The extra-ρ variant
    # C·ρ/(cμ − λ) would give 0.32 s.
    assert mean_wait_seconds(1, 8.0, 10.0) == pytest.approx(0.4, rel=1e-13)


def test_mm2_mean_wait_by_hand() -> None:
    # M/M/2, λ = 15, μ = 10, ρ = 0.75: W_q = C/(2μ − λ) = (2ρ²/(1+ρ))/5
    # = ρ²/(μ(1 − ρ²)) = 0.5625/4.375 = 0.128571… s (extra-ρ variant: 0.0964 s).
    assert mean_wait_seconds(2, 15.0, 10.0) == pytest.approx(0.5625 / 4.375, rel=1e-13)


@pytest.mark.parametrize(("c", "lam", "mu"), [(1, 3.0, 5.0), (3, 25.0, 10.0),
                                                (12, 80.0, 10.0), (40, 390.0, 10.0),
                                                (200, 0.19, 0.001)])
def test_mean_wait_matches_littles_law(c: int, lam: float, mu: float) -> None:
    expected = float(stationary_mean_wait(c, lam, mu))
    assert mean_wait_seconds(c, lam, mu) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("c", "lam", "mu"), [(1, 8.0, 10.0), (12, 80.0, 10.0),
                                                (105, 1000.0, 10.0)])
def test_mean_wait_is_the_integral_of_the_tail(c: int, lam: float, mu: float) -> None:
    # E[W_q] = ∫₀^∞ P(W_q > t) dt ties the two functions together: an extra ρ in either
    # one, or a wrong decay rate in the tail, breaks the equality.
    integral, _ = quad(lambda t: prob_wait_exceeds(c, lam, mu, t), 0.0, np.inf)
    assert integral == pytest.approx(mean_wait_seconds(c, lam, mu), rel=1e-8)


def test_tail_by_hand() -> None:
    # M/M/1, λ = 8, μ = 10: P(W_q > t) = ρ·exp(−(μ − λ)t); at t = 0.5 s: 0.8·e^(−1).
    assert prob_wait_exceeds(1, 8.0, 10.0, 0.5) == pytest.approx(0.8 * math.exp(-1.0),
                                                                 rel=1e-13)
    # At t = 0 the tail is the probability of waiting at all.
    assert prob_wait_exceeds(10, 80.0, 10.0, 0.0) == pytest.approx(erlang_c(10, 8.0),
                                                                   rel=1e-15)


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(("call", "needle"), [
    (lambda: erlang_c(0, 1.0), "servers must be at least 1"),
    (lambda: erlang_c(-3, 1.0), "servers must be at least 1"),
    (lambda: erlang_c(2.5, 1.0), "servers must be an integer"),  # type: ignore[arg-type]
    (lambda: erlang_c(True, 0.5), "servers must be an integer"),
    (lambda: erlang_c(3, -1.0), "offered_load must be non-negative"),
    (lambda: erlang_c(3, math.nan), "offered_load must be a number, got NaN"),
    (lambda: erlang_c(3, math.inf), "offered_load must be finite"),
    (lambda: mean_wait_seconds(3, -2.0, 10.0), "arrival_rate must be non-negative"),
    (lambda: mean_wait_seconds(3, math.nan, 10.0), "arrival_rate must be a number"),
    (lambda: mean_wait_seconds(3, 2.0, 0.0), "service_rate must be positive"),
    (lambda: mean_wait_seconds(3, 2.0, -1.0), "service_rate must be positive"),
    (lambda: prob_wait_exceeds(3, 2.0, math.nan, 0.1), "service_rate must be a number"),
    (lambda: prob_wait_exceeds(3, 2.0, 10.0, -0.1), "wait_seconds must be non-negative"),
    (lambda: prob_wait_exceeds(3, 2.0, 10.0, "0.1"),  # type: ignore[arg-type]
     "wait_seconds must be a number"),
])
def test_bad_input_raises_one_line(call: object, needle: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        call()  # type: ignore[operator]
    message = str(info.value)
    assert needle in message
    assert "\n" not in message
