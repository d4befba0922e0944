"""``forescale run``'s Prometheus authentication flags and their env-var fallbacks (the names
the Helm chart sets), parsed into :class:`ControllerSettings` without starting anything."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from forescale.cli import run_cmd
from forescale.controller import handlers, kube, metrics, worker
from forescale.controller.settings import ControllerSettings

CHART = Path(__file__).resolve().parents[2] / "charts" / "forescale" / "templates"
ENV = ("FORESCALE_PROMETHEUS_BEARER_TOKEN_FILE", "FORESCALE_PROMETHEUS_CA_FILE",
       "FORESCALE_PROMETHEUS_INSECURE_SKIP_VERIFY", "FORESCALE_ALLOWED_PROMETHEUS_URLS",
       "FORESCALE_LEASE_NAMESPACE", "FORESCALE_TENANT_LABEL", "FORESCALE_REPLICA_GROUP")


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    class FakeController:
        def __init__(self, settings: ControllerSettings, *args: object,
                     **kwargs: object) -> None:
            seen["settings"] = settings

    # The command points the root logger at its stderr; keep the test run's logging intact.
    monkeypatch.setattr(run_cmd, "_configure_logging", lambda *a: None)
    monkeypatch.setattr(kube, "KubeClient", lambda **kw: object())
    monkeypatch.setattr(metrics, "serve", lambda *a, **kw: 0)
    monkeypatch.setattr(worker, "Controller", FakeController)
    monkeypatch.setattr(handlers, "run_operator", lambda *a, **kw: None)
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    return seen


def run(args: list[str], env: dict[str, str] | None = None) -> None:
    result = CliRunner().invoke(run_cmd.command,
                                ["--all-namespaces", "--log-format", "text", *args],
                                env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output


def test_defaults_are_no_auth_and_verified_tls(captured: dict[str, Any]) -> None:
    run([])
    s: ControllerSettings = captured["settings"]
    assert s.prometheus_bearer_token_file is None
    assert s.prometheus_ca_file is None
    assert s.prometheus_insecure_skip_verify is False


def test_flags(captured: dict[str, Any], tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("not parsed at startup")
    run(["--prometheus-url", "https://prom:9090",
         "--prometheus-bearer-token-file", str(tmp_path / "token"),
         "--prometheus-ca-file", str(ca), "--prometheus-insecure-skip-verify"])
    s: ControllerSettings = captured["settings"]
    assert s.prometheus_bearer_token_file == tmp_path / "token"
    assert s.prometheus_ca_file == ca
    assert s.prometheus_insecure_skip_verify is True


def test_env_fallbacks_with_the_charts_names(captured: dict[str, Any], tmp_path: Path) -> None:
    deployment = (CHART / "deployment.yaml").read_text()
    assert set(re.findall(r"FORESCALE_[A-Z_]+", deployment)) == set(ENV)
    ca = tmp_path / "ca.crt"
    ca.write_text("x")
    run([], env={"FORESCALE_LEASE_NAMESPACE": "forescale", "FORESCALE_TENANT_LABEL": "namespace",
                 "FORESCALE_REPLICA_GROUP": "team-a-forescale",
                 "FORESCALE_PROMETHEUS_BEARER_TOKEN_FILE": "/var/run/token",
                 "FORESCALE_PROMETHEUS_CA_FILE": str(ca),
                 "FORESCALE_PROMETHEUS_INSECURE_SKIP_VERIFY": "true"})
    s: ControllerSettings = captured["settings"]
    assert s.prometheus_bearer_token_file == Path("/var/run/token")
    assert s.prometheus_ca_file == ca
    assert s.prometheus_insecure_skip_verify is True
    assert s.lease_namespace == "forescale"
    assert s.tenant_label == "namespace"
    assert s.replica_group == "team-a-forescale"


def test_a_missing_ca_file_is_a_usage_error(captured: dict[str, Any], tmp_path: Path) -> None:
    result = CliRunner().invoke(run_cmd.command, ["--all-namespaces",
                                          "--prometheus-ca-file", str(tmp_path / "none")])
    assert result.exit_code == 2
    assert "settings" not in captured


def test_the_source_gets_the_token_only_for_the_operators_prometheus(tmp_path: Path) -> None:
    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    ca.write_text("x")
    s = ControllerSettings(identity="t", prometheus_url="https://prom.monitoring:443/",
                           prometheus_bearer_token_file=token, prometheus_ca_file=ca)
    same = s.prometheus_source("https://PROM.monitoring/prometheus")
    other = s.prometheus_source("https://evil.example:443")
    assert same._client.auth is not None and same._client.auth.path == token
    assert other._client.auth is None
    assert same._client._session.verify == other._client._session.verify == str(ca)
    insecure = ControllerSettings(identity="t", prometheus_insecure_skip_verify=True,
                                  prometheus_ca_file=ca)
    assert insecure.prometheus_source("https://x:1")._client._session.verify is False


def test_replica_group(captured: dict[str, Any]) -> None:
    run([])
    assert captured["settings"].replica_group == "default"
    run(["--replica-group", "team-a-forescale"])
    assert captured["settings"].replica_group == "team-a-forescale"
    for bad in ("", "-x", "a b", "x" * 64):
        result = CliRunner().invoke(run_cmd.command, ["--all-namespaces",
                                                      "--replica-group", bad])
        assert result.exit_code == 2, bad
        assert "--replica-group" in result.output


def test_prometheus_timeout(captured: dict[str, Any]) -> None:
    run([])
    assert captured["settings"].prometheus_timeout_seconds == 10.0
    run(["--prometheus-timeout-seconds", "2.5"])
    assert captured["settings"].prometheus_timeout_seconds == 2.5
    for bad in ("0", "3601"):  # past an hour, every read overflowed the clock
        result = CliRunner().invoke(run_cmd.command, ["--all-namespaces",
                                                      "--prometheus-timeout-seconds", bad])
        assert result.exit_code == 2, bad


@pytest.mark.parametrize(("args", "message"), [
    (["--lease-extra-seconds", "-100"], "must be at least 0"),
    (["--lease-extra-seconds", "nan"], "not a finite number"),
    (["--step-seconds", "0"], "must be at least 1"),
    (["--step-seconds", "nan"], "not a finite number"),
    (["--step-seconds", "1e9"], "must be at most 3600"),
    (["--workers", "0"], "--workers"),
    (["--metrics-port", "70000"], "--metrics-port"),
    (["--kubeconfig", "/nonexistent/config"], "does not exist"),
    (["--prometheus-url", "prom:9090"], "must be an http(s) URL with a host"),
    (["--allow-prometheus-url", "http://x/#"], "must not have a query string or fragment"),
    (["--identity", ""], "--identity"),
    (["--lease-namespace", "../kube-system"], "must be a namespace name"),
    (["--tenant-label", "name space"], "must be a Prometheus label name"),
])
def test_bad_flags_are_one_line_and_exit_2(captured: dict[str, Any], args: list[str],
                                           message: str) -> None:
    result = CliRunner().invoke(run_cmd.command, ["--all-namespaces", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert "settings" not in captured


def test_a_malformed_kubeconfig_is_a_usage_error(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # The real client this time: it must be refused before anything starts.
    monkeypatch.setattr(run_cmd, "_configure_logging", lambda *a: None)
    bad = tmp_path / "config"
    bad.write_text("clusters: [unclosed\n")
    result = CliRunner().invoke(run_cmd.command, ["--all-namespaces", "--kubeconfig", str(bad)])
    assert result.exit_code == 2, result.output
    assert "cannot use kubeconfig" in result.output and "Traceback" not in result.output
    empty = tmp_path / "empty"
    empty.write_text("apiVersion: v1\nkind: Config\n")
    result = CliRunner().invoke(run_cmd.command,
                                ["--all-namespaces", "--kubeconfig", str(empty)])
    assert result.exit_code == 2 and "cannot use kubeconfig" in result.output, result.output


def test_allow_list_flag_and_env(captured: dict[str, Any]) -> None:
    run(["--allow-prometheus-url", "http://a:9090/p", "--allow-prometheus-url", "https://b"])
    assert captured["settings"].allowed_prometheus_urls == ("http://a:9090/p", "https://b")
    run([], env={"FORESCALE_ALLOWED_PROMETHEUS_URLS": "http://a:9090 http://c:1/x"})
    assert captured["settings"].allowed_prometheus_urls == ("http://a:9090", "http://c:1/x")


def test_namespaces_and_all_namespaces_together_are_refused(captured: dict[str, Any]) -> None:
    """kopf once raised TypeError (a traceback) for the pair."""
    result = CliRunner().invoke(run_cmd.command, ["--all-namespaces", "--namespace", "a"])
    assert result.exit_code == 2, result.output
    assert "--all-namespaces, not both" in result.output and "Traceback" not in result.output
    assert "settings" not in captured


@pytest.mark.parametrize("namespace", ["Shop", "shop_eu", "-shop", "x" * 64, "../kube-system"])
def test_a_watched_namespace_is_a_namespace_name(captured: dict[str, Any],
                                                 namespace: str) -> None:
    """kopf would watch a namespace that cannot exist, and never say so."""
    result = CliRunner().invoke(run_cmd.command, ["--namespace", "shop", "--namespace",
                                                  namespace])
    assert result.exit_code == 2, result.output
    assert "must be a namespace name" in result.output and "Traceback" not in result.output
    assert "settings" not in captured


@pytest.mark.parametrize(("address", "busy", "message"), [
    ("127.0.0.1", True, "Address already in use"),
    ("not an address", False, "cannot serve on not an address:"),
    ("192.0.2.1", False, "Cannot assign requested address"),
])
def test_a_metrics_address_that_cannot_be_served_is_one_line(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], address: str,
        busy: bool, message: str) -> None:
    """make_server's OSError (port taken, address not this host's) was a traceback."""
    import socket

    from forescale.cli import main

    monkeypatch.setattr(run_cmd, "_configure_logging", lambda *a: None)
    monkeypatch.setattr(kube, "KubeClient", lambda **kw: object())
    monkeypatch.setattr(handlers, "run_operator", lambda *a, **kw: None)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1] if busy else 0
        code = main(["run", "--all-namespaces", "--metrics-address", address,
                     "--metrics-port", str(port)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("forescale: Invalid value for '--metrics-address'/'--metrics-port'")
    assert message in err and len(err.strip().splitlines()) == 1, err
