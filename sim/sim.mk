# The autoscaling benchmark (issue 6): included by the root Makefile.
#
# Every policy (modelfleet, hpa, kpa, apa, kubeai) on the same request streams: the Azure
# conversation trace and five synthetic workloads, 3 seeds, cold starts of 10 s, 30 s and 90 s;
# then, as a reference, the smallest fixed fleet that meets the goal knowing the whole run.
# Release mode: seconds on 2 cores once built (the first build takes a few minutes).

SIM_TRACE := sim/traces/azure-llm-inference-2023-conv.csv
SIM_JSON := target/bench/autoscale.json

.PHONY: bench-autoscale
bench-autoscale: ## Simulate our autoscaler and HPA/KPA/APA/KubeAI on trace and synthetic load; table + target/bench/autoscale.json
	@mkdir -p target/bench
	$(CARGO) run --release --quiet -p modelfleet-sim -- \
	  --trace $(SIM_TRACE) --json $(SIM_JSON) --seeds 3 --cold-start 10s,30s,90s --threads 2 --fixed-reference

.PHONY: bench-autoscale-long
bench-autoscale-long: ## The synthetic workloads over 4 h, and the 1 h trace, at a 30 s cold start: shows what 1 h runs hide, such as a slow drift of the fleet (seconds)
	@mkdir -p target/bench
	$(CARGO) run --release --quiet -p modelfleet-sim -- \
	  --trace $(SIM_TRACE) --json target/bench/autoscale-long.json --seeds 3 --cold-start 30s --duration 14400 --threads 2
