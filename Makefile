# Build artifacts live outside the clone so CI and fresh clones stay fast.
CARGO_TARGET_DIR ?= $(HOME)/.cache/wxcm-target
export CARGO_TARGET_DIR
# Development-only key for secrets at rest; production sets its own.
WXCM_SECRET_KEY ?= ZGV2LW9ubHkta2V5LWRvLW5vdC11c2UtaW4tcHJvZCE=
export WXCM_SECRET_KEY
WXCM := $(CARGO_TARGET_DIR)/debug/wxcm
WXCM_SIM := $(CARGO_TARGET_DIR)/debug/wxcm-sim
DEMO_PASSWORD ?= demo-password-123
SANDBOX_LISTEN ?= 127.0.0.1:9100

.PHONY: run test bench services browser build lint fmt fuzz

services:
	@scripts/services.sh

## Chromium and chromedriver for the console's browser tests.
browser:
	@scripts/browser.sh

build:
	cargo build -p wxcm -p wxcm-simulator -p wxcm-demo

## The server, ready to use: migrations, a demo tenant with an owner and a day of
## demo activity, all roles, the simulator; prints the console URL and the login.
run: services build
	@WXCM=$(WXCM) WXCM_SIM=$(WXCM_SIM) DEMO_PASSWORD=$(DEMO_PASSWORD) SANDBOX_LISTEN=$(SANDBOX_LISTEN) scripts/run.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	scripts/check-domain-purity.sh
	scripts/check-server-deps.sh

test: services browser lint
	cargo build --workspace --all-targets
	cargo test --workspace -- --test-threads=4

BENCH_LEDGER_OUT := $(CARGO_TARGET_DIR)/bench-ledger.out
ledger_field = $$(tail -1 $(BENCH_LEDGER_OUT) | python3 -c 'import json,sys; print(json.load(sys.stdin)["$(1)"])')

## Each bench exits non-zero after its JSON line if any operation failed or was skipped.
bench: services
	cargo build --release -p wxcm -p wxcm-bench
	@# Not piped through tee: the ledger's exit status must stop make.
	$(CARGO_TARGET_DIR)/release/wxcm bench ledger > $(BENCH_LEDGER_OUT); status=$$?; cat $(BENCH_LEDGER_OUT); exit $$status
	$(CARGO_TARGET_DIR)/release/wxcm bench pipeline
	@# The gateway's target is a ratio to the ledger's command rate (a) of the run above,
	@# also read at that run's client count.
	$(CARGO_TARGET_DIR)/release/wxcm bench gateway --ledger-rate $(call ledger_field,a_commands_per_s) \
	  --ledger-clients $(call ledger_field,clients)
	$(CARGO_TARGET_DIR)/release/wxcm bench pay
	@# Coupons' target is also a ratio to the ledger's a.
	$(CARGO_TARGET_DIR)/release/wxcm bench coupons --ledger-rate $(call ledger_field,a_commands_per_s)
	@# One hot shake lottery, as a ratio to the ledger's a too.
	$(CARGO_TARGET_DIR)/release/wxcm bench shake --ledger-rate $(call ledger_field,a_commands_per_s)
	@# The dashboard of 100,000 members and 366 days, measured in headless Chromium.
	@scripts/browser.sh
	$(CARGO_TARGET_DIR)/release/wxcm bench console
	@# Its own PostgreSQL servers, NATS cluster and wxcm nodes (ports chosen free): disturbs nothing else.
	$(CARGO_TARGET_DIR)/release/wxcm bench faults

fmt:
	cargo fmt --all

## Fuzz the WeChat XML reader and message crypt (nightly + cargo-fuzz), each for
## FUZZ_SECONDS. Its own target dir: sanitizer builds would evict the normal ones.
FUZZ_SECONDS ?= 30
FUZZ_TARGET_DIR ?= $(CARGO_TARGET_DIR)-fuzz
FUZZ_TARGETS := wechat_xml wechat_decrypt
fuzz:
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/corpus/$$t && \
	  dict=""; [ $$t = wechat_xml ] && dict="-dict=fuzz/xml.dict"; \
	  CARGO_TARGET_DIR=$(FUZZ_TARGET_DIR) cargo +nightly fuzz run --fuzz-dir fuzz $$t fuzz/corpus/$$t fuzz/seeds/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -max_len=8192 $$dict || exit 1; \
	done
