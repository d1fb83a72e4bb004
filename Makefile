# Hookline developer commands. `make run` starts the system on the embedded
# backend; `make test` sets up what the tests need and runs every check CI runs.

SHELL := /bin/bash
CARGO ?= cargo
DATA_DIR ?= ./data
BIND_ADDR ?= 127.0.0.1:8080
METRICS_ADDR ?= 127.0.0.1:9090
# Obviously fake development secret; production reads secrets from AWS Secrets Manager.
DEV_WEBHOOK_SECRET ?= whsec_test_localDevelopmentOnly
TYPE ?= payment_intent.succeeded
# Where `make run` finds the binaries it starts (the test of `make run`
# points it at the ones under test).
BIN_DIR ?= target/debug
# The local AWS-compatible server the tests talk to (SQS, DynamoDB, Secrets Manager).
VENV ?= .venv
MOTO_VERSION ?= 5.2.5
# Stripe's official Python library: the Stripe API stand-in is checked against it.
STRIPE_PY_VERSION ?= 16.1.0
# OpenTelemetry's published protobuf definitions: the tests' OTLP receiver decodes with them.
OTEL_PROTO_VERSION ?= 1.45.2
MOTO_STAMP := $(VENV)/.moto-$(MOTO_VERSION)-stripe-$(STRIPE_PY_VERSION)-otelproto-$(OTEL_PROTO_VERSION)
INFRA_TOOLS := cfn-lint==1.58.0 checkov==3.3.30 pytest==8.4.2
INFRA_STAMP := $(VENV)/.infra-tools-2
LOCAL_AWS_ENV = AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
# Every process a `make test` starts inherits this mark; scripts/leftovers.py
# finds any still running at the end (an outer run's mark is kept).
HOOKLINE_TEST_RUN ?= $(shell date +%s%N)-$(shell echo $$PPID)
export HOOKLINE_TEST_RUN

.PHONY: console browser receiver soak soak-short run build send-event test check fmt-check clippy doc unit-fast unit check-secrets bench help moto aws-local aws-local-stop infra-lint release-build

help:
	@echo "make run          start the ingress and the worker on the embedded backend (./data)"
	@echo "make send-event   sign and post a sample event (TYPE=payout.updated make send-event)"
	@echo "make check        the fast tier: fmt check, clippy -D warnings, unit tests, docs (broken links denied)"
	@echo "make test         everything CI runs: the fast tier's checks, secret guard, the stack, a short soak, all tests"
	@echo "make bench        signature, ingress (beside a Node peer), worker drain, latency model, replay, AWS requests"
	@echo "make aws-local    start a local AWS-compatible server (moto) with the queues and tables"
	@echo "make console      the operator console on http://127.0.0.1:8090/ (embedded backend in ./data)"
	@echo "make soak         conservation soak: N events through kills, outages, duplicates, replays (N=10000 SEED=1 BACKEND=embedded|aws)"

build:
	$(CARGO) build --workspace --bins

run: build
	@if [ -n "$$QUEUE_URL" ]; then echo "Hookline on AWS: $$QUEUE_URL"; else echo "Hookline on the embedded backend in $(DATA_DIR)"; fi
	@echo "  webhook:  http://$(BIND_ADDR)/api/stripe-webhook   (secret $(DEV_WEBHOOK_SECRET))"
	@echo "  send one: make send-event TYPE=payment_intent.succeeded   (in another terminal)"
	@echo "  stop:     ctrl-c"
	@DATA_DIR=$(DATA_DIR) STRIPE_WEBHOOK_SECRET=$(DEV_WEBHOOK_SECRET) APP_ENV=development \
	  METRICS_ADDR=$(METRICS_ADDR) BIND_ADDR=$(BIND_ADDR) exec scripts/run.sh $(BIN_DIR)

console: build
	@DATA_DIR=$(DATA_DIR) target/debug/hookline console

# Uses what `make run` built (the same `cargo build` is a no-op then).
send-event: build
	@STRIPE_WEBHOOK_SECRET=$(DEV_WEBHOOK_SECRET) target/debug/hookline \
	  dev send $(TYPE) --url http://$(BIND_ADDR)/api/stripe-webhook

# The fast tier, for the edit-compile loop: format, clippy, every crate's
# unit tests (no AWS server, no processes) and the docs.
check: fmt-check clippy unit-fast doc

# Everything CI checks; the cargo tests run last so their total closes the output.
# A test run builds each crate once: incremental caches would only take disk.
test: export CARGO_INCREMENTAL = 0
test: fmt-check clippy doc check-secrets infra-lint release-build soak-short unit

fmt-check:
	$(CARGO) fmt --all --check

# The second run checks the service crates as they build alone, without the
# test-support features the test suite turns on for the whole workspace.
# In the release profile, so that build scripts and proc macros (SQLite's C
# sources, ring's) are built once for clippy, the docs and the release build.
clippy:
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings
	$(CARGO) clippy --release -p hookline-ingress -p hookline-worker -p hookline-cli -- -D warnings

# Each module's `//!` header is where ARCHITECTURE.md sends a reader: the
# docs build with every private item, and a broken intra-doc link fails.
doc:
	RUSTDOCFLAGS="-D rustdoc::broken_intra_doc_links -A rustdoc::private_intra_doc_links" \
	  $(CARGO) doc --release --workspace --no-deps --document-private-items

# Every crate's unit tests: pure logic and the embedded backend, no
# processes and no AWS server.
unit-fast:
	$(CARGO) test --release --workspace --lib --bins

# Installs moto into the project's venv (ignored by git), once per version.
$(MOTO_STAMP):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check 'moto[server]==$(MOTO_VERSION)' 'stripe==$(STRIPE_PY_VERSION)' 'opentelemetry-proto==$(OTEL_PROTO_VERSION)'
	touch $@

moto: $(MOTO_STAMP)

# Headless Chromium and ChromeDriver for the console's browser test (Debian's
# packages), installed where missing and possible; without them that test
# says it is skipped.
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "installing chromium and chromium-driver for the browser test"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) >/dev/null 2>&1 \
	    || echo "cannot install chromium: the browser test will be skipped"; \
	else echo "no chromium and no way to install it: the browser test will be skipped"; fi

# The tests' HTTP destination: a Node app that verifies each delivery with
# the official stripe package (tests/receiver), installed from its lock file.
RECEIVER_STAMP := tests/receiver/node_modules/.package-lock.json
$(RECEIVER_STAMP): tests/receiver/package-lock.json
	@if command -v npm >/dev/null 2>&1; then npm ci --prefix tests/receiver --no-audit --no-fund --loglevel=error; \
	else echo "no npm: the destination tests will be skipped"; fi

receiver: $(RECEIVER_STAMP)

# Starts moto on a free loopback port, runs every test against it and the
# embedded backend, and stops it again, whatever the result; then fails if
# any process the run started (browser, ChromeDriver, moto, the binaries
# under test) is still running, or if a log line the run wrote carries a
# personal field of the fixtures (docs/data.md).
# The tests run against the release binaries, the ones the image ships,
# and build on the release build: the tests ask no feature the release
# build lacks (tests/tidy.rs checks it), so only the test harnesses are
# compiled on top of it.
unit: release-build $(MOTO_STAMP) browser receiver
	@endpoint=$$(VENV=$(VENV) scripts/moto.sh start) || exit 1; \
	echo "local AWS (moto) at $$endpoint"; \
	rm -f target/test-skips.log; \
	AWS_ENDPOINT_URL=$$endpoint $(LOCAL_AWS_ENV) $(CARGO) test --release --locked --workspace 2>&1 | tee target/test-output.log; \
	rc=$${PIPESTATUS[0]}; scripts/moto.sh stop; \
	scripts/leftovers.py || rc=1; \
	scripts/scan_logs.py || rc=1; \
	skips=$$(cat target/test-skips.log 2>/dev/null | wc -l); \
	if [ "$$skips" -gt 0 ]; then echo "skipped: $$skips test(s) passed without running (target/test-skips.log):"; sed 's/^/  /' target/test-skips.log; fi; \
	awk '/^test result:/ { p += $$4; f += $$6 } END { printf "total: %d passed, %d failed\n", p, f }' target/test-output.log; \
	exit $$rc

$(INFRA_STAMP):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check $(INFRA_TOOLS)
	touch $@

# The CloudFormation stack: cfn-lint, checkov (no suppression without a
# justification next to the resource), and the template tests.
infra-lint: $(INFRA_STAMP) $(MOTO_STAMP)
	$(VENV)/bin/cfn-lint infra/*.yaml
	$(VENV)/bin/checkov --directory infra --framework cloudformation --compact --quiet --skip-download
	$(VENV)/bin/pytest -q infra/tests

# The container image's build stage runs exactly this (see Dockerfile).
release-build:
	$(CARGO) build --release --locked --workspace --bins

# A local AWS for running the system by hand against the AWS backend.
aws-local: build $(MOTO_STAMP)
	@endpoint=$$(VENV=$(VENV) scripts/moto.sh start) || exit 1; \
	AWS_ENDPOINT_URL=$$endpoint $(LOCAL_AWS_ENV) target/debug/hookline dev aws-setup > .moto/queues.env || exit 1; \
	echo "moto is running at $$endpoint with the queues and tables. Use it with:"; \
	echo "  export AWS_ENDPOINT_URL=$$endpoint $(LOCAL_AWS_ENV)"; \
	sed 's/^/  export /' .moto/queues.env; \
	echo "then make run (or the binaries); stop it with make aws-local-stop"

aws-local-stop:
	scripts/moto.sh stop

# Fails if a tracked file holds something shaped like a real Stripe key or
# webhook secret. Test values say so in their name (whsec_test_, sk_test_fake…).
check-secrets:
	@hits=$$(git grep -nIE '(sk|rk)_live_[A-Za-z0-9]{8,}|sk_test_[A-Za-z0-9]{40,}|whsec_[A-Za-z0-9]{32,}' -- . ':!*.lock' \
	  | grep -vE 'whsec_test_|sk_live_fake|rk_live_fake|sk_test_fake|testdata/|fixture' || true); \
	if [ -n "$$hits" ]; then echo "check-secrets: these tracked lines look like real Stripe secrets:"; echo "$$hits"; exit 1; fi; \
	echo "check-secrets: no live-looking Stripe secret in tracked files"

# The conservation soak (src/bin/soak.rs) on the release binaries. BACKEND=aws
# runs it against moto (N=1000 there by default: moto serves tens of calls a second).
BACKEND ?= embedded
SEED ?= 1
ifeq ($(BACKEND),aws)
N ?= 1000
SOAK_RATE ?= 100
else
N ?= 10000
SOAK_RATE ?= 1500
endif
soak: release-build
	@if [ "$(BACKEND)" = aws ]; then \
	  $(MAKE) -s moto >/dev/null && endpoint=$$(VENV=$(VENV) scripts/moto.sh start) || exit 1; \
	  AWS_ENDPOINT_URL=$$endpoint $(LOCAL_AWS_ENV) target/release/hookline-soak --backend aws --n $(N) --seed $(SEED) --rate $(SOAK_RATE); \
	  rc=$$?; scripts/moto.sh stop; exit $$rc; \
	else \
	  target/release/hookline-soak --backend embedded --n $(N) --seed $(SEED) --rate $(SOAK_RATE); \
	fi

# A short soak in every `make test`, so that the soak itself keeps working.
soak-short: release-build
	target/release/hookline-soak --backend embedded --n 300 --seed $(SEED) --rate 100 --kill-every-secs 1

# Every figure of the performance budget: signature verification, ingress
# CPU per event beside the Node peer, the worker's drain on the embedded
# backend, the latency model (A, B) and the replay (D), and the requests and
# DynamoDB write units per event counted against moto (C), and an erasure's
# scan of a 100,000-item ledger (time on moto, read units as billed).
bench: release-build $(MOTO_STAMP)
	$(CARGO) bench -p hookline-signature
	$(CARGO) bench -p hookline-testkit --bench ingress_load
	$(CARGO) bench -p hookline-testkit --bench worker_drain
	$(CARGO) bench -p hookline-testkit --bench thin_rate
	$(CARGO) bench -p hookline-testkit --bench latency_model
	@endpoint=$$(VENV=$(VENV) scripts/moto.sh start) || exit 1; \
	AWS_ENDPOINT_URL=$$endpoint $(LOCAL_AWS_ENV) RUST_LOG=warn BENCH_PART=C $(CARGO) bench -p hookline-testkit --bench latency_model \
	  && AWS_ENDPOINT_URL=$$endpoint $(LOCAL_AWS_ENV) $(CARGO) bench -p hookline-testkit --bench erase_scan; \
	rc=$$?; scripts/moto.sh stop; exit $$rc
