# herdwatch: `make demo` shows a scan of a recorded incident, `make test` runs everything.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A cache stampede recorded at 1 s resolution (see fixtures/incidents/*/expected.json).
DEMO_INCIDENT ?= fixtures/incidents/stampede_catalog_1s
FIXTURES ?= fixtures/incidents

# What the real-server tests need (tests/support/servers.py starts them). pgbench ships in
# postgresql-15 (there is no Debian package named pgbench), redis-cli and redis-benchmark in
# redis-tools. PostgreSQL's server programs live off PATH in /usr/lib/postgresql/<version>/bin:
# the shell expands that glob in system-deps' loop, so any installed version counts, and an
# unmatched pattern stays literal and counts as missing.
APT_PACKAGES := prometheus prometheus-alertmanager prometheus-node-exporter \
	prometheus-redis-exporter prometheus-postgres-exporter redis-server redis-tools \
	postgresql-15 postgresql-client-15 tmux chromium
REQUIRED_BINARIES := prometheus promtool prometheus-alertmanager prometheus-node-exporter \
	prometheus-redis-exporter prometheus-postgres-exporter redis-server redis-cli \
	redis-benchmark psql pgbench /usr/lib/postgresql/*/bin/postgres \
	/usr/lib/postgresql/*/bin/initdb /usr/lib/postgresql/*/bin/pg_ctl tmux chromium

.PHONY: venv demo lint test system-deps rules-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Editable, so the suite always runs the working tree; the wheel itself (and its built-in
# rules) is checked by tests/test_package.py. hatchling lets that test build the wheel
# without fetching a build backend.
$(VENV)/.installed: pyproject.toml cache-dist/pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q hatchling editables
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	touch $@

# Bytecode for the package, written even where PYTHONDONTWRITEBYTECODE is set (Python still
# reads it there): without it every herdwatch command compiles its ~180 modules first (about
# 0.09 s of a 0.45 s scan). Only files changed since the last run are compiled again.
venv: $(VENV)/.installed
	@$(BIN)/python -m compileall -q herdwatch >/dev/null

demo: venv
	@echo "+ herdwatch scan --replay $(DEMO_INCIDENT)"
	@# Exit 1 means "herds found": that is the point of the demo, not a failure.
	@$(BIN)/herdwatch scan --replay $(DEMO_INCIDENT) || [ $$? -eq 1 ]

system-deps:
	@missing=""; \
	for b in $(REQUIRED_BINARIES); do command -v $$b >/dev/null 2>&1 || missing="$$missing $$b"; done; \
	if [ -n "$$missing" ]; then \
		echo "missing:$$missing -- installing Debian packages"; \
		sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
		$$sudo apt-get update && \
		DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y --no-install-recommends $(APT_PACKAGES); \
	fi

# All three run even when one fails, so one run lists every lint problem.
lint: venv
	@status=0; \
	echo "+ ruff check ."; $(BIN)/ruff check . || status=1; \
	echo "+ ruff format --check ."; $(BIN)/ruff format --check . || status=1; \
	echo "+ mypy"; $(BIN)/mypy || status=1; \
	exit $$status

rules-test: venv
	$(BIN)/herdwatch rules test --fixtures $(FIXTURES)

# Two pytest workers, each taking whole test files (module-scoped servers stay in one worker):
# most tests wait on real servers, so two halve the suite on two cores (16 -> 9 min measured).
# `make test PYTEST_WORKERS=` runs it in one process.
PYTEST_WORKERS ?= -n 2 --dist loadfile

# Every step runs even when an earlier one fails, so one run shows everything that is wrong;
# the target fails if any step did. pytest goes last: its summary is the run's closing line.
test: system-deps venv
	@status=0; \
	echo "== lint"; $(MAKE) --no-print-directory lint || status=1; \
	echo "== herdwatch rules test"; $(MAKE) --no-print-directory rules-test || status=1; \
	echo "== pytest"; $(BIN)/pytest $(PYTEST_WORKERS) || status=1; \
	if [ $$status -ne 0 ]; then echo "make test: FAILED (see above)"; fi; \
	exit $$status

clean:
	rm -rf build dist .pytest_cache .mypy_cache .ruff_cache .hypothesis

# Hostile input against the `herdwatch` entry point for minutes (tests/fuzz; `make test` runs
# the same harness with a short profile).
.PHONY: fuzz
fuzz: venv
	HERDWATCH_FUZZ=long HYPOTHESIS_PROFILE=dev $(BIN)/pytest tests/fuzz -q --timeout=3600
