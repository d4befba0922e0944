"""Adapters to the outside world: each turns a foreign API into core types and core errors.

The decision core never imports these; the operator module wires them to it.
"""

#: The longest one Prometheus request may take (a longer deadline overflowed the clock: the
#: flags of ``forescale run`` and ``forescale backtest`` are bounded by it too).
MAX_TIMEOUT_SECONDS = 3600.0
