# Sourced by the scripts in scripts/image/: names, paths and the podman/buildah settings
# shared by `make image`, `make image-test` and `make release`.
# shellcheck shell=bash
IMAGE_SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$IMAGE_SCRIPTS/../.." && pwd)"
# One source of truth for the version: pyproject.toml's [project] version. The chart's
# version and appVersion must equal it (tests/image/test_release_metadata.py checks).
VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$REPO/pyproject.toml" | head -n1)"
IMAGE_REPOSITORY="${IMAGE_REPOSITORY:-ghcr.io/forescale/forescale}"
IMAGE="${IMAGE:-$IMAGE_REPOSITORY:$VERSION}"
# The locally built Debian base (mmdebstrap), the PYTHON_IMAGE build argument.
BASE_IMAGE="${BASE_IMAGE:-localhost/forescale-python:3.11-bookworm}"
CACHE="${FORESCALE_CACHE:-$HOME/.cache/forescale}"
WHEELHOUSE="${WHEELHOUSE:-$CACHE/wheelhouse}"
# podman's default ulimits and crun fail in this sandbox (see containers.conf).
export CONTAINERS_CONF="${CONTAINERS_CONF:-$IMAGE_SCRIPTS/containers.conf}"
export BUILDAH_ISOLATION="${BUILDAH_ISOLATION:-chroot}"

log() { echo "image: $*" >&2; }
die() { echo "image: $*" >&2; exit 1; }
