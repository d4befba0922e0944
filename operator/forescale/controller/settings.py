"""The operator's settings, from ``forescale run``'s flags."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from forescale.adapters.prometheus import PrometheusSource


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
    #: Sent as ``Authorization: Bearer`` to ``prometheus_url``'s server only (re-read per
    #: request, so a rotated Secret is picked up).
    prometheus_bearer_token_file: Path | None = None
    #: CA bundle that verifies Prometheus' certificate (default: the system CAs).
    prometheus_ca_file: Path | None = None
    prometheus_insecure_skip_verify: bool = False

    def prometheus_source(self, url: str) -> PrometheusSource:
        """A source for ``url`` with the operator's TLS settings, and its bearer token when
        ``url`` is on the server of ``--prometheus-url``: a policy's own
        ``metrics.prometheusUrl`` is chosen by whoever writes the policy, and must not be
        able to collect the operator's credentials."""
        token = (self.prometheus_bearer_token_file
                 if self.prometheus_url and _origin(url) == _origin(self.prometheus_url)
                 else None)
        return PrometheusSource(url, timeout_seconds=self.prometheus_timeout_seconds,
                                verify_tls=not self.prometheus_insecure_skip_verify,
                                ca_file=self.prometheus_ca_file, bearer_token_file=token)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    try:
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:  # a bad port: PrometheusSource rejects the URL with its own message
        port = -1
    return parts.scheme, (parts.hostname or "").lower(), port
