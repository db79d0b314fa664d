# The two commands a fresh machine needs: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export VAR_DIR ?= $(CURDIR)/var

.PHONY: run test unit bench lint venv broker-start broker-stop clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

run: venv  ## broker + relay + API (with the embedded projector) until Ctrl-C
	infra/run.sh

test: venv  ## the whole suite, against a real broker (started if none answers)
	infra/kafka/broker.sh fetch
	infra/chromium.sh
	$(PY) -m pytest -q

unit: venv
	$(PY) -m pytest -q tests/unit

bench: venv  ## N registrations through the HTTP API; prints a table, writes var/bench.json
	$(PY) -m tests.bench $(BENCH_ARGS)

lint: venv
	$(VENV)/bin/ruff format --check services schemas projections tests
	$(VENV)/bin/ruff check services schemas projections tests
	$(VENV)/bin/mypy services schemas projections

broker-start:
	infra/kafka/broker.sh start

broker-stop:
	infra/kafka/broker.sh stop

clean:
	infra/kafka/broker.sh stop || true
	rm -rf var
