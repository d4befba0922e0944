"""What ``/healthz`` and ``/readyz`` answer: facts about the operator, not a constant ``ok``.

Live: kopf's event loop ticks (a task in the loop beats every few seconds; a stuck loop
stops beating) and no decision cycle has been running far longer than any cycle should (a
cycle stuck in a thread would otherwise hold its policy for ever while the probe said
``ok``). Ready: the operator has reached the Kubernetes API since it started.

Time comes from the injected monotonic clock; nothing here does I/O.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]


@dataclass(frozen=True)
class Verdict:
    ok: bool
    message: str


class Health:
    def __init__(self, *, loop_timeout_seconds: float = 60.0,
                 cycle_timeout_seconds: float = 600.0,
                 clock: Clock = time.monotonic) -> None:
        self.loop_timeout_seconds = loop_timeout_seconds
        self.cycle_timeout_seconds = cycle_timeout_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._beat: float | None = None
        self._api_reached: float | None = None
        self._running: dict[str, float] = {}
        self.decisions = 0

    # -- reported by the operator ----------------------------------------------------------

    def beat(self) -> None:
        """Called from kopf's event loop every few seconds."""
        with self._lock:
            self._beat = self._clock()

    def api_reached(self) -> None:
        with self._lock:
            self._api_reached = self._clock()

    def cycle_started(self, key: str) -> bool:
        """Register a cycle of ``key``; False when one is already running (a policy never
        holds more than one worker thread, so it cannot take more than its share)."""
        with self._lock:
            if key in self._running:
                return False
            self._running[key] = self._clock()
            return True

    def running(self, key: str) -> bool:
        with self._lock:
            return key in self._running

    def cycle_finished(self, key: str) -> None:
        with self._lock:
            self._running.pop(key, None)
            self.decisions += 1

    # -- asked by the probes ---------------------------------------------------------------

    def liveness(self) -> Verdict:
        now = self._clock()
        with self._lock:
            beat, running = self._beat, dict(self._running)
        if beat is not None and now - beat > self.loop_timeout_seconds:
            return Verdict(False, f"kopf's event loop has not ticked for {now - beat:.0f}s")
        stuck = sorted(k for k, began in running.items()
                       if now - began > self.cycle_timeout_seconds)
        if stuck:
            return Verdict(False, f"{len(stuck)} decision cycle(s) running for more than "
                                  f"{self.cycle_timeout_seconds:.0f}s: {', '.join(stuck[:5])}")
        return Verdict(True, "ok")

    def readiness(self) -> Verdict:
        live = self.liveness()
        if not live.ok:
            return live
        with self._lock:
            reached, beat = self._api_reached, self._beat
        if beat is None:
            return Verdict(False, "kopf has not started")
        if reached is None:
            return Verdict(False, "the Kubernetes API has not been reached yet")
        return Verdict(True, "ok")
