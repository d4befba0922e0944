#!/usr/bin/env bash
# `make image`: build operator/Dockerfile with buildah (no Docker engine) from the local
# Debian base, tagged $IMAGE (ghcr.io/forescale/forescale:<version>) in the local storage
# that podman reads too.
#
# TORCH_SOURCE selects where torch and the other wheels come from:
#   wheelhouse (default here): $WHEELHOUSE, filled once by wheelhouse.sh from PyPI, which
#       serves the CUDA build of torch for Linux (the CPU index is unreachable here);
#   cpu-index: PyPI plus the CPU-only torch index, as the published image is built.
# TORCH_BUILD (cpu or cuda) is what the image must hold; with the wheelhouse it follows the
# torch wheel's name (a "+cpu" local version is the CPU build).
set -euo pipefail
source "$(dirname "$0")/common.sh"
bash "$IMAGE_SCRIPTS/base.sh"

TORCH_SOURCE="${TORCH_SOURCE:-wheelhouse}"
args=(--build-arg "PYTHON_IMAGE=$BASE_IMAGE" --build-arg "VERSION=$VERSION")
case "$TORCH_SOURCE" in
  wheelhouse)
    bash "$IMAGE_SCRIPTS/wheelhouse.sh"
    torch_wheel="$(basename "$(ls "$WHEELHOUSE"/torch-*.whl | head -n1)")"
    case "$torch_wheel" in *+cpu-*) build=cpu ;; *) build=cuda ;; esac
    args+=(--volume "$WHEELHOUSE:/wheelhouse:ro" --build-arg WHEELHOUSE=/wheelhouse
           --build-arg "TORCH_BUILD=${TORCH_BUILD:-$build}")
    ;;
  cpu-index)
    args+=(--build-arg TORCH_BUILD=cpu)
    ;;
  *) echo "image: TORCH_SOURCE must be wheelhouse or cpu-index, not '$TORCH_SOURCE'" >&2; exit 2 ;;
esac

log "building $IMAGE from $BASE_IMAGE (torch from $TORCH_SOURCE)"
# --layers: each step is cached, so an unchanged tree rebuilds in seconds and a code change
# rebuilds only the layers after the dependencies.
nice -n 10 buildah bud --isolation chroot --layers --quiet \
  -f "$REPO/operator/Dockerfile" "${args[@]}" -t "$IMAGE" "$REPO" >/dev/null
# Earlier builds' images (untagged now) hold a multi-GB dependency layer each: drop them, so
# the storage holds one image (~6 GB) however often the pins change. The tagged image, its
# cached steps and the base stay, and so does every other project's image: only dangling
# images carrying the Dockerfile's title label (set before the dependency layer) go.
podman image prune --force --filter label=org.opencontainers.image.title=forescale >/dev/null
bash "$IMAGE_SCRIPTS/describe.sh"
