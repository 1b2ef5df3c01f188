#!/usr/bin/env bash
# Stops the local control plane started by up.sh (`make cluster-down`): sends SIGTERM to each
# component's process group (pod runner first, so it can stop the local pod processes), waits up to
# 10 s, then SIGKILLs what is left, and removes the etcd data so the next cluster-up starts empty.
# PKI and logs are kept in $MODELFLEET_CACHE/cluster/. Set KEEP_DATA=1 to keep the etcd data.
set -euo pipefail

cache=${MODELFLEET_CACHE:-$HOME/.cache/modelfleet}
run=$cache/cluster
pids=$run/pids

log() { printf '[cluster-down %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Each component was started with setsid, so its pid is also its process group id; killing the
# group also ends the pod runner's children.
stop() {
  local name=$1 f=$pids/$1.pid pid
  [[ -f $f ]] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    log "$name: stopping (pid $pid)"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name: still alive after 10s, killing"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  # The group may hold children that outlived the leader (e.g. local pod processes).
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$f"
}

# The pod runner first, while the apiserver still answers; etcd last.
stop podrunner
for name in kwok kube-scheduler kube-controller-manager kube-apiserver model-store; do
  stop "$name" &
done
wait
stop etcd
# Local pod processes run in their own process groups; the pod runner stops them on SIGTERM, and
# this catches any it could not (each pod's directory holds its process group id).
for f in "$run"/podrunner/*/pid; do
  [[ -f $f ]] && kill -KILL -- "-$(cat "$f")" 2>/dev/null || true
done
if [[ ${KEEP_DATA:-0} != 1 ]]; then rm -rf "$run/etcd-data" "$run/podrunner"; fi
log "stopped"
