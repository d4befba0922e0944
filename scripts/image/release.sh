#!/usr/bin/env bash
# `make release`: what a user installs, in dist/ (after `make image`):
#   forescale-<v>.tgz            the packaged chart (helm package), version = appVersion = <v>
#   index.yaml                   a chart repository index of dist/ (helm repo index)
#   forescale-<v>.oci.tar        the image as an OCI archive (podman load / skopeo copy)
#   forescale-<v>.sbom.spdx.json the image's SBOM (syft: Debian packages and Python wheels),
#   forescale-<v>.sbom.cdx.json  as SPDX and as CycloneDX
#   SHA256SUMS                   checksums of all of the above
# <v> is pyproject.toml's version; the chart must carry the same (checked here: exit 2).
set -euo pipefail
source "$(dirname "$0")/common.sh"
DIST="${DIST:-$REPO/dist}"
CHART_DIR="$REPO/charts/forescale"

chart_field() { sed -n "s/^$1: *\"\{0,1\}\([^\"]*\)\"\{0,1\} *$/\1/p" "$CHART_DIR/Chart.yaml"; }
for field in version appVersion; do
  value="$(chart_field "$field")"
  if [ "$value" != "$VERSION" ]; then
    echo "release: charts/forescale/Chart.yaml $field is '$value', pyproject.toml's version is '$VERSION': set both to one version" >&2
    exit 2
  fi
done
podman image exists "$IMAGE" || die "no image $IMAGE: run 'make image' first"

rm -rf "$DIST"
mkdir -p "$DIST"
chart="$DIST/forescale-$VERSION.tgz"

# The chart: a real helm binary when there is one (HELM, the control plane's build, PATH),
# else Helm's own Go SDK through PyPI's helm-python-sdk (in the venv), which packages the
# same way (`helm package`, `helm repo index`).
HELM="${HELM:-}"
if [ -z "$HELM" ] && [ -x "$REPO/scripts/controlplane/build.sh" ]; then
  for d in $(bash "$REPO/scripts/controlplane/build.sh" --print 2>/dev/null || true); do
    for candidate in "$d/helm" "$d/bin/helm"; do
      if [ -z "$HELM" ] && [ -x "$candidate" ]; then HELM="$candidate"; fi
    done
  done
fi
if [ -z "$HELM" ] && command -v helm >/dev/null 2>&1; then HELM="$(command -v helm)"; fi
if [ -n "$HELM" ]; then
  log "helm package with $HELM ($("$HELM" version --short 2>/dev/null || echo unknown))"
  "$HELM" package "$CHART_DIR" --destination "$DIST" --version "$VERSION" \
    --app-version "$VERSION" >&2
  "$HELM" repo index "$DIST" >&2
else
  PY="$REPO/.venv/bin/python"
  [ -x "$PY" ] || die "no helm binary and no .venv with helm-python-sdk: run 'make install'"
  log "helm package with Helm's Go SDK (helm-python-sdk $("$PY" -c 'import helm_python as h; print(h.helm_sdk_version())'))"
  "$PY" - "$CHART_DIR" "$DIST" "$VERSION" <<'PY'
import sys
import helm_python
chart_dir, dist, version = sys.argv[1:]
helm_python.package(chart_dir, destination=dist, version=version, app_version=version)
helm_python.repo_index_generate(dist)
PY
fi
[ -f "$chart" ] || die "helm package did not write $chart"

# The image: layers gzip-compressed (as a registry would serve them), tagged with its name.
archive="$DIST/forescale-$VERSION.oci.tar"
log "OCI archive of $IMAGE"
nice -n 10 skopeo copy --quiet --dest-compress --dest-compress-format gzip \
  "containers-storage:$IMAGE" "oci-archive:$archive:$IMAGE" >&2

# The SBOM of exactly that archive.
SYFT="$(bash "$IMAGE_SCRIPTS/install-syft.sh")"
log "SBOM with $("$SYFT" version 2>/dev/null | sed -n 's/^Version: *//p' | sed 's/^/syft /')"
sbom="$DIST/forescale-$VERSION.sbom"
# syft refuses an archive entry over 2 GB by default (a guard against decompression bombs);
# the torch layer is larger, so the limit is raised for this, our own, archive.
SYFT_CHECK_FOR_APP_UPDATE=false SYFT_SOURCE_IMAGE_MAX_LAYER_SIZE=16GB \
  nice -n 10 "$SYFT" scan "oci-archive:$archive" \
  --source-name "$IMAGE_REPOSITORY" --source-version "$VERSION" \
  -o "spdx-json=$sbom.spdx.json" -o "cyclonedx-json=$sbom.cdx.json"

(cd "$DIST" && sha256sum -- *.tgz index.yaml *.oci.tar *.json > SHA256SUMS && sha256sum --quiet -c SHA256SUMS)
log "dist/:"
(cd "$DIST" && ls -l) >&2
