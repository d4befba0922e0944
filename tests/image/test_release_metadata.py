"""One source of truth for the version: pyproject.toml's ``[project] version``.

The chart's ``version`` and ``appVersion`` (the default image tag), the package's
``__version__`` and the image tag ``make image`` builds all equal it; ``make release``
refuses to package otherwise (scripts/image/release.sh). Needs no image: runs in ``make
test``.
"""

from __future__ import annotations

import subprocess

import yaml

import forescale
from tests.image.podman import REPO, pyproject_version

CHART = REPO / "charts" / "forescale" / "Chart.yaml"


def test_chart_version_and_app_version_are_pyprojects() -> None:
    chart = yaml.safe_load(CHART.read_text())
    version = pyproject_version()
    assert chart["version"] == version
    assert str(chart["appVersion"]) == version


def test_package_version_is_pyprojects() -> None:
    assert forescale.__version__ == pyproject_version()


def test_scripts_read_the_same_version() -> None:
    """The shell side (image tag, release file names) parses pyproject the same way."""
    script = f'source {REPO}/scripts/image/common.sh && echo "$VERSION $IMAGE"'
    out = subprocess.run(["env", "-u", "IMAGE", "-u", "IMAGE_REPOSITORY", "bash", "-c", script],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == [pyproject_version(), f"ghcr.io/forescale/forescale:{pyproject_version()}"]
