#!/usr/bin/env bash
# `make demo`: the whole job end to end. Uses the cluster KUBECONFIG points to when it answers,
# otherwise starts the local control plane (first time: builds Kubernetes from source, 8-15 min on 2 cores);
# installs the operator with the chart, applies the demo ModelService, sends a load that needs
# more than one replica, shows a live view, and writes a plot and a summary to target/demo/.
# Ctrl-C stops it and cleans up; `make demo-down` does the same afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
cache=${MODELFLEET_CACHE:-$HOME/.cache/modelfleet}
ns=modelfleet-demo
out=$repo/target/demo
started_cluster=0

say() { printf '\n==> %s\n' "$*"; }

cleanup() {
  trap - INT TERM EXIT
  say "cleaning up"
  kubectl delete namespace "$ns" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  if [ "$started_cluster" = 1 ]; then
    make --no-print-directory cluster-down || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

export PATH="$cache/bin/current:$PATH"
if [ -n "${KUBECONFIG:-}" ] && kubectl version --request-timeout=5s >/dev/null 2>&1; then
  say "using the cluster of KUBECONFIG=$KUBECONFIG"
else
  if [ ! -x "$cache/bin/current/kube-apiserver" ]; then
    say "no local control plane yet: building etcd, Kubernetes, kwok and helm from source (8-15 minutes on 2 cores, once)"
  fi
  say "starting the local control plane"
  make --no-print-directory cluster-up
  started_cluster=1
  export KUBECONFIG=$cache/cluster/kubeconfig
fi

say "fetching the model and building the binaries the pods run"
make --no-print-directory model
cargo build -q -p modelfleet-operator -p modelfleet-runtime
venv=$cache/venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c 'import openai, matplotlib' 2>/dev/null || "$venv/bin/pip" install -q "openai>=1.40,<4" matplotlib

say "installing the operator with the chart (namespace $ns)"
# A CRD installed earlier without Helm (by the e2e tests, say) stays as it is, brought up to date;
# otherwise the chart installs it.
crds=true
owner=$(kubectl get crd modelservices.modelfleet.dev -o jsonpath='{.metadata.annotations.meta\.helm\.sh/release-name}' 2>/dev/null || true)
if kubectl get crd modelservices.modelfleet.dev >/dev/null 2>&1 && [ "$owner" != modelfleet ]; then
  crds=false
  kubectl apply --server-side --force-conflicts -f crds/modelservice.yaml >/dev/null
fi
helm upgrade --install modelfleet charts/modelfleet -n "$ns" --create-namespace --wait --timeout 180s \
  --set crds.install=$crds --set operator.watchReleaseNamespaceOnly=true --set operator.logFormat=text >/dev/null
kubectl -n "$ns" get deploy

say "applying the ModelService (p95 latency objective 3s, 1-3 replicas)"
kubectl -n "$ns" apply --server-side -f demo/smollm2-demo.yaml
kubectl -n "$ns" wait --for=condition=Ready ms/smollm2 --timeout=300s
kubectl -n "$ns" get ms -o wide

say "sending load: ramp up, plateau above one replica's capacity, ramp down, quiet"
"$venv/bin/python" demo/loadgen.py --namespace "$ns" --name smollm2 --objective 3s --out "$out"
kubectl -n "$ns" get ms -o wide
say "done: plot $out/demo.png, summary $out/summary.txt"
