"""The control plane's pins agree with each other (no binaries needed): versions.env names
the cache directory, each Go module's go.mod decides what is actually built."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support import controlplane

MODULES = Path(controlplane.BUILD_SCRIPT).parent


def _requires(module: str) -> dict[str, str]:
    text = (MODULES / module / "go.mod").read_text()
    return dict(re.findall(r"^require ([^\s]+) (v[^\s]+)$", text, flags=re.M))


def test_versions_env_matches_what_each_module_builds() -> None:
    v = controlplane.versions()
    assert _requires("kubernetes") == {"k8s.io/kubernetes": v["KUBERNETES_VERSION"]}
    assert _requires("etcd") == {"go.etcd.io/etcd/server/v3": v["ETCD_VERSION"]}
    assert _requires("helm") == {"helm.sh/helm/v4": v["HELM_VERSION"]}


def test_every_staging_module_is_replaced_by_the_same_release() -> None:
    """k8s.io/kubernetes v1.X.Y requires its staging modules at v0.0.0; each must be
    replaced by the published k8s.io/<name> v0.X.Y, or the build mixes releases."""
    kube = controlplane.versions()["KUBERNETES_VERSION"]
    staging = "v0." + kube.removeprefix("v1.")
    text = (MODULES / "kubernetes" / "go.mod").read_text()
    replaces = re.findall(r"^\t(k8s\.io/[^\s]+) => ([^\s]+) ([^\s]+)$", text, flags=re.M)
    assert len(replaces) > 20
    for name, target, version in replaces:
        assert (target, version) == (name, staging), (name, target, version)


def test_every_module_has_its_checksums() -> None:
    """The build runs with GOFLAGS=-mod=readonly and no checksum database: go.sum is the
    only record of what the proxy served, so it must be committed beside each go.mod."""
    for module in ("kubernetes", "etcd", "helm"):
        assert (MODULES / module / "go.sum").stat().st_size > 1000, module


def test_the_cache_is_keyed_by_version() -> None:
    v = controlplane.versions()
    cache = controlplane.cache_dir()
    try:
        found = controlplane.Binaries.locate()
    except FileNotFoundError as exc:
        assert "make controlplane" in str(exc)
        return
    assert found.kube_apiserver == cache / f"kubernetes-{v['KUBERNETES_VERSION']}" / \
        "kube-apiserver"
    assert found.etcd == cache / f"etcd-{v['ETCD_VERSION']}" / "etcd"
    assert found.helm == cache / f"helm-{v['HELM_VERSION']}" / "helm"
