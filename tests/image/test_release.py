"""What ``make release`` put in dist/ is what a user installs: checked after it runs
(``make release`` runs this with ``FORESCALE_RELEASE_TESTS=1``; not collected otherwise).

* the packaged chart loads, carries the one version (chart and appVersion) and renders the
  image tag the archive holds; index.yaml lists it with its digest;
* the OCI archive holds the image under its release name, and the archive's config is the
  very image ``make image`` built (same config digest as the local storage);
* the SBOMs describe that image: its name and version, torch at the pinned version, the
  operator itself and Debian's python3.11;
* SHA256SUMS covers every file and matches.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.image.podman import REPO, image_ref, inspect, pyproject_version

DIST = Path(os.environ.get("DIST", REPO / "dist"))
VERSION = pyproject_version()


@pytest.fixture(scope="module")
def dist() -> Path:
    if not (DIST / "SHA256SUMS").is_file():
        pytest.fail(f"no release in {DIST}: run 'make release'")
    return DIST


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def test_checksums_cover_every_file_and_match(dist: Path) -> None:
    sums = {}
    for line in (dist / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        sums[name.lstrip("*")] = digest
    files = sorted(p.name for p in dist.iterdir() if p.name != "SHA256SUMS")
    assert sorted(sums) == files
    for name, digest in sums.items():
        assert _sha256(dist / name) == digest, name


def test_the_packaged_chart_carries_the_version_and_the_image(dist: Path) -> None:
    import helm_python

    archive = dist / f"forescale-{VERSION}.tgz"
    with tarfile.open(archive) as tar:
        chart_yaml = yaml.safe_load(tar.extractfile("forescale/Chart.yaml").read())  # type: ignore[union-attr]
        names = tar.getnames()
    assert (chart_yaml["version"], str(chart_yaml["appVersion"])) == (VERSION, VERSION)
    assert "forescale/values.schema.json" in names
    assert "forescale/templates/deployment.yaml" in names
    chart = helm_python.Chart.load_archive(archive.read_bytes())
    try:
        rendered = chart.render({}, name="forescale", namespace="forescale")
    finally:
        chart.close()
    deployment = next(yaml.safe_load(text) for path, text in rendered.items()
                      if path.endswith("deployment.yaml"))
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == image_ref() == f"ghcr.io/forescale/forescale:{VERSION}"

    index = yaml.safe_load((dist / "index.yaml").read_text())
    [entry] = index["entries"]["forescale"]
    assert entry["version"] == VERSION and entry["appVersion"] == VERSION
    assert entry["digest"] == _sha256(archive)


def _oci(dist: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(index.json, the manifest, the image config) of the OCI archive."""
    with tarfile.open(dist / f"forescale-{VERSION}.oci.tar") as tar:
        def blob(digest: str) -> dict[str, Any]:
            member = tar.extractfile("blobs/" + digest.replace(":", "/"))
            assert member is not None
            return dict(json.loads(member.read()))
        index_file = tar.extractfile("index.json")
        assert index_file is not None
        index = dict(json.loads(index_file.read()))
        [descriptor] = index["manifests"]
        manifest = blob(descriptor["digest"])
        return index, manifest, blob(manifest["config"]["digest"])


def test_the_oci_archive_is_the_built_image(dist: Path) -> None:
    index, manifest, config = _oci(dist)
    [descriptor] = index["manifests"]
    assert descriptor["annotations"]["org.opencontainers.image.ref.name"] == image_ref()
    local = inspect(image_ref())
    # The same image: the uncompressed layers (diff IDs) and the config match the local one.
    assert config["rootfs"]["diff_ids"] == local["RootFS"]["Layers"]
    assert config["config"]["User"] == "65532:65532"
    assert config["config"]["Entrypoint"] == ["forescale", "run"]
    assert all(layer["mediaType"].endswith("tar+gzip") for layer in manifest["layers"])


def test_the_sboms_describe_the_image(dist: Path) -> None:
    cdx = json.loads((dist / f"forescale-{VERSION}.sbom.cdx.json").read_text())
    subject = cdx["metadata"]["component"]
    assert (subject["name"], subject["version"]) == ("ghcr.io/forescale/forescale", VERSION)
    # Versions without their local label: the CPU index's torch is 2.13.0+cpu.
    components = {(c.get("name"), (c.get("version") or "").split("+")[0])
                  for c in cdx["components"]}
    purls = {c.get("purl", "").split("@")[0] for c in cdx["components"]}
    torch_pin = next(line.split("==")[1] for line in
                     (REPO / "constraints.txt").read_text().splitlines()
                     if line.startswith("torch=="))
    assert ("torch", torch_pin) in components
    assert ("forescale", VERSION) in components
    assert "pkg:deb/debian/python3.11" in purls
    spdx = json.loads((dist / f"forescale-{VERSION}.sbom.spdx.json").read_text())
    assert spdx["spdxVersion"].startswith("SPDX-2.")
    spdx_packages = {(p["name"], (p.get("versionInfo") or "").split("+")[0])
                     for p in spdx["packages"]}
    assert ("torch", torch_pin) in spdx_packages
