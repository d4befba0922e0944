"""The operator's settings, from ``forescale run``'s flags."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

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
    #: URL prefixes a policy's ``metrics.prometheusUrl`` may name (the cluster admin's
    #: allow-list, ``--allow-prometheus-url``). Empty: only the operator's own Prometheus.
    allowed_prometheus_urls: tuple[str, ...] = ()
    #: Where the Leases live (``--lease-namespace``, the chart sets the operator's own
    #: namespace): every target Lease and one membership Lease per replica, so replicas
    #: share the targets and Lease RBAC is one Role there. None: each target's Lease in
    #: the target's namespace, first come first served (one replica, or tests).
    lease_namespace: str | None = None
    #: Replicas that share targets (with ``lease_namespace``): one Helm release's.
    replica_group: str = "default"
    #: Tenant isolation (``--tenant-label``): every policy's query is scoped to its own
    #: namespace by this label matcher, injected into every vector selector. None: off.
    tenant_label: str | None = None

    def check_prometheus_url(self, url: str) -> str | None:
        """Why a policy may not send its queries to ``url``, or None if it may.

        A policy's URL is chosen by whoever may write a ScalingPolicy; without this check
        the operator would send requests anywhere its network reaches (SSRF). A URL is
        allowed when it is on the server of ``--prometheus-url`` or under one of
        :attr:`allowed_prometheus_urls` (same scheme, host and port, and a path at or
        below the entry's)."""
        problem = url_problem(url)
        if problem is not None:
            return problem
        if self.prometheus_url and _origin(url) == _origin(self.prometheus_url):
            return None
        if any(_under(url, entry) for entry in self.allowed_prometheus_urls):
            return None
        allowed = ", ".join(self.allowed_prometheus_urls) or "none besides the operator's own"
        return (f"spec.metrics.prometheusUrl {_origin_text(url)} is not on the operator's "
                f"allow-list (allowed: {allowed}); ask the cluster admin to add it "
                f"(chart value prometheus.allowedUrls)")

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


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a Prometheus URL at all (before any allow-list), or None."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        return "spec.metrics.prometheusUrl is not a valid URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "spec.metrics.prometheusUrl must be an http(s) URL with a host"
    if parts.query or parts.fragment or "?" in url or "#" in url:
        return "spec.metrics.prometheusUrl must not have a query string or fragment"
    if parts.username is not None or parts.password is not None:
        return "spec.metrics.prometheusUrl must not carry credentials"
    return None


def _under(url: str, entry: str) -> bool:
    """``url`` is on ``entry``'s server and its path is ``entry``'s path or below it."""
    if url_problem(entry) is not None or _origin(url) != _origin(entry):
        return False
    prefix = unquote(urlsplit(entry).path).rstrip("/")
    # Decoded, as the request sends it (requests decodes %2e) and servers read it: the
    # segment %2e%2e is "..", and /tenant-a/%2e%2e/tenant-b climbed out of /tenant-a.
    path = unquote(urlsplit(url).path)
    segments = [s for s in path.split("/") if s]
    if ".." in segments or "." in segments:
        return False  # a path that climbs out of the prefix once normalised
    return path.rstrip("/") == prefix or path.startswith(prefix + "/")


def _origin_text(url: str) -> str:
    scheme, host, port = _origin(url)
    return f"{scheme}://{host}:{port}"
