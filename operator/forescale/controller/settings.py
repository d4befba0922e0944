"""The operator's settings, from ``forescale run``'s flags."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, kw_only=True)
class ControllerSettings:
    identity: str
    prometheus_url: str | None = None
    models_dir: Path | None = None
    kubeconfig: str | None = None
    #: Step of the history read from Prometheus; the models forecast in these steps.
    step_seconds: float = 60.0
    #: Lease duration = 2 × decision period + this.
    lease_extra_seconds: float = 15.0
    prometheus_timeout_seconds: float = 10.0
    #: First retry after a failed cycle; doubles up to the decision period.
    retry_seconds: float = 2.0
