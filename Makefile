# authgate: `make run` starts the local gateway, `make test` runs every test tier.
# Both install what they need first (rustup targets, a venv with the pinned Envoy,
# wasm-bindgen-cli matching Cargo.lock).

SHELL := /bin/bash
VENV := .venv
ENVOY := $(VENV)/bin/envoy
TOOLS := .tools
# What `make build` ships: cargo's module without the exports of callbacks the filter leaves at
# the SDK's defaults, so Envoy skips those calls on every request (tools/trim-exports).
WASM := target/authgate.wasm
CARGO_WASM := target/wasm32-wasip1/release/authgate.wasm
UNUSED_CALLBACKS := proxy_on_response_body \
	proxy_on_response_trailers proxy_on_log proxy_on_done
TRIM := target/release/authgate-trim-exports
WASM_BINDGEN_VERSION := $(shell awk '/^name = "wasm-bindgen"$$/{getline; gsub(/"/, "", $$3); print $$3}' Cargo.lock)
export PATH := $(CURDIR)/$(TOOLS)/bin:$(PATH)
export ENVOY_BIN := $(CURDIR)/$(ENVOY)
export AUTHGATE_WASM := $(CURDIR)/$(WASM)
NOOP_WASM := target/wasm32-wasip1/release/authgate_noop_filter.wasm
export AUTHGATE_NOOP_WASM := $(CURDIR)/$(NOOP_WASM)
# The no-op filter with the same exports removed: the floor for a filter built like authgate.
NOOP_TRIMMED_WASM := target/authgate_noop_filter.trimmed.wasm
export AUTHGATE_NOOP_TRIMMED_WASM := $(CURDIR)/$(NOOP_TRIMMED_WASM)
# The same without the response-headers export too: what exporting it (for evict_on_upstream)
# costs a filter that returns at once.
NOOP_NO_RESPONSE_WASM := target/authgate_noop_filter.no-response-headers.wasm
export AUTHGATE_NOOP_NO_RESPONSE_WASM := $(CURDIR)/$(NOOP_NO_RESPONSE_WASM)

.PHONY: setup build test test-core test-wasm test-integration validate run lint clean doctor wasm-sha256 \
	bench bench-smoke fuzz fuzz-smoke soak noop-filter agents oidc browser

setup: $(ENVOY) $(TOOLS)/.wasm-bindgen-$(WASM_BINDGEN_VERSION)
	@rustup target list --installed | grep -q wasm32-wasip1 || rustup target add wasm32-wasip1
	@rustup target list --installed | grep -q wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown

$(ENVOY): requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $(ENVOY)

# Installed only when Cargo.lock's wasm-bindgen version changes (it takes minutes to build).
$(TOOLS)/.wasm-bindgen-$(WASM_BINDGEN_VERSION):
	@if [ "$$(wasm-bindgen-test-runner --version 2>/dev/null | awk '{print $$2}')" != "$(WASM_BINDGEN_VERSION)" ]; then \
	  cargo install --quiet --root $(TOOLS) wasm-bindgen-cli --version $(WASM_BINDGEN_VERSION); fi
	@mkdir -p $(TOOLS) && touch $@

build: setup
	cargo build --release --target wasm32-wasip1 -p authgate
	cargo build --release --quiet -p authgate-trim-exports
	$(TRIM) $(CARGO_WASM) $(WASM) $(UNUSED_CALLBACKS)
	@ls -l $(WASM) | awk '{print "built " $$9 " (" $$5 " bytes)"}'

noop-filter: setup
	cargo build --release --target wasm32-wasip1 -p authgate-noop-filter
	cargo build --release --quiet -p authgate-trim-exports
	$(TRIM) $(NOOP_WASM) $(NOOP_TRIMMED_WASM) $(UNUSED_CALLBACKS)
	$(TRIM) $(NOOP_WASM) $(NOOP_NO_RESPONSE_WASM) $(UNUSED_CALLBACKS) proxy_on_response_headers

test: build test-core test-wasm validate test-integration bench-smoke

test-core:
	cargo test -p authgate

test-wasm: setup
	cargo test -p authgate-wasm-tests --target wasm32-unknown-unknown

validate: setup
	@for config in envoy/envoy.yaml; do \
	  $(ENVOY) --mode validate -c $$config --log-level error >/dev/null || exit 1; \
	  echo "envoy --mode validate $$config: OK"; done

test-integration: build doctor agents oidc browser
	cargo test -p authgate-integration -- --test-threads 2

# A real OpenID Provider (npm oidc-provider, pinned) for the sign-in tests: a few seconds.
oidc: integration/oidc/node_modules/.package-lock.json
integration/oidc/node_modules/.package-lock.json: integration/oidc/package-lock.json
	npm ci --prefix integration/oidc --no-audit --no-fund --loglevel=error

# Headless Chromium and chromium-driver (Debian) and selenium (pinned, in its own venv) for the
# browser flows: about 30 s the first time.
browser: $(TOOLS)/browser/.installed
$(TOOLS)/browser/.installed: integration/browser/requirements.txt integration/browser/install.sh
	bash integration/browser/install.sh
	python3 -m venv $(TOOLS)/browser
	$(TOOLS)/browser/bin/pip install --quiet --disable-pip-version-check -r integration/browser/requirements.txt
	touch $@

# The coding-agent CLIs integration/tests/agents.rs drives, pinned (about 75 s and 1.6 GB the
# first time; a version check after that).
agents:
	bash integration/agents/install.sh $(TOOLS)/agents

# The SHA-256 of the built module, for the Istio WasmPlugin's `sha256` (envoy/istio/wasmplugin.yaml).
wasm-sha256: build
	@sha256sum $(WASM) | awk '{print $$1}'

# The native doctor CLI (validate, explain, probe-authz, hash-key) at target/debug/authgate-doctor.
doctor:
	cargo build -p authgate --features doctor --bin authgate-doctor

# The A/B benchmark against Envoy's native filters (bench/): interleaved rounds of every
# variant, report in bench/results/latest.md and .json. Options through BENCH_ARGS, e.g.
# make bench BENCH_ARGS="--rounds 5 --duration 10". Release builds: the load generator and the
# authorization service must not be the bottleneck.
bench: build noop-filter
	cargo build --release -p authgate-bench
	cargo build --release -p authgate-integration --bin authgate-authz
	target/release/authgate-bench $(BENCH_ARGS)

# One short round of every variant (report in target/bench-smoke/): fails when a variant does
# not start or answers anything but 200; asserts nothing about speed. Debug builds suffice.
bench-smoke: build noop-filter
	cargo build -p authgate-bench
	cargo build -p authgate-integration --bin authgate-authz
	target/debug/authgate-bench --smoke

# A long run of mixed traffic through real Envoy (two workers) with JWKS rotations, reporting
# outcomes, errors and Envoy's RSS every 30 s; fails on any unexpected status or RSS growth beyond
# its bound (integration/src/bin/authgate-soak.rs). SOAK_SECONDS=60 make soak for a short one.
SOAK_SECONDS ?= 600
soak: build
	cargo build --release -p authgate-integration --bin authgate-soak
	SOAK_SECONDS=$(SOAK_SECONDS) target/release/authgate-soak

# The local gateway on 127.0.0.1:8080 with the demo IdP and upstream and the reference
# authorization service (SQLite in .run/); Ctrl-C stops everything.
run: build oidc
	cargo build --quiet -p authgate-integration --bin authgate-demo --bin authgate-authz
	@# The trap clears itself first: `kill 0` signals this shell too, and re-entering the trap
	@# recursed until bash crashed.
	@mkdir -p .run; trap 'trap - EXIT INT TERM; kill 0' EXIT INT TERM; \
	  target/debug/authgate-authz serve --db .run/authz.sqlite --port 8083 \
	    --gateway-key demo-gateway-key-change-me & \
	  target/debug/authgate-demo & \
	  node integration/oidc/provider.mjs --config envoy/demo-op.json --host localhost --port 8084 & \
	  $(ENVOY) -c envoy/envoy.yaml --concurrency 1 --log-level warn --component-log-level wasm:info & \
	  wait

lint: setup
	cargo fmt --all -- --check
	cargo clippy -p authgate --target wasm32-wasip1 --all-targets -- -D warnings
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p authgate --features doctor --all-targets -- -D warnings

clean:
	cargo clean

# Fuzzing the core with cargo-fuzz (fuzz/README.md): every target for FUZZ_SECONDS each, two at a
# time. Installs a nightly toolchain and cargo-fuzz (under .tools/) on first use.
FUZZ_SECONDS ?= 300
fuzz:
	bash fuzz/scripts/run.sh $(FUZZ_SECONDS)

# Every fuzz target for 10 s (about a minute once built): a check that they build and run.
fuzz-smoke:
	bash fuzz/scripts/run.sh 10
