# Make fragment for the local control plane and the e2e tests; included by the root Makefile,
# which defines MODELFLEET_CACHE, CARGO and CARGO_BUILD_JOBS. Scripts live in e2e/cluster/.

E2E_KUBECONFIG ?= $(MODELFLEET_CACHE)/cluster/kubeconfig

.PHONY: cluster-build cluster-up cluster-down e2e test-e2e-full

cluster-build: ## Build etcd, Kubernetes, kwok and helm from the Go module proxy, once (20-40 min cold, then cached)
	MODELFLEET_CACHE=$(MODELFLEET_CACHE) nice -n 10 e2e/cluster/build.sh

cluster-up: ## Start the local control plane with 4 fake GPU nodes, the model store and the pod runner (idempotent)
	MODELFLEET_CACHE=$(MODELFLEET_CACHE) CARGO="$(CARGO)" e2e/cluster/up.sh

cluster-down: ## Stop the local control plane and every process it started
	MODELFLEET_CACHE=$(MODELFLEET_CACHE) e2e/cluster/down.sh

e2e: ## Run the e2e tests against the running local control plane (make cluster-up first)
	@# The pod runner runs pods of our images from target/debug; the operator tests start the
	@# operator binary themselves.
	$(CARGO) build -p modelfleet-runtime --bin modelfleet-runtime -p modelfleet-operator --bin modelfleet-operator
	KUBECONFIG=$(E2E_KUBECONFIG) MODELFLEET_CACHE=$(MODELFLEET_CACHE) $(CARGO) test -p modelfleet-e2e -j 2 --no-fail-fast

test-e2e-full: ## Bring the control plane up, run the e2e tests (required, not skipped), tear it down
	$(MAKE) --no-print-directory model
	$(MAKE) cluster-up
	status=0; MODELFLEET_E2E_REQUIRED=1 $(MAKE) e2e || status=$$?; $(MAKE) cluster-down; exit $$status
