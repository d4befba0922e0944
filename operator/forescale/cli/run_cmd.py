"""``forescale run``: the operator."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import sys
from pathlib import Path

import click

from forescale.adapters import MAX_TIMEOUT_SECONDS
from forescale.cli.options import FiniteFloat, is_namespace_name
from forescale.core.errors import os_reason

#: A Kubernetes label value (the --replica-group, a label of the membership Leases).
LABEL_VALUE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")


class _Seconds(FiniteFloat):
    """A finite number of seconds in [lo, hi]: NaN, infinities and out-of-range values
    (a negative Lease extra once made Leases with a negative duration) are usage errors."""

    name = "seconds"

    def __init__(self, lo: float, hi: float) -> None:
        super().__init__(ge=lo)
        self.hi = hi

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        x = super().convert(value, param, ctx)
        if x > self.hi:
            self.fail(f"must be at most {self.hi:g}, got {x:g}", param, ctx)
        return x


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
                 "level": record.levelname.lower(), "logger": record.name,
                 "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _configure_logging(fmt: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


@click.command("run")
@click.option("--namespace", "namespaces", multiple=True, help="Watch these namespaces.")
@click.option("--all-namespaces", is_flag=True, help="Watch every namespace.")
@click.option("--prometheus-url", help="Default Prometheus for policies that name none.")
@click.option("--allow-prometheus-url", "allowed_prometheus_urls", multiple=True,
              envvar="FORESCALE_ALLOWED_PROMETHEUS_URLS",
              help="A URL prefix a policy's metrics.prometheusUrl may name (repeatable; "
                   "default: only --prometheus-url's server) "
                   "[env FORESCALE_ALLOWED_PROMETHEUS_URLS, space-separated].")
@click.option("--prometheus-bearer-token-file", envvar="FORESCALE_PROMETHEUS_BEARER_TOKEN_FILE",
              type=click.Path(dir_okay=False, path_type=Path),
              help="Send this file's token as 'Authorization: Bearer' to --prometheus-url's "
                   "server (re-read per request) [env FORESCALE_PROMETHEUS_BEARER_TOKEN_FILE].")
@click.option("--prometheus-ca-file", envvar="FORESCALE_PROMETHEUS_CA_FILE",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CA bundle (PEM) for Prometheus' certificate "
                   "[env FORESCALE_PROMETHEUS_CA_FILE].")
@click.option("--prometheus-insecure-skip-verify", is_flag=True,
              envvar="FORESCALE_PROMETHEUS_INSECURE_SKIP_VERIFY",
              help="Do not verify Prometheus' certificate "
                   "[env FORESCALE_PROMETHEUS_INSECURE_SKIP_VERIFY].")
@click.option("--prometheus-timeout-seconds",
              type=FiniteFloat(ge=0.1, le=MAX_TIMEOUT_SECONDS), default=10.0,
              show_default=True,
              help="A read slower than this is a failed read: hold replicas, retry later.")
@click.option("--models-dir", type=click.Path(path_type=Path),
              help="Where forecast.lstm.modelRef artifacts live.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=8080,
              show_default=True,
              help="/metrics, /healthz (liveness) and /readyz (0: any free port).")
@click.option("--metrics-address", default="0.0.0.0", show_default=True)
@click.option("--identity", default=lambda: os.environ.get("POD_NAME") or socket.gethostname(),
              help="Lease holder identity (default: $POD_NAME or the host name).")
@click.option("--standalone/--no-standalone", default=True, show_default=True,
              help="Without kopf peering; Leases still keep targets exclusive.")
@click.option("--peering", help="Use kopf peering under this name (implies --no-standalone).")
@click.option("--kubeconfig", type=click.Path(exists=True, dir_okay=False),
              help="Kubeconfig file (default: in-cluster, then ~/.kube/config).")
@click.option("--step-seconds", type=_Seconds(1, 3600), default=60.0,
              show_default=True,
              help="Step of the arrival-rate history read from Prometheus (1..3600).")
@click.option("--lease-extra-seconds", type=_Seconds(0, 3600), default=15.0,
              show_default=True,
              help="Lease duration is 2 x decision period + this (0..3600).")
@click.option("--lease-namespace", envvar="FORESCALE_LEASE_NAMESPACE",
              help="Keep every Lease in this namespace (the operator's own): replicas then "
                   "share the targets, each taking its fair share "
                   "[env FORESCALE_LEASE_NAMESPACE].")
@click.option("--replica-group", envvar="FORESCALE_REPLICA_GROUP", default="default",
              show_default=True,
              help="With --lease-namespace: the replicas that share the targets are those of "
                   "this group (the chart sets the release's name), not every operator pod "
                   "in the namespace [env FORESCALE_REPLICA_GROUP].")
@click.option("--tenant-label", envvar="FORESCALE_TENANT_LABEL",
              help="Scope every policy's query to its own namespace: this label matcher "
                   "(e.g. namespace) is injected into every vector selector, and a query "
                   "that selects another value is InvalidSpec [env FORESCALE_TENANT_LABEL].")
@click.option("--workers", type=click.IntRange(1, 256), default=8, show_default=True,
              help="Threads that run decision cycles (one policy uses at most one).")
@click.option("--log-format", type=click.Choice(["json", "text"]), default="json",
              show_default=True)
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True)
def command(namespaces: tuple[str, ...], all_namespaces: bool, prometheus_url: str | None,
            allowed_prometheus_urls: tuple[str, ...],
            prometheus_bearer_token_file: Path | None, prometheus_ca_file: Path | None,
            prometheus_insecure_skip_verify: bool, prometheus_timeout_seconds: float,
            models_dir: Path | None,
            metrics_port: int, metrics_address: str, identity: str,
            standalone: bool, peering: str | None, kubeconfig: str | None,
            step_seconds: float, lease_extra_seconds: float, lease_namespace: str | None,
            replica_group: str, tenant_label: str | None,
            workers: int, log_format: str,
            log_level: str) -> None:
    """Run the operator: one decision loop per ScalingPolicy."""
    if not namespaces and not all_namespaces:
        raise click.UsageError("give --namespace NS (repeatable) or --all-namespaces")
    if namespaces and all_namespaces:
        raise click.UsageError("give --namespace NS (repeatable) or --all-namespaces, "
                               "not both")
    from forescale.controller.settings import url_problem

    # Every flag is checked before anything starts: a bad one is one line and exit 2.
    allowed = tuple(u for entry in allowed_prometheus_urls for u in entry.split())
    for name, url in (("--prometheus-url", prometheus_url),
                      *(("--allow-prometheus-url", u) for u in allowed)):
        problem = url_problem(url) if url is not None else None
        if problem is not None:
            raise click.BadParameter(f"{url!r}: {problem.split(' ', 1)[1]}",
                                     param_hint=f"'{name}'")
    if lease_namespace is not None and not is_namespace_name(lease_namespace):
        raise click.BadParameter("must be a namespace name (DNS-1123 label)",
                                 param_hint="'--lease-namespace'")
    for namespace in namespaces:
        if not is_namespace_name(namespace):
            raise click.BadParameter(f"must be a namespace name (DNS-1123 label), got "
                                     f"{namespace!r}", param_hint="'--namespace'")
    if not LABEL_VALUE.fullmatch(replica_group):
        raise click.BadParameter("must be a label value: 1..63 letters, digits, '-', '_' "
                                 "or '.', starting and ending with a letter or digit",
                                 param_hint="'--replica-group'")
    if tenant_label and not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", tenant_label):
        raise click.BadParameter("must be a Prometheus label name",
                                 param_hint="'--tenant-label'")
    if not identity or len(identity) > 253 or not identity.isprintable():
        raise click.BadParameter("must be 1..253 printable characters",
                                 param_hint="'--identity'")
    _configure_logging(log_format, log_level)
    from forescale.controller.handlers import run_operator
    from forescale.controller.health import Health
    from forescale.controller.kube import KubeClient
    from forescale.controller.metrics import OperatorMetrics, serve
    from forescale.controller.settings import ControllerSettings
    from forescale.controller.worker import Controller

    settings = ControllerSettings(identity=identity, prometheus_url=prometheus_url,
                                  models_dir=models_dir, kubeconfig=kubeconfig,
                                  step_seconds=step_seconds,
                                  lease_extra_seconds=lease_extra_seconds,
                                  prometheus_bearer_token_file=prometheus_bearer_token_file,
                                  prometheus_ca_file=prometheus_ca_file,
                                  prometheus_insecure_skip_verify=prometheus_insecure_skip_verify,
                                  prometheus_timeout_seconds=prometheus_timeout_seconds,
                                  allowed_prometheus_urls=allowed,
                                  lease_namespace=lease_namespace,
                                  replica_group=replica_group,
                                  tenant_label=tenant_label or None)
    try:
        kube = KubeClient(kubeconfig=kubeconfig)
    except Exception as exc:  # the kubernetes client raises many kinds for a bad config
        where = f"kubeconfig {kubeconfig}" if kubeconfig else "the Kubernetes configuration"
        first = (str(exc).splitlines() or [""])[0][:200]
        raise click.BadParameter(f"cannot use {where}: {type(exc).__name__}: {first}",
                                 param_hint="'--kubeconfig'") from None
    metrics = OperatorMetrics()
    health = Health()
    try:
        port = serve(metrics, address=metrics_address, port=metrics_port, health=health)
    except OSError as exc:  # the port is taken, the address is not this host's or no address
        raise click.BadParameter(
            f"cannot serve on {metrics_address}:{metrics_port}: "
            f"{os_reason(exc)}",
            param_hint="'--metrics-address'/'--metrics-port'") from None
    logging.getLogger("forescale.controller").info(
        "forescale operator %s: metrics on %s:%d", identity, metrics_address, port)
    controller = Controller(settings, kube, metrics, health=health)
    standalone = standalone and not peering
    run_operator(controller, standalone=standalone, peering=peering,
                 all_namespaces=all_namespaces, namespaces=namespaces, workers=workers)
