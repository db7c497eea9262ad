# The two commands: `make run` brings the stack up, `make test` runs every test.
# Everything is installed into a local venv by the project's own files.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROTOS := $(wildcard proto/campaigns/v1/*.proto)
GEN_DIR := clients/python
CLIENT := clients/python/campaign_client
TS_DIR := clients/typescript
TS_STAMP := $(TS_DIR)/node_modules/.installed
RELEASED := contract/campaigns-v1.binpb
NODE_CHECK := command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || { \
  echo "error: node and npm are needed to build and test the TypeScript client ($(TS_DIR))." >&2; \
  echo "Install Node.js 20 or newer with npm (e.g. 'apt-get install nodejs npm', or from" >&2; \
  echo "nodejs.org), then run make again." >&2; exit 1; }

.PHONY: help install run worker server test test-quick test-sqlite test-postgres test-typescript lint \
  format generate generate-typescript check-generated check-generated-typescript release-contract bench \
  clean

help:
	@echo "make run      install and start gRPC server + RQ worker (with scheduler) + Redis"
	@echo "make test     install and run the whole test suite (SQLite and PostgreSQL)"
	@echo "make test-quick  the tests not marked slow or fault, on SQLite (about a minute)"
	@echo "make lint     ruff (check, format), mypy, import contracts, buf, generated-code drift"
	@echo "make generate regenerate Python and TypeScript code from proto/"
	@echo "make release-contract  record proto/ as the released contract ($(RELEASED))"
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

server: $(STAMP)  # a developer's server: token-less calls allowed unless DEV_MODE=0
	DEV_MODE=$${DEV_MODE:-1} $(PY) -m server

worker: $(STAMP)
	$(PY) -m jobs

# The Python suites (SQLite, PostgreSQL), then the TypeScript client's: both always run.
test: $(STAMP)
	@status=0; $(PY) -m scripts.run_tests $(PYTEST_ARGS) || status=1; \
	  $(MAKE) --no-print-directory test-typescript || status=1; exit $$status

# The quick loop while working: no worker, fault-injection or other long tests (their markers,
# `slow` and `fault`, are set in the test modules; tests/conftest.py says which), SQLite only.
test-quick: $(STAMP)
	TEST_DATABASE=sqlite $(PY) -m pytest -q -n 2 -m "not slow and not fault" $(PYTEST_ARGS)

$(TS_STAMP): $(TS_DIR)/package.json $(TS_DIR)/package-lock.json
	@$(NODE_CHECK)
	cd $(TS_DIR) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# The TypeScript client: no drift from proto/, compiles, and its tests pass against a real
# server (node --test starts one: Redis and `python -m server` from the venv).
test-typescript: $(STAMP) $(TS_STAMP) check-generated-typescript
	@$(NODE_CHECK)
	cd $(TS_DIR) && npm run --silent build && node --test dist/test/*.test.js

lint: $(STAMP)
	$(VENV)/bin/ruff check server jobs scripts tests bench $(CLIENT)
	$(VENV)/bin/ruff format --check server jobs scripts tests bench $(CLIENT)
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	cd proto && ../$(VENV)/bin/buf lint && ../$(VENV)/bin/buf format -d --exit-code
	cd proto && ../$(VENV)/bin/buf breaking --against ../$(RELEASED)
	$(MAKE) check-generated

format: $(STAMP)
	$(VENV)/bin/ruff format server jobs scripts tests bench $(CLIENT)
	cd proto && ../$(VENV)/bin/buf format -w

generate: $(STAMP) generate-typescript
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m grpc_tools.protoc -I proto \
	  --python_out=$(GEN_DIR) --grpc_python_out=$(GEN_DIR) \
	  --mypy_out=$(GEN_DIR) --mypy_grpc_out=$(GEN_DIR) $(PROTOS)

# ts-proto (from npm) as a local buf plugin; see clients/typescript/buf.gen.yaml.
generate-typescript: $(STAMP) $(TS_STAMP)
	cd $(TS_DIR) && rm -rf src/gen && ../../$(VENV)/bin/buf generate --template buf.gen.yaml

check-generated-typescript: $(STAMP) $(TS_STAMP)
	@out=$$(mktemp -d) && cd $(TS_DIR) && \
	  ../../$(VENV)/bin/buf generate --template buf.gen.yaml -o $$out && \
	  if diff -r $$out/src/gen src/gen >/dev/null; then rm -rf $$out; else \
	    diff -r $$out/src/gen src/gen | head -20; rm -rf $$out; \
	    echo "$(TS_DIR)/src/gen is out of date: run 'make generate' and commit" >&2; exit 1; fi

# On a release: the contract as it stands becomes what `buf breaking` guards (make lint, tests).
release-contract: $(STAMP)
	cd proto && ../$(VENV)/bin/buf build -o ../$(RELEASED)

# Fails when the checked-in generated code does not match proto/.
check-generated: generate
	@git diff --exit-code --stat -- $(GEN_DIR)/campaigns $(TS_DIR)/src/gen || \
	  (echo "generated code is out of date: run 'make generate' and commit" && exit 1)

# BENCH="latency delivery" runs only those (module names under bench/); all of them by default.
# The email benchmark needs Postfix's smtp-sink (Debian package postfix): installed here when
# missing and we may (root with apt-get), otherwise bench/sinks.py says what to install.
bench: $(STAMP)
	@command -v smtp-sink >/dev/null || test -x /usr/sbin/smtp-sink || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null && \
	    (postfix stop >/dev/null 2>&1 || true); } || true
	$(PY) -m bench $(BENCH)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache $(TS_DIR)/node_modules $(TS_DIR)/dist
