"""Each policy's arrival-rate history, read in full once and then only its new tail.

A 7-day window at a 60 s step is 10,080 points; re-reading all of them every period costs
Prometheus (and the operator) that much per policy per period for a few new points. The
reader keeps the last window per policy and asks only for the steps since its end, plus a
few steps before it again (:data:`REFRESH_STEPS`): the newest samples of a range query can
still change while late scrapes arrive. A full read happens on the first cycle (and so
after a restart), after a gap longer than the window, and whenever the query, the
Prometheus URL or the step changes.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from forescale.core.series import REVISABLE_STEPS, Series

#: Steps before the cached end that every tail read fetches again.
REFRESH_STEPS = REVISABLE_STEPS


class RateSource(Protocol):
    """What the reader needs of a Prometheus source (``PrometheusSource`` or a fake)."""

    def read_rate(self, query: str, *, start: float, end: float, step_seconds: float,
                  allow_empty: bool = False) -> Series: ...

    def read_value(self, query: str, *, at: float) -> float: ...  # guardrail queries


@dataclass(frozen=True)
class _Cached:
    origin: tuple[str, str, float]  # url, query, step
    series: Series


@dataclass(frozen=True)
class Read:
    """A window of history and how many points were asked of Prometheus for it."""

    series: Series
    points_read: int
    full: bool


class HistoryReader:
    """Thread-safe: the operator's cycles run in threads, one per policy at a time."""

    def __init__(self) -> None:
        self._cache: dict[str, _Cached] = {}
        self._lock = threading.Lock()

    def forget(self, key: str) -> None:
        with self._lock:
            self._cache.pop(key, None)

    def read(self, key: str, source: RateSource, *, url: str, query: str, start: float,
             end: float, step_seconds: float) -> Read:
        """The history over ``[start, end)`` on the ``step_seconds`` grid. Errors of the
        source propagate (and drop the cache, so the next read is a full one)."""
        origin = (url, query, step_seconds)
        with self._lock:
            cached = self._cache.get(key)
        try:
            result = self._read(source, cached, origin, query, start, end, step_seconds)
        except Exception:
            self.forget(key)
            raise
        with self._lock:
            self._cache[key] = _Cached(origin, result.series)
        return result

    @staticmethod
    def _read(source: RateSource, cached: _Cached | None, origin: tuple[str, str, float],
              query: str, start: float, end: float, step: float) -> Read:
        n = max(math.floor((end - start) / step + 1e-9), 0)
        old = cached.series if cached is not None and cached.origin == origin else None
        if old is not None and _on_grid(old, start, step) and old.start_seconds <= start:
            # Keep what is still inside the window, then read from a little before its end.
            keep_from = round((start - old.start_seconds) / step)
            kept = old.values[keep_from:]
            tail_start = start + max(len(kept) - REFRESH_STEPS, 0) * step
            if len(kept) > REFRESH_STEPS and tail_start < end:
                tail = source.read_rate(query, start=tail_start, end=end, step_seconds=step,
                                        allow_empty=True)
                head = kept[: round((tail_start - start) / step)]
                values = np.concatenate([head, tail.values])[:n]
                if len(values) == n and not np.isnan(tail.values).all():
                    return Read(Series(start, step, values), len(tail), full=False)
        # First read, a gap, a change of query, or a tail with no data at all (let the full
        # read say NoData rather than report a silent hole).
        series = source.read_rate(query, start=start, end=end, step_seconds=step)
        return Read(series, len(series), full=True)


def _on_grid(series: Series, start: float, step: float) -> bool:
    offset = (start - series.start_seconds) / step
    return series.step_seconds == step and abs(offset - round(offset)) < 1e-6
