#!/usr/bin/env bash
# Install what builds and runs the image without a Docker engine: mmdebstrap (the base),
# buildah (the build), podman with runc (the run tier), skopeo (the OCI archive).
# Idempotent: does nothing when every tool is on PATH; needs root otherwise.
set -euo pipefail
source "$(dirname "$0")/common.sh"

missing=()
for tool in mmdebstrap buildah podman runc skopeo; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  die "missing ${missing[*]}; installing needs root: apt-get install ${missing[*]}"
fi
export DEBIAN_FRONTEND=noninteractive
# `apt-get update` only when the package lists do not know the packages yet.
if ! apt-cache show mmdebstrap buildah podman runc skopeo >/dev/null 2>&1; then
  apt-get update -q
fi
log "installing ${missing[*]} (apt-get)"
apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
for tool in "${missing[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || die "installed, but $tool is not on PATH"
done
