# The two commands: `make run` brings the stack up, `make test` runs every test.
# Everything is installed into a local venv by the project's own files.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROTOS := $(wildcard proto/campaigns/v1/*.proto)
GEN_DIR := clients/python

.PHONY: help install run worker server test test-sqlite test-postgres lint format generate check-generated bench clean

help:
	@echo "make run      install and start gRPC server + RQ worker (with scheduler) + Redis"
	@echo "make test     install and run the whole test suite (SQLite and PostgreSQL)"
	@echo "make lint     ruff, mypy, buf lint/format, generated-code drift"
	@echo "make generate regenerate Python code from proto/"
	@echo "make bench    run the benchmarks (results in BENCHMARKS.md)"

$(STAMP): pyproject.toml
	@$(PYTHON) scripts/check_python.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m scripts.run_stack

server: $(STAMP)
	$(PY) -m server

worker: $(STAMP)
	$(PY) -m jobs

test: $(STAMP)
	$(PY) -m scripts.run_tests $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check server jobs scripts tests
	$(VENV)/bin/mypy
	cd proto && ../$(VENV)/bin/buf lint && ../$(VENV)/bin/buf format -d --exit-code
	$(MAKE) check-generated

format: $(STAMP)
	$(VENV)/bin/ruff format server jobs scripts tests
	cd proto && ../$(VENV)/bin/buf format -w

generate: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m grpc_tools.protoc -I proto \
	  --python_out=$(GEN_DIR) --grpc_python_out=$(GEN_DIR) \
	  --mypy_out=$(GEN_DIR) --mypy_grpc_out=$(GEN_DIR) $(PROTOS)

# Fails when the checked-in generated code does not match proto/.
check-generated: generate
	@git diff --exit-code --stat -- $(GEN_DIR) || \
	  (echo "generated code is out of date: run 'make generate' and commit" && exit 1)

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
