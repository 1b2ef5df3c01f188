# Modelfleet: the one entry point. `make` (or `make help`) lists every target.
#
# Two commands do everything on a fresh machine: `make demo` runs the main job end to end
# locally, `make test` runs every test CI runs. Both install what they need (Rust components,
# Debian packages, Python packages) or say exactly what is missing.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
# Slow, reproducible downloads and builds (Kubernetes binaries, the model, Python venv) live here,
# outside the repository, keyed by version.
MODELFLEET_CACHE ?= $(HOME)/.cache/modelfleet
export MODELFLEET_CACHE
# This machine has 2 cores; more jobs only thrash memory.
export CARGO_BUILD_JOBS ?= 2
export CARGO_TERM_COLOR ?= never

CRD_YAML := crds/modelservice.yaml
CHART_CRD := charts/modelfleet/templates/crd.yaml

.PHONY: help
help: ## List every target with what it does
	@grep -hE '^[a-zA-Z0-9_.-]+:.*## ' $(MAKEFILE_LIST) \
	  | sort -u \
	  | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[1m%-20s\033[0m %s\n", $$1, $$2}'

.PHONY: toolchain
toolchain: ## Check the Rust toolchain and add rustfmt and clippy if missing
	@command -v $(CARGO) >/dev/null || { echo "error: cargo not found: install Rust from https://rustup.rs (1.89 or newer)"; exit 1; }
	@rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
	@rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy

.PHONY: build
build: toolchain runtime-deps ## Build every binary (debug)
	$(CARGO) build --workspace --all-targets

.PHONY: generate
generate: ## Regenerate the CRD YAML and the chart's CRD template from the Rust types
	$(CARGO) run --quiet -p modelfleet-crds --bin crdgen > $(CRD_YAML).tmp
	mv $(CRD_YAML).tmp $(CRD_YAML)
	$(CARGO) run --quiet -p modelfleet-crds --bin crdgen -- --helm > $(CHART_CRD).tmp
	mv $(CHART_CRD).tmp $(CHART_CRD)
	@echo "wrote $(CRD_YAML) and $(CHART_CRD)"

.PHONY: check-generated
check-generated: ## Fail when a generated file differs from what `make generate` writes
	@$(CARGO) run --quiet -p modelfleet-crds --bin crdgen | diff -u $(CRD_YAML) - \
	  || { echo "error: $(CRD_YAML) is stale: run 'make generate' and commit the result"; exit 1; }
	@$(CARGO) run --quiet -p modelfleet-crds --bin crdgen -- --helm | diff -u $(CHART_CRD) - \
	  || { echo "error: $(CHART_CRD) is stale: run 'make generate' and commit the result"; exit 1; }
	@echo "generated files are up to date"

.PHONY: fmt
fmt: ## Format the Rust code
	$(CARGO) fmt --all

.PHONY: lint
lint: toolchain runtime-deps ## Check formatting and run clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

.PHONY: unit
unit: toolchain runtime-deps ## Run the unit tests (no control plane, no model; the runtime's are in test-runtime)
	$(CARGO) test --workspace --exclude modelfleet-e2e --exclude modelfleet-runtime

.PHONY: test-argocd
test-argocd: ## Run the Argo CD health script on sample statuses with a real Lua 5.1
	@command -v lua5.1 >/dev/null || { echo "installing lua5.1 (Argo CD runs Lua 5.1)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq lua5.1) >/dev/null \
	  || { echo "error: lua5.1 is missing: apt-get install lua5.1"; exit 1; }; }
	lua5.1 integrations/argocd/health_test.lua

.PHONY: test
test: check-generated lint unit test-argocd test-runtime test-e2e-full ## Run every test CI runs: generated files, lint, unit, runtime with the real model, e2e on a local control plane
	@echo "make test: all checks passed"

-include runtime/runtime.mk
-include e2e/e2e.mk
-include sim/sim.mk

HELM ?= $(if $(wildcard $(MODELFLEET_CACHE)/bin/current/helm),$(MODELFLEET_CACHE)/bin/current/helm,helm)
KUBECTL ?= $(if $(wildcard $(MODELFLEET_CACHE)/bin/current/kubectl),$(MODELFLEET_CACHE)/bin/current/kubectl,kubectl)

.PHONY: chart-check
chart-check: ## Lint the chart strictly and validate its manifests on the local apiserver (server-side dry run)
	$(HELM) lint --strict charts/modelfleet
	$(HELM) lint --strict charts/modelfleet --set operator.replicas=2,operator.leaderElection.enabled=true,serviceMonitor.enabled=true,operator.watchReleaseNamespaceOnly=true
	$(HELM) template modelfleet charts/modelfleet --namespace default \
	  | KUBECONFIG=$${KUBECONFIG:-$(MODELFLEET_CACHE)/cluster/kubeconfig} $(KUBECTL) apply --dry-run=server -f -
	$(HELM) template modelfleet charts/modelfleet --namespace default --set operator.replicas=2,operator.leaderElection.enabled=true,operator.watchReleaseNamespaceOnly=true \
	  | KUBECONFIG=$${KUBECONFIG:-$(MODELFLEET_CACHE)/cluster/kubeconfig} $(KUBECTL) apply --dry-run=server -f -

.PHONY: images
images: ## Build the operator and runtime images from scratch (buildah, no registry) as OCI archives in target/images
	$(MAKE) --no-print-directory build-runtime
	$(CARGO) build --release -p modelfleet-operator
	images/build.sh modelfleet-operator target/release/modelfleet-operator target/images/modelfleet-operator.tar
	images/build.sh modelfleet-runtime target/release/modelfleet-runtime target/images/modelfleet-runtime.tar

.PHONY: demo
demo: ## The whole job end to end: local control plane, chart, a ModelService, load, autoscaling, a plot in target/demo
	demo/run.sh

.PHONY: demo-down
demo-down: ## Remove what `make demo` left (its namespace) and stop the local control plane
	-KUBECONFIG=$${KUBECONFIG:-$(MODELFLEET_CACHE)/cluster/kubeconfig} $(KUBECTL) delete namespace modelfleet-demo --ignore-not-found
	$(MAKE) --no-print-directory cluster-down
