#!/usr/bin/env bash
# Builds the local control plane's binaries (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, kwok, helm) from the Go module proxy, through the wrapper modules in
# e2e/cluster/gomod/. Each group is cached in $MODELFLEET_CACHE/bin/<group>-<key>/, where the key
# hashes the wrapper's go.mod/go.sum, the Go version and the build flags; a group is rebuilt only
# when its key directory is missing. A cold build takes 20-40 minutes on 2 cores; warm, seconds.
# Prints the directory holding all binaries (a stable symlink, $MODELFLEET_CACHE/bin/current) last.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache=${MODELFLEET_CACHE:-$HOME/.cache/modelfleet}
mkdir -p "$cache/bin"

export GOWORK=off CGO_ENABLED=0 GOFLAGS="-trimpath -modcacherw" GOTOOLCHAIN=${GOTOOLCHAIN:-local}
jobs=${GO_BUILD_JOBS:-2}
gover=$(go env GOVERSION)

log() { printf '[build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Fixed buildDate so that links stay cached between builds.
build_date=1970-01-01T00:00:00Z
k8s_minor=$(echo "$K8S_VERSION" | cut -d. -f2)
k8s_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
  k8s_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done
# kwok records the Kubernetes version it was built against (used only for kwokctl downloads).
kwok_ldflags="-X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=$K8S_VERSION"
# Helm assumes Kubernetes 1.20 in `template`/`lint` unless told the version it was built for.
helm_ldflags="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  helm_ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
done
etcd_ldflags=""

# build GROUP LDFLAGS: builds every `tool` of gomod/GROUP into its key directory.
build() {
  local group=$1 ldflags=$2 mod="$here/gomod/$1"
  local key
  key=$(cat "$mod/go.mod" "$mod/go.sum" <(echo "$gover $GOFLAGS $CGO_ENABLED $ldflags") | sha256sum | cut -c1-12)
  local out="$cache/bin/$group-$key"
  ln -sfn "$group-$key" "$cache/bin/$group.tmp" && mv -T "$cache/bin/$group.tmp" "$cache/bin/$group"
  if [[ -f "$out/.complete" ]]; then
    log "$group: cached in $out"
    return
  fi
  local tools
  tools=$(cd "$mod" && go list tool | tr "\n" " ")
  log "$group: downloading modules"
  (cd "$mod" && go mod download)
  log "$group: building $tools (cold: many minutes; -p $jobs)"
  local t0=$SECONDS
  rm -rf "$out.partial" && mkdir -p "$out.partial"
  # shellcheck disable=SC2086
  (cd "$mod" && go build -p "$jobs" -ldflags "-s -w $ldflags" -o "$out.partial/" $tools)
  # etcd's main package is the module root (.../server/v3), which go names "server".
  if [[ -f $out.partial/server ]]; then mv "$out.partial/server" "$out.partial/etcd"; fi
  touch "$out.partial/.complete"
  rm -rf "$out" && mv "$out.partial" "$out"
  log "$group: built in $((SECONDS - t0))s -> $out"
}

# Progress while a long build runs: a line every minute with the size of GOCACHE. The ticker
# kills its own sleep on TERM so that no process keeps this script's output open after it exits.
ticker() {
  trap 'kill "$s" 2>/dev/null; exit 0' TERM
  while :; do
    sleep 60 & s=$!
    wait "$s"
    log "still building... GOCACHE $(du -sh "$(go env GOCACHE)" 2>/dev/null | cut -f1)"
  done
}
ticker >&2 &
ticker_pid=$!
trap 'kill "$ticker_pid" 2>/dev/null || true' EXIT

t_all=$SECONDS
build kwok "$kwok_ldflags"
build etcd "$etcd_ldflags"
build helm "$helm_ldflags"
build k8s "$k8s_ldflags"

# One directory with every binary, for PATH.
cur="$cache/bin/current"
rm -rf "$cur" && mkdir -p "$cur"
for group in kwok etcd helm k8s; do
  for f in "$cache/bin/$group"/*; do ln -sfn "$f" "$cur/$(basename "$f")"; done
done
log "all binaries ready in ${cur} ($((SECONDS - t_all))s)"
echo "$cur"
