#!/usr/bin/env bash
# Print the image's size, its layers (size and the step that made each) and its torch build.
set -euo pipefail
source "$(dirname "$0")/common.sh"
podman image exists "$IMAGE" || die "no image $IMAGE: run 'make image'"
echo "image $IMAGE"
podman image inspect --format 'id {{.Id}}
size {{.Size}} bytes (uncompressed, all layers)
layers {{len .RootFS.Layers}}' "$IMAGE"
echo "torch $(podman run --rm --network none --entrypoint cat "$IMAGE" /opt/forescale/torch-build)"
echo "history (newest first; size, step):"
podman history --format '{{.Size}}\t{{.CreatedBy}}' "$IMAGE" | cut -c1-150
