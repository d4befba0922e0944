"""Replay a real trace through forescale, the HPA and the oracle (BENCHMARK.md, protocol v1).

Layers, bottom up: :mod:`.world` (the simulated world and its scoring), :mod:`.oracle`,
:mod:`.hpa` and :mod:`.forescale_policy` (the policies), :mod:`.runner` (runs them and
compares), :mod:`.report` and :mod:`.plot` (presentation). Only the runner and the
presentation modules are meant for callers; the rest is public for tests.

Nothing is imported here: the world, the oracle and the HPA need no forecasting stack, and
the forecasting stack (statsmodels, torch) is slow to import.
"""
