# The two commands a fresh machine needs: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export VAR_DIR ?= $(CURDIR)/var

.PHONY: help run run-postgres test unit bench bench-scale fuzz lint venv broker-start broker-stop postgres-start \
	postgres-stop clean
.DEFAULT_GOAL := help

help:  ## this list of targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## /  make \1\t/' | expand -t 22

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed  ## the virtualenv .venv from pyproject.toml

run: venv  ## broker + relay + API (with the embedded projector) until Ctrl-C
	infra/run.sh

run-postgres: venv  ## the same on PostgreSQL (EVENT_STORE=postgres; cluster under var/postgres)
	EVENT_STORE=postgres infra/run.sh

test: venv  ## the whole suite, on SQLite and on PostgreSQL, against a real broker
	infra/kafka/broker.sh fetch
	infra/postgres/postgres.sh install
	infra/chromium.sh
	$(PY) -m pytest -q

unit: venv  ## unit tests only (no broker)
	$(PY) -m pytest -q tests/unit

bench-scale: venv  ## read side at 10 M events (SCALE_ARGS="-n 1000000" for fewer); var/bench-scale.json
	$(PY) -m tests.bench.scale $(SCALE_ARGS)

bench: venv  ## N registrations through the HTTP API; prints a table, writes var/bench.json
	@command -v wrk >/dev/null || { if [ "$$(id -u)" = 0 ]; then apt-get update -qq && \
	  apt-get install -y -qq wrk; else sudo -n apt-get update -qq && sudo -n apt-get install -y -qq wrk; \
	  fi; } || echo "make bench: wrk could not be installed (apt-get wrk needs root or sudo -n):" \
	  "the figures measured with wrk are skipped"
	$(PY) -m tests.bench $(BENCH_ARGS)

FUZZ_SECONDS ?= 600
fuzz: venv  ## the contract fuzzer (schemathesis, all checks) for FUZZ_SECONDS against a fresh API
	FUZZ_SECONDS=$(FUZZ_SECONDS) $(PY) -m tests.fuzz

lint: venv  ## ruff format --check, ruff check, mypy --strict
	$(VENV)/bin/ruff format --check services schemas projections tests
	$(VENV)/bin/ruff check services schemas projections tests
	$(VENV)/bin/mypy services schemas projections

broker-start:  ## start the local Kafka broker (var/kafka)
	infra/kafka/broker.sh start

broker-stop:  ## stop it, by PID
	infra/kafka/broker.sh stop

postgres-start:  ## start the local PostgreSQL cluster (var/postgres, 127.0.0.1:5433)
	infra/postgres/postgres.sh start

postgres-stop:  ## stop it, by PID
	infra/postgres/postgres.sh stop

clean:  ## stop the broker and PostgreSQL and delete var/
	infra/kafka/broker.sh stop || true
	infra/postgres/postgres.sh stop || true
	rm -rf var
