#!/usr/bin/env bash
# Download the image's Python dependencies (the runtime dependencies of pyproject.toml, at
# the versions constraints.txt pins, plus the build backend) into a wheelhouse that the
# image build mounts read-only and installs from with --no-index.
#
# Why: the Dockerfile's CPU-only torch index (download.pytorch.org) is not reachable on
# these machines; PyPI's torch==2.13.0 for Linux is the CUDA build (with nvidia-* wheels,
# several GB). Downloading it once into $WHEELHOUSE (kept in ~/.cache/forescale) means
# every later build on this machine reuses it instead of fetching gigabytes again;
# `pip download` skips files that are already there.
set -euo pipefail
source "$(dirname "$0")/common.sh"

PYTHON="${PYTHON:-python3}"
if [ -x "$REPO/.venv/bin/python" ]; then PYTHON="$REPO/.venv/bin/python"; fi

mkdir -p "$WHEELHOUSE"
reqs="$(mktemp)"
trap 'rm -f "$reqs"' EXIT
# The runtime dependencies only (not [test]): what `pip install .` in the image needs.
"$PYTHON" - "$REPO/pyproject.toml" >"$reqs" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    project = tomllib.load(f)
build = project["build-system"]["requires"]
print("\n".join([*project["project"]["dependencies"], *build]))
PY
log "wheelhouse $WHEELHOUSE: $(wc -l <"$reqs") requirements through constraints.txt"
# --only-binary: the image installs with --no-index, so every dependency must be a wheel
# that needs no compiler in the image.
nice -n 10 "$PYTHON" -m pip download --quiet --only-binary=:all: \
  -c "$REPO/constraints.txt" -r "$reqs" -d "$WHEELHOUSE"
ls "$WHEELHOUSE"/torch-*.whl >/dev/null 2>&1 || die "no torch wheel in $WHEELHOUSE"
log "wheelhouse ready: $(find "$WHEELHOUSE" -name '*.whl' | wc -l) wheels, $(du -sh "$WHEELHOUSE" | cut -f1)"
