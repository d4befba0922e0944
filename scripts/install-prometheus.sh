#!/usr/bin/env bash
# Install Prometheus and promtool (Debian package `prometheus`) for the integration tests.
#
# Idempotent: does nothing when both binaries are already on PATH. The tests start their own
# Prometheus on 127.0.0.1 with a temporary data directory, so the package's own service must
# never start (it would listen on 0.0.0.0:9090): while installing, a policy-rc.d that exits
# 101 ("action forbidden") tells invoke-rc.d to skip it. We only create and remove our own
# policy-rc.d; one that already exists (Docker images ship one) is left untouched.
set -euo pipefail

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  echo "install-prometheus: $(prometheus --version 2>&1 | head -n1) already installed"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-prometheus: prometheus/promtool are not on PATH and installing them needs" \
       "root; run 'sudo $0' or 'apt-get install prometheus' yourself" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
POLICY=/usr/sbin/policy-rc.d
created_policy=0
cleanup() {
  if [ "$created_policy" -eq 1 ]; then
    rm -f "$POLICY"
  fi
}
trap cleanup EXIT
# bash runs the EXIT trap on INT/TERM only if they end the script through `exit`.
trap 'exit 130' INT TERM

if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\n# Temporary, from forescale scripts/install-prometheus.sh\nexit 101\n' >"$POLICY"
  chmod 0755 "$POLICY"
  created_policy=1
fi

# `apt-get update` is slow and needs the network: only when the cache does not know the package.
if ! apt-cache show prometheus >/dev/null 2>&1; then
  apt-get update
fi
apt-get install -y --no-install-recommends prometheus

for bin in prometheus promtool; do
  if ! command -v "$bin" >/dev/null 2>&1; then
    echo "install-prometheus: package installed but '$bin' is not on PATH" >&2
    exit 1
  fi
done
echo "install-prometheus: installed $(prometheus --version 2>&1 | head -n1)"
