"""Benchmark jobs run side by side: one process each, ``workers`` at a time (1: in this
process, in order). Shared by the benchmark scripts (run as ``python
benchmarks/<script>.py``, so this directory is on ``sys.path``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

Job = TypeVar("Job")
Result = TypeVar("Result")


def run_jobs(run: Callable[[Job], Result], jobs: Sequence[Job], workers: int) -> list[Result]:
    """``[run(job) for job in jobs]``, in order, ``workers`` processes at a time."""
    if workers <= 1:
        return [run(job) for job in jobs]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(run, jobs))
