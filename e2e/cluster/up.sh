#!/usr/bin/env bash
# Starts the local control plane used by the e2e tests and the demo (`make cluster-up`):
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok, all on 127.0.0.1, plus
# 4 fake GPU nodes (nvidia.com/gpu: 8 each), a static HTTP model store on 127.0.0.1:18080 serving
# $MODELFLEET_CACHE/models/, and the pod runner (e2e/src/bin/podrunner.rs) that runs pods of our
# images as local processes. Binaries come from build.sh (cached; the first build takes 20-40 min).
# State lives in $MODELFLEET_CACHE/cluster/ (PKI, etcd data, logs, pid files), never in the repo.
# Idempotent: a component whose pid file points to a live process is left running.
# Nothing here listens on or dials anything outside 127.0.0.0/8: kwok's default pod CIDR (10.x)
# is replaced by --cidr, and Service cluster IPs are allocated from a 127.x range.
# Environment: MODELFLEET_PODRUNNER=0 skips the pod runner; CARGO_TARGET_DIR is honoured when
# building it; MODELFLEET_BIN_DIR (default <target dir>/debug) is where it finds our binaries.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${MODELFLEET_CACHE:-$HOME/.cache/modelfleet}
run=$cache/cluster
pki=$run/pki
logs=$run/logs
pids=$run/pids
kubeconfig=$run/kubeconfig
mkdir -p "$pki" "$logs" "$pids" "$cache/models"

# Ports, all on 127.0.0.1.
ETCD_PORT=12379 ETCD_PEER_PORT=12380 APISERVER_PORT=16443 KCM_PORT=11257 SCHED_PORT=11259
MODEL_STORE_PORT=18080
# Never dialed (no kube-proxy) but kept inside loopback so that an accidental dial stays local.
SERVICE_CIDR=127.0.96.0/20
# Pod IPs kwok gives to simulated pods; the pod runner uses 127.0.20.0/24 for local processes.
KWOK_POD_CIDR=127.0.10.0/24

log() { printf '[cluster-up %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
t0=$SECONDS

bindir=$("$here/build.sh" | tail -n1)
export PATH="$bindir:$PATH"

# --- PKI -------------------------------------------------------------------------------------
if [[ ! -f $pki/admin.crt ]]; then
  log "creating PKI in $pki"
  (
    cd "$pki"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 \
      -subj "/CN=modelfleet-local-ca" 2>/dev/null
    cat > apiserver.ext <<EOF
subjectAltName=IP:127.0.0.1,IP:127.0.96.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage=serverAuth
EOF
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt \
      -days 3650 -extfile apiserver.ext 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' > client.ext
    openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr \
      -subj "/O=system:masters/CN=kubernetes-admin" 2>/dev/null
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out admin.crt \
      -days 3650 -extfile client.ext 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    rm -f ./*.csr ./*.ext
  )
fi

cat > "$kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: modelfleet-local
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $pki/ca.crt
users:
- name: admin
  user:
    client-certificate: $pki/admin.crt
    client-key: $pki/admin.key
contexts:
- name: modelfleet-local
  context: {cluster: modelfleet-local, user: admin}
current-context: modelfleet-local
EOF
export KUBECONFIG=$kubeconfig

# --- process helpers -------------------------------------------------------------------------
running() { [[ -f $pids/$1.pid ]] && kill -0 "$(cat "$pids/$1.pid")" 2>/dev/null; }

# start NAME CMD...: starts CMD in its own session, logging to $logs/NAME.log, unless running.
start() {
  local name=$1; shift
  if running "$name"; then log "$name: already running (pid $(cat "$pids/$name.pid"))"; return; fi
  log "$name: starting"
  setsid "$@" >>"$logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$pids/$name.pid"
}

# wait_for NAME SECONDS CMD...: polls CMD until it succeeds; on timeout shows the log's tail.
wait_for() {
  local name=$1 timeout=$2; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ! running "$name"; then log "$name exited; last log lines:"; tail -n 30 "$logs/$name.log" >&2; exit 1; fi
    if ((SECONDS > deadline)); then log "$name not healthy after ${timeout}s:"; tail -n 30 "$logs/$name.log" >&2; exit 1; fi
    sleep 0.5
  done
}

curl_tls() { curl -sf --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" "$@"; }

# --- components ------------------------------------------------------------------------------
start etcd etcd --name default --data-dir "$run/etcd-data" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "default=http://127.0.0.1:$ETCD_PEER_PORT" --unsafe-no-fsync --log-level warn
wait_for etcd 60 curl -sf "http://127.0.0.1:$ETCD_PORT/health"

start kube-apiserver kube-apiserver \
  --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
  --endpoint-reconciler-type none \
  --authorization-mode Node,RBAC \
  --client-ca-file "$pki/ca.crt" --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
  --service-cluster-ip-range "$SERVICE_CIDR" \
  --allow-privileged=true --profiling=false
wait_for kube-apiserver 120 curl_tls "https://127.0.0.1:$APISERVER_PORT/readyz"

start kube-controller-manager kube-controller-manager \
  --kubeconfig "$kubeconfig" --authentication-kubeconfig "$kubeconfig" --authorization-kubeconfig "$kubeconfig" \
  --leader-elect=false --bind-address 127.0.0.1 --secure-port "$KCM_PORT" \
  --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
  --use-service-account-credentials=true --profiling=false \
  --node-monitor-grace-period=120s
start kube-scheduler kube-scheduler \
  --kubeconfig "$kubeconfig" --authentication-kubeconfig "$kubeconfig" --authorization-kubeconfig "$kubeconfig" \
  --leader-elect=false --bind-address 127.0.0.1 --secure-port "$SCHED_PORT" --profiling=false
start kwok kwok \
  --kubeconfig "$kubeconfig" --config "$here/kwok-stages.yaml" \
  --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
  --cidr "$KWOK_POD_CIDR" --node-ip 127.0.0.1 --node-lease-duration-seconds 40
start model-store python3 -m http.server "$MODEL_STORE_PORT" --bind 127.0.0.1 --directory "$cache/models"

wait_for kube-controller-manager 60 curl -skf "https://127.0.0.1:$KCM_PORT/healthz"
wait_for kube-scheduler 60 curl -skf "https://127.0.0.1:$SCHED_PORT/healthz"
wait_for model-store 30 curl -sf "http://127.0.0.1:$MODEL_STORE_PORT/"

# --- fake GPU nodes --------------------------------------------------------------------------
for i in 0 1 2 3; do
  cat <<EOF
apiVersion: v1
kind: Node
metadata:
  name: gpu-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    kubernetes.io/hostname: gpu-node-$i
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    nvidia.com/gpu.present: "true"
    nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3
    nvidia.com/gpu.count: "8"
    nvidia.com/gpu.memory: "81559"
status:
  capacity: {cpu: "64", memory: 512Gi, pods: "110", nvidia.com/gpu: "8"}
  allocatable: {cpu: "64", memory: 512Gi, pods: "110", nvidia.com/gpu: "8"}
---
EOF
done | kubectl apply -f - >/dev/null
log "waiting for the fake nodes to be Ready"
wait_for kwok 60 kubectl wait --for=condition=Ready node --all --timeout=5s
wait_for kube-controller-manager 60 kubectl -n default get serviceaccount default

# --- pod runner --------------------------------------------------------------------------------
if [[ ${MODELFLEET_PODRUNNER:-1} != 0 ]]; then
  tdir=${CARGO_TARGET_DIR:-target}
  [[ $tdir == /* ]] || tdir=$repo/$tdir
  if ! running podrunner; then
    log "building the pod runner (cargo build -p modelfleet-e2e --bin podrunner)"
    (cd "$repo" && ${CARGO:-cargo} build -q -p modelfleet-e2e --bin podrunner)
  fi
  start podrunner env RUST_LOG="${RUST_LOG:-info}" MODELFLEET_REPO="$repo" \
    MODELFLEET_BIN_DIR="${MODELFLEET_BIN_DIR:-$tdir/debug}" MODELFLEET_PODRUNNER_STATE="$run/podrunner" \
    "$tdir/debug/podrunner" --kubeconfig "$kubeconfig"
fi

log "control plane ready in $((SECONDS - t0))s; logs in $logs"
kubectl get nodes -o custom-columns='NAME:.metadata.name,STATUS:.status.conditions[?(@.type=="Ready")].status,GPU:.status.allocatable.nvidia\.com/gpu,PRODUCT:.metadata.labels.nvidia\.com/gpu\.product' >&2
echo "export KUBECONFIG=$kubeconfig"
