"""A real Kubernetes control plane for the tests: etcd, kube-apiserver and
kube-controller-manager, built from source by ``scripts/controlplane/build.sh`` and started
here on 127.0.0.1 only.

What it is, and why each piece:

* etcd, one member, loopback ports, ``--unsafe-no-fsync`` (a test's data is thrown away);
* kube-apiserver with ``--authorization-mode=RBAC``, a CA generated per session (openssl),
  TLS on loopback, ServiceAccount token signing (so the TokenRequest API issues real
  tokens for the chart's ServiceAccount), a static token file for the test identities
  (``admin`` in ``system:masters``; ``operator-*`` in the group ``forescale:operators``),
  and an audit log (``--audit-policy-file``/``--audit-log-path``) that records, at the
  RequestResponse level, every write of a ``/scale`` subresource and of a Lease: who
  wrote which replicas, and which resourceVersion that produced;
* kube-controller-manager running only the controllers whose behaviour the scenarios
  meet: Deployments and ReplicaSets (a scaled Deployment's ReplicaSet follows, and its
  Pods are created, Pending: there is no scheduler or kubelet), the garbage collector,
  ServiceAccounts (the ``default`` one the Pods need) and Namespaces (deleting a test's
  namespace actually finalizes it).

One control plane serves a whole test session; each test gets its own namespace.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "controlplane" / "build.sh"
VERSIONS_FILE = REPO / "scripts" / "controlplane" / "versions.env"
#: The group the operator identities belong to; the tests bind the chart's ClusterRole to it.
OPERATORS_GROUP = "forescale:operators"
#: Static identities: a token file cannot change while the apiserver runs.
OPERATOR_IDENTITIES = tuple(f"operator-{c}" for c in "abcdef")
ADMIN = "admin"
CONTROLLER_MANAGER = "system:kube-controller-manager"
#: The controllers the scenarios depend on (kube-controller-manager --controllers).
CONTROLLERS = ("deployment-controller", "replicaset-controller",
               "garbage-collector-controller", "serviceaccount-controller",
               "namespace-controller",
               # aggregates the chart's edit/view roles into the built-in ones (issue 11)
               "clusterrole-aggregation-controller")

AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
# Who wrote which replicas, and the resourceVersion the write produced.
- level: RequestResponse
  verbs: [create, update, patch, delete]
  resources:
  - group: apps
    resources: [deployments/scale, statefulsets/scale, replicasets/scale]
  - group: coordination.k8s.io
    resources: [leases]
- level: None
  nonResourceURLs: ["/healthz*", "/readyz*", "/livez*", "/version", "/openapi*"]
- level: None
  verbs: [get, list, watch]
# Every other write: who, what, and the answer's status.
- level: Metadata
"""


def versions() -> dict[str, str]:
    """The pinned versions (``scripts/controlplane/versions.env``)."""
    out = {}
    for raw in VERSIONS_FILE.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            out[key] = value
    return out


def cache_dir() -> Path:
    configured = os.environ.get("FORESCALE_CONTROLPLANE_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "forescale" / "controlplane"


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kubectl: Path
    helm: Path

    @classmethod
    def locate(cls) -> Binaries:
        """The cached binaries; ``FileNotFoundError`` says how to build missing ones."""
        v = versions()
        cache = cache_dir()
        kube = cache / f"kubernetes-{v['KUBERNETES_VERSION']}"
        found = cls(etcd=cache / f"etcd-{v['ETCD_VERSION']}" / "etcd",
                    kube_apiserver=kube / "kube-apiserver",
                    kube_controller_manager=kube / "kube-controller-manager",
                    kubectl=kube / "kubectl",
                    helm=cache / f"helm-{v['HELM_VERSION']}" / "helm")
        missing = [str(p) for p in vars(found).values() if not os.access(p, os.X_OK)]
        if missing:
            raise FileNotFoundError(f"control-plane binaries missing ({', '.join(missing)}): "
                                    f"build them with `make controlplane` "
                                    f"(scripts/controlplane/build.sh)")
        return found


def require_binaries() -> Binaries:
    """The binaries, or skip the caller with the command that builds them; under
    ``make test`` (FORESCALE_REQUIRE_CONTROLPLANE=1) a missing binary fails instead."""
    import pytest

    try:
        return Binaries.locate()
    except FileNotFoundError as exc:
        if os.environ.get("FORESCALE_REQUIRE_CONTROLPLANE"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def generate_pki(directory: Path) -> None:
    """A CA, the apiserver's serving certificate (loopback and the in-cluster names) and
    the ServiceAccount signing key pair. Valid two days: a session's lifetime."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
             "-out", "ca.crt", "-days", "2", "-subj", "/CN=forescale-test-ca", cwd=directory)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "apiserver.key",
             "-out", "apiserver.csr", "-subj", "/CN=kube-apiserver", cwd=directory)
    (directory / "san.ext").write_text(
        "subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,"
        "DNS:kubernetes.default,DNS:kubernetes.default.svc\n"
        "extendedKeyUsage=serverAuth\n")
    _openssl("x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "apiserver.crt", "-days", "2",
             "-extfile", "san.ext", cwd=directory)
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=directory)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=directory)


def write_kubeconfig(path: Path, *, server: str, ca_path: Path, user: str, token: str,
                     namespace: str = "default") -> Path:
    """A kubeconfig with the CA and a bearer token (JSON is YAML: no YAML dependency)."""
    doc = {"apiVersion": "v1", "kind": "Config", "preferences": {},
           "clusters": [{"name": "forescale-test",
                         "cluster": {"server": server, "certificate-authority": str(ca_path)}}],
           "users": [{"name": user, "user": {"token": token}}],
           "contexts": [{"name": user, "context": {"cluster": "forescale-test", "user": user,
                                                   "namespace": namespace}}],
           "current-context": user}
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(doc, indent=1) + "\n")
    partial.replace(path)
    return path


@dataclass(frozen=True)
class AuditEvent:
    """One line of the apiserver's audit log (stage ResponseComplete)."""

    raw: dict[str, Any]

    @property
    def username(self) -> str:
        return str((self.raw.get("user") or {}).get("username"))

    @property
    def verb(self) -> str:
        return str(self.raw.get("verb"))

    @property
    def code(self) -> int:
        return int((self.raw.get("responseStatus") or {}).get("code") or 0)

    def ref(self, key: str) -> str | None:
        value = (self.raw.get("objectRef") or {}).get(key)
        return None if value is None else str(value)

    @property
    def request_object(self) -> dict[str, Any]:
        return dict(self.raw.get("requestObject") or {})

    @property
    def response_object(self) -> dict[str, Any]:
        return dict(self.raw.get("responseObject") or {})

    @property
    def received(self) -> float:
        """When the apiserver received the request (wall time, seconds)."""
        stamp = str(self.raw["requestReceivedTimestamp"]).replace("Z", "+00:00")
        return datetime.fromisoformat(stamp).timestamp()


@dataclass
class ControlPlane:
    """A running etcd + kube-apiserver + kube-controller-manager (see the module doc)."""

    binaries: Binaries
    workdir: Path
    server: str = ""
    tokens: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def ca_path(self) -> Path:
        return self.workdir / "pki" / "ca.crt"

    @property
    def audit_log(self) -> Path:
        return self.workdir / "audit.log"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.kubeconfig_for(ADMIN)

    def kubeconfig_for(self, identity: str, *, namespace: str = "default") -> Path:
        """A kubeconfig that authenticates as one of the static identities."""
        path = self.workdir / "kubeconfigs" / f"{identity.replace(':', '_')}-{namespace}.json"
        if not path.exists():
            path.parent.mkdir(exist_ok=True)
            write_kubeconfig(path, server=self.server, ca_path=self.ca_path, user=identity,
                             token=self.tokens[identity], namespace=namespace)
        return path

    def kubeconfig_for_token(self, path: Path, *, user: str, token: str,
                             namespace: str = "default") -> Path:
        return write_kubeconfig(path, server=self.server, ca_path=self.ca_path, user=user,
                                token=token, namespace=namespace)

    def log(self, component: str) -> str:
        return (self.workdir / f"{component}.log").read_text(errors="replace")[-4000:]

    # -- start and stop --------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with (self.workdir / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, cwd=self.workdir)
        self.processes[name] = process
        return process

    def _wait(self, name: str, ready: Any, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            process = self.processes[name]
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited {process.returncode}:\n{self.log(name)}")
            with contextlib.suppress(Exception):
                if ready():
                    return
            time.sleep(0.2)
        raise TimeoutError(f"{name} not ready after {timeout:g} s:\n{self.log(name)}")

    def _get(self, path: str, *, token: str | None = None, tls: bool = True,
             base: str | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request((base or self.server) + path)
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        context = ssl.create_default_context(cafile=str(self.ca_path)) if tls else None
        try:
            with urllib.request.urlopen(request, timeout=5, context=context) as response:
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as exc:
            return int(exc.code), bytes(exc.read())

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        generate_pki(self.workdir / "pki")
        pki = self.workdir / "pki"
        self.tokens = {ident: secrets.token_hex(16)
                       for ident in (ADMIN, CONTROLLER_MANAGER, *OPERATOR_IDENTITIES)}
        groups = {ADMIN: "system:masters", CONTROLLER_MANAGER: "system:masters",
                  **{ident: OPERATORS_GROUP for ident in OPERATOR_IDENTITIES}}
        (self.workdir / "tokens.csv").write_text("".join(
            f'{token},{ident},{ident},"{groups[ident]}"\n'
            for ident, token in self.tokens.items()))
        (self.workdir / "audit-policy.yaml").write_text(AUDIT_POLICY)

        etcd_client, etcd_peer = free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{etcd_client}"
        self._spawn("etcd", [
            str(self.binaries.etcd), "--name", "test", "--data-dir", str(self.workdir / "etcd"),
            "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
            "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-cluster", f"test=http://127.0.0.1:{etcd_peer}",
            "--unsafe-no-fsync", "--log-level", "warn"])
        self._wait("etcd", lambda: self._get("/health", tls=False, base=etcd_url)[0] == 200,
                   timeout=30)

        port = free_port()
        self.server = f"https://127.0.0.1:{port}"
        self._spawn("kube-apiserver", [
            str(self.binaries.kube_apiserver),
            "--etcd-servers", etcd_url,
            "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
            "--secure-port", str(port), "--cert-dir", str(pki),
            "--tls-cert-file", str(pki / "apiserver.crt"),
            "--tls-private-key-file", str(pki / "apiserver.key"),
            "--client-ca-file", str(pki / "ca.crt"),
            "--token-auth-file", str(self.workdir / "tokens.csv"),
            "--authorization-mode", "RBAC",
            "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
            "--service-account-key-file", str(pki / "sa.pub"),
            "--service-account-signing-key-file", str(pki / "sa.key"),
            "--service-cluster-ip-range", "10.0.0.0/24",
            # The endpoint reconciler refuses a loopback advertise address, and nothing in
            # the tests reaches the apiserver through the kubernetes Service.
            "--endpoint-reconciler-type", "none",
            "--audit-policy-file", str(self.workdir / "audit-policy.yaml"),
            "--audit-log-path", str(self.audit_log),
            "--audit-log-mode", "blocking",
            "--profiling=false", "--v", "1"])
        admin = self.tokens[ADMIN]
        self._wait("kube-apiserver", lambda: self._get("/readyz", token=admin)[0] == 200,
                   timeout=120)

        kcm_kubeconfig = self.kubeconfig_for(CONTROLLER_MANAGER)
        self._spawn("kube-controller-manager", [
            str(self.binaries.kube_controller_manager),
            "--kubeconfig", str(kcm_kubeconfig),
            "--controllers", ",".join(CONTROLLERS),
            "--leader-elect=false", "--use-service-account-credentials=false",
            "--secure-port", "0", "--concurrent-deployment-syncs", "2",
            "--concurrent-replicaset-syncs", "2", "--v", "1"])
        # Ready once it has acted: the ServiceAccount controller fills kube-system.
        self._wait("kube-controller-manager", lambda: self._get(
            "/api/v1/namespaces/default/serviceaccounts/default", token=admin)[0] == 200,
            timeout=120)

    def stop(self) -> None:
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            process = self.processes.get(name)
            if process is None or process.poll() is not None:
                continue
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)

    # -- evidence --------------------------------------------------------------------------

    def audit(self) -> list[AuditEvent]:
        """Every audit event so far (ResponseComplete), oldest first."""
        out = []
        with contextlib.suppress(FileNotFoundError), self.audit_log.open() as log:
            for line in log:
                if line.endswith("\n"):
                    with contextlib.suppress(ValueError):
                        out.append(AuditEvent(json.loads(line)))
        return out

    def scale_writes(self, *, namespace: str | None = None) -> list[AuditEvent]:
        """Every write request to a ``/scale`` subresource, whatever its answer."""
        return [e for e in self.audit()
                if e.ref("subresource") == "scale" and e.verb in ("patch", "update")
                and (namespace is None or e.ref("namespace") == namespace)]

    # -- the clients -----------------------------------------------------------------------

    def kubectl(self, *args: str, identity: str = ADMIN, input_text: str | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl (from the cache) against this control plane."""
        return subprocess.run(
            [str(self.binaries.kubectl), "--kubeconfig", str(self.kubeconfig_for(identity)),
             *args], input=input_text, capture_output=True, text=True, check=check,
            timeout=120, env={**os.environ, "KUBECONFIG": ""})

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the real helm (from the cache) as the admin, with its state in the workdir."""
        home = self.workdir / "helm"
        env = {**os.environ, "HELM_CACHE_HOME": str(home / "cache"),
               "HELM_CONFIG_HOME": str(home / "config"), "HELM_DATA_HOME": str(home / "data"),
               "KUBECONFIG": str(self.admin_kubeconfig)}
        return subprocess.run([str(self.binaries.helm), *args], capture_output=True,
                              text=True, check=check, timeout=300, env=env)


@contextlib.contextmanager
def running_control_plane(binaries: Binaries | None = None) -> Iterator[ControlPlane]:
    """Start a control plane in a temporary directory; stop it and remove the directory."""
    workdir = Path(tempfile.mkdtemp(prefix="forescale-controlplane-"))
    plane = ControlPlane(binaries or Binaries.locate(), workdir)
    try:
        plane.start()
        yield plane
    finally:
        plane.stop()
        if not os.environ.get("FORESCALE_KEEP_CONTROLPLANE"):
            shutil.rmtree(workdir, ignore_errors=True)
