#!/usr/bin/env bash
# The base image (the Dockerfile's PYTHON_IMAGE), built here from Debian's packages since no
# registry of images is reachable: mmdebstrap of Debian bookworm with its Python 3.11,
# imported into the local container storage as $BASE_IMAGE. Skipped when it exists
# (FORCE=1 rebuilds).
set -euo pipefail
source "$(dirname "$0")/common.sh"
bash "$IMAGE_SCRIPTS/install-tools.sh"

if [ "${FORCE:-0}" != 1 ] && podman image exists "$BASE_IMAGE"; then
  log "base $BASE_IMAGE exists"
  exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
log "mmdebstrap bookworm from $MIRROR"
# --variant=apt: essential packages plus apt; python3-venv gives the image `python3 -m
# venv` (with pip); ca-certificates lets the operator verify HTTPS Prometheus and API
# servers. Documentation, man pages and apt lists are dropped: nothing reads them.
nice -n 10 mmdebstrap --quiet --variant=apt \
  --include=python3,python3-venv,ca-certificates \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
  bookworm "$work/base.tar" "$MIRROR"
podman import --quiet \
  --change 'CMD ["/usr/bin/python3"]' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  "$work/base.tar" "$BASE_IMAGE" >/dev/null
log "base $BASE_IMAGE: $(podman run --rm "$BASE_IMAGE" python3 --version 2>&1)"
