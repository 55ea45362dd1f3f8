# BitEx developer commands. `make run` and `make test` are the two that matter;
# see README.md. Everything installs itself on first use and is idempotent.

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV  := .venv
BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed
# The service runner is stdlib-only: it uses the venv's python when there is one
# (which can also check an external MySQL's credentials), else the system python3.
PY = $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)

.PHONY: help venv up down status lint test run replay bench manifests clean

help:
	@echo "make run      install what is missing, start the services, print the endpoints"
	@echo "make test     install, start the services, lint, run every test"
	@echo "make up       start the local Kafka, MySQL and Redis (idempotent)"
	@echo "make down     stop the local services BitEx started (idempotent)"
	@echo "make status   show what answers where"
	@echo "make lint     ruff check, ruff format --check, mypy --strict"
	@echo "make replay   audit: replay the whole log, check it, compare the read models"
	@echo "make bench    run every benchmark (make bench-<name> runs one)"
	@echo "make manifests  validate the Kubernetes manifests, compose file and Dockerfile offline"
	@echo "make clean    make down, then delete .bitex/ and .venv/"

venv: $(STAMP)

$(STAMP): pyproject.toml
	@python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	  || { echo "BitEx needs Python 3.11 or newer as python3"; exit 1; }
	@python3 -c 'import ensurepip' 2>/dev/null \
	  || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	       && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv; } \
	  || { echo "python3 cannot create virtualenvs: install python3-venv"; exit 1; }
	python3 -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -e '.[dev]'
	@touch $@

up: venv
	$(PY) -m infra.services up
	$(BIN)/bitex migrate

down:
	$(PY) -m infra.services down

status:
	@$(PY) -m infra.services status

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: venv up lint
	$(BIN)/pytest

run: venv up
	@$(BIN)/bitex run

replay: venv up
	$(BIN)/bitex replay

bench: venv up
	@shopt -s nullglob; benches=(bench/bench_*.py); \
	if [ $${#benches[@]} -eq 0 ]; then echo "no benchmarks yet (bench/bench_*.py)"; exit 0; fi; \
	for b in "$${benches[@]}"; do \
	  name=$$(basename $$b .py); echo "== $$name"; \
	  $(BIN)/python -m bench.$$name || exit 1; \
	done

# Offline: no services, no cluster (tests/unit/test_manifests.py; `make test` runs it too).
manifests: venv
	$(BIN)/pytest -q tests/unit/test_manifests.py

bench-%: venv up
	$(BIN)/python -m bench.bench_$*

clean: down
	rm -rf .bitex $(VENV)
