"""The pure decision core: forecast, size and plan.

Nothing in this package talks to Kubernetes or Prometheus, reads the clock or touches the
network: history, spec, state and ``now`` go in, a plan with its reasons comes out. The
import-linter contract in ``pyproject.toml`` keeps it that way.
"""
