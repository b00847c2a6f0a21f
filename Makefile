# MPPO developer entry points. `make run` and `make test` install what they need first.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BUF := node_modules/.bin/buf
CODE := mppo group_svc payment_svc order_svc notification_svc gateway scripts tests bench
PYTEST_ARGS ?=

.PHONY: help install run gen check-gen contracts-baseline check-observability dashboard lifecycle fmt lint proto-lint typecheck test test-unit test-integration test-e2e clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (3.11)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

$(BUF): package.json package-lock.json
	@command -v npm >/dev/null || { apt-get update -qq && apt-get install -y -qq nodejs npm; }
	npm ci --no-audit --no-fund --silent
	touch $@

CHROMIUM := /usr/bin/chromium

$(CHROMIUM):
	@command -v apt-get >/dev/null || { echo "need Debian's chromium at $(CHROMIUM) for browser tests"; exit 1; }
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null

# Prometheus and promtool (alert rules, `mppo dev up --observability`): Debian's package
PROMETHEUS := /usr/bin/prometheus

$(PROMETHEUS):
	@command -v apt-get >/dev/null || { echo "need Debian's prometheus (and promtool) at $(PROMETHEUS)"; exit 1; }
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null

# curl: the README's walkthrough is run by a test (tests/e2e/test_readme_walkthrough.py)
CURL := /usr/bin/curl

$(CURL):
	@command -v apt-get >/dev/null || { echo "need curl at $(CURL) for the README walkthrough"; exit 1; }
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends curl ca-certificates >/dev/null

install: $(VENV)/.installed $(BUF) $(CHROMIUM) $(PROMETHEUS) $(CURL) ## create .venv, install Python and Node tooling, chromium, prometheus and curl

run: $(VENV)/.installed ## run the whole system in the foreground (Ctrl-C stops it)
	$(VENV)/bin/mppo dev up

gen: install ## regenerate Python stubs, the descriptor set and the documents drawn from proto/
	$(PY) scripts/gen_protos.py
	$(PY) -m gateway.openapi
	$(PY) scripts/gen_lifecycle.py

check-gen: install ## fail if committed generated files differ from a fresh build
	$(PY) scripts/gen_protos.py --check
	$(PY) -m gateway.openapi --check
	$(PY) scripts/gen_lifecycle.py --check

dashboard: install ## regenerate the Grafana dashboard (deploy/grafana/) from its code
	$(PY) scripts/gen_dashboard.py

lifecycle: install ## regenerate docs/lifecycle.md from the services' transition tables
	$(PY) scripts/gen_lifecycle.py

check-observability: install ## alert rules valid and unit-tested (promtool), dashboard JSON current
	promtool check rules deploy/prometheus/alerts.yml
	cd deploy/prometheus && promtool test rules alerts_test.yml
	$(PY) scripts/gen_dashboard.py --check

fmt: install ## format Python and proto files
	$(VENV)/bin/ruff format $(CODE)
	$(VENV)/bin/ruff check --fix $(CODE)
	$(BUF) format -w

lint: install proto-lint typecheck ## ruff, mypy --strict, buf lint/format/breaking
	$(VENV)/bin/ruff format --check $(CODE)
	$(VENV)/bin/ruff check $(CODE)

typecheck: install
	$(VENV)/bin/mypy --strict $(CODE)

proto-lint: install
	$(BUF) lint
	$(BUF) format -d --exit-code
	$(BUF) breaking proto --against $(CONTRACTS_BASELINE)

# The released contracts every change is compared with (`buf breaking` in proto-lint). It moves
# only on purpose: `make contracts-baseline` when a contract version is released (REF=<commit>
# to take another one than HEAD), committed with a message saying why.
CONTRACTS_BASELINE := proto/baseline.binpb
REF ?= HEAD

contracts-baseline: install ## renew proto/baseline.binpb from the committed contracts at REF (default HEAD)
	@src=$$(mktemp -d) && trap 'rm -rf "$$src"' EXIT && \
	git archive $(REF) buf.yaml proto third_party | tar -x -C "$$src" && \
	(cd "$$src" && $(CURDIR)/$(BUF) build proto --exclude-source-info -o $(CURDIR)/$(CONTRACTS_BASELINE)) && \
	echo "$(CONTRACTS_BASELINE) now holds the contracts of $$(git rev-parse --short $(REF))"

test: lint check-gen check-observability ## every check and every test tier
	$(VENV)/bin/pytest tests $(PYTEST_ARGS)

test-unit: install ## fast tests with no servers
	$(VENV)/bin/pytest tests/unit $(PYTEST_ARGS)

test-integration: install ## tests against real Postgres, Redis and NATS
	$(VENV)/bin/pytest tests/integration $(PYTEST_ARGS)

test-e2e: install ## tests through the running services
	$(VENV)/bin/pytest tests/e2e $(PYTEST_ARGS)

clean: ## stop a detached dev stack and remove local state
	-$(VENV)/bin/mppo dev down
	rm -rf .mppo
