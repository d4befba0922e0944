#!/usr/bin/env bash
# Run the operator's integration scenarios in real-cluster mode against a standalone API
# emulator process treated as an opaque cluster: the tests get nothing but a kubeconfig
# (FORESCALE_TEST_KUBECONFIG), exactly as with kind or k3d. This keeps the real-cluster
# path of tests/integration/conftest.py working without a cluster.
#
#   scripts/real-cluster-mode.sh [pytest args...]   (default: the operator scenarios)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
workdir=$(mktemp -d)
kubeconfig="$workdir/kubeconfig"
log="$workdir/emulator.log"

"$PYTHON" -m tests.support.kubeapi --host 127.0.0.1 --port 0 \
    --kubeconfig "$kubeconfig" --identity cluster-admin >"$log" 2>&1 &
emulator=$!
cleanup() {
    kill "$emulator" 2>/dev/null || true
    wait "$emulator" 2>/dev/null || true
    rm -rf "$workdir"
}
trap cleanup EXIT

for _ in $(seq 100); do
    [[ -s "$kubeconfig" ]] && break
    kill -0 "$emulator" 2>/dev/null || { cat "$log"; exit 1; }
    sleep 0.1
done
[[ -s "$kubeconfig" ]] || { echo "the emulator did not start" >&2; cat "$log"; exit 1; }
echo "opaque cluster: $(head -n 1 "$log")"

if [[ $# -eq 0 ]]; then
    set -- -m integration tests/integration -k operator -p no:randomly -ra
fi
FORESCALE_TEST_KUBECONFIG="$kubeconfig" "$PYTHON" -m pytest "$@"
