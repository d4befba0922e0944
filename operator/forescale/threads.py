"""One BLAS/OpenMP thread per process, before numpy or torch is imported.

Their worker threads busy-wait on tiny matrices (a Kalman filter's, one LSTM forecast's):
on a small, shared machine an ARIMA fit was 3-8x slower in CPU and an LSTM forecast up to
50x slower in wall time with the default threading. The CLI, the benchmarks and the tests
call :func:`limit_native_threads` first thing. A user's own setting wins. This module must
import nothing heavy.
"""

from __future__ import annotations

import os

THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def limit_native_threads() -> None:
    """Default every native thread-pool size to 1 (only where the user set none)."""
    for var in THREAD_VARIABLES:
        os.environ.setdefault(var, "1")
