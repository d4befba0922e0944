"""The series helpers the day's level, the regimes and the recurring peaks share."""

from __future__ import annotations

import numpy as np
import pytest

from forescale.core.errors import InvalidInputError
from forescale.core.series import Series, window_means


def test_window_means_match_each_window_and_mark_gaps() -> None:
    rng = np.random.default_rng(3)
    values = rng.gamma(2.0, 5.0, 200)
    values[[17, 18, 120]] = np.nan
    means = window_means(values, 5)
    assert means.shape == (196,)
    for i in range(196):
        window = values[i:i + 5]
        if np.isnan(window).any():
            assert np.isnan(means[i])
        else:
            assert means[i] == pytest.approx(window.mean(), rel=1e-12)
    # The windows after a gap are whole again (the running sums do not carry the gap on).
    assert np.isfinite(means[19]) and np.isnan(means[18]) and np.isnan(means[14])


def test_window_means_of_too_short_a_series_are_empty() -> None:
    assert window_means([1.0, 2.0], 3).size == 0
    assert window_means([1.0, 2.0, 3.0], 3).tolist() == [2.0]


def test_last_day_is_the_last_24_hours_or_all_there_is() -> None:
    two_days = Series.from_array(np.arange(2880.0), step_seconds=60.0)
    assert two_days.last_day().tolist() == list(np.arange(1440.0, 2880.0))
    short = Series.from_array([1.0, np.nan, 3.0], step_seconds=60.0)
    assert np.array_equal(short.last_day(), short.values, equal_nan=True)
    # A step longer than a day still has a last sample.
    assert Series.from_array([4.0, 5.0], step_seconds=2 * 86400.0).last_day().tolist() == [5.0]


def test_a_negative_rate_is_refused_with_its_index() -> None:
    with pytest.raises(InvalidInputError, match="index 2"):
        Series.from_array([1.0, np.nan, -2.0])
