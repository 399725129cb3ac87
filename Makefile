# befriend — every target bootstraps what it needs; `make serve` and `make test` work on a
# fresh machine with python3, make and the package registries.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
BUF := $(VENV)/npm/node_modules/.bin/buf
STAMP := $(VENV)/.installed
SOURCES := pyproject.toml setup.py $(wildcard core/*.pyx core/*.pxd proto/befriend/v1/*.proto)

.PHONY: help serve test install build proto check-proto lint fmt buf-lint typecheck pytest bench clean

help:
	@echo "make serve   bootstrap, migrate ./var/befriend.db and serve gRPC on 127.0.0.1:50051"
	@echo "make test    bootstrap, lint (ruff, mypy, buf), stale-codegen check, pytest (compiled + pure, SQLite + PostgreSQL)"
	@echo "make bench   run the benchmarks (prints ratios against same-run baselines)"
	@echo "make proto   regenerate protobuf/gRPC code and stubs from proto/"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Build requirements first, then the package in editable mode (builds the Cython core).
$(STAMP): $(PY) $(SOURCES)
	$(PY) -m pip install --quiet "setuptools>=69,<90" wheel "Cython>=3.0,<4" "numpy>=1.26,<3" "grpcio-tools>=1.66,<2" "mypy-protobuf>=3.6,<6"
	$(PY) -m pip install --quiet --no-build-isolation -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Rebuild the Cython extensions in place after editing a .pyx.
build: $(STAMP)
	$(PY) setup.py --quiet build_ext --inplace

$(BUF):
	mkdir -p $(VENV)/npm
	cd $(VENV)/npm && npm install --silent --no-audit --no-fund "@bufbuild/buf@^1.47"

proto: $(STAMP)
	$(PY) proto/codegen.py

check-proto: $(STAMP)
	$(PY) proto/codegen.py --check

buf-lint: $(BUF)
	cd proto && ../$(BUF) lint

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# mypy cannot follow setuptools' editable import hooks (core/ is befriend.core), so it checks
# a hard-linked mirror laid out as the installed package: build/typecheck/befriend/...
TYPECHECK := build/typecheck
typecheck: $(STAMP)
	rm -rf $(TYPECHECK) && mkdir -p $(TYPECHECK)/befriend
	cp -al core $(TYPECHECK)/befriend/core && cp -al server $(TYPECHECK)/befriend/server
	cp -al clients $(TYPECHECK)/befriend/clients && cp -al proto/befriend/v1 $(TYPECHECK)/befriend/v1
	cd $(TYPECHECK) && ../../$(BIN)/mypy --config-file ../../pyproject.toml -p befriend.core -p befriend.server -p befriend.clients
	MYPYPATH=$(TYPECHECK) $(BIN)/mypy tests benchmarks

# The suite runs twice: on the compiled core and on the pure-Python reference. Storage and
# service tests run on SQLite and PostgreSQL within each run (tests/conftest.py); with
# CI=true a missing PostgreSQL fails instead of skipping. pytest's exit code 5 (no tests)
# fails the target like any other non-zero code. The two runs go side by side (each is mostly
# one busy thread: together they use both cores of a 2-core CI machine), each into its own log
# under build/, printed whole once both have ended.
pytest: $(STAMP)
	@mkdir -p build
	@$(BIN)/pytest -q -p no:cacheprovider > build/pytest-compiled.log 2>&1 & compiled=$$!; \
	BEFRIEND_PUREPYTHON=1 $(BIN)/pytest -q -p no:cacheprovider > build/pytest-pure.log 2>&1; \
	pure=$$?; wait $$compiled; compiled=$$?; \
	echo "=== pytest on the compiled core: exit code $$compiled"; cat build/pytest-compiled.log; \
	echo "=== pytest on the pure-Python reference (BEFRIEND_PUREPYTHON=1): exit code $$pure"; \
	cat build/pytest-pure.log; \
	test $$compiled -eq 0 && test $$pure -eq 0

test: lint typecheck check-proto buf-lint pytest

serve: $(STAMP)
	$(BIN)/befriend serve

bench: $(STAMP)
	$(PY) -m benchmarks

clean:
	rm -rf build *.egg-info core/*.so core/*.c core/*.html .pytest_cache .mypy_cache .ruff_cache
