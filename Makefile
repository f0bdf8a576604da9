# Two commands do all the set-up on a fresh machine:
#   make demo   -- runs the search on the built-in demo spec (runs/demo.toml)
#   make test   -- runs the test suite: the default (fast) tests, then the slow ones
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev,cluster,export]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/evomp run runs/demo.toml

# the default suite first (a failure there stops before the slow end-to-end runs), then
# the tests marked slow (pyproject.toml deselects them by default); both well within CI's
# 90 minutes on 2 cores
test: $(STAMP)
	bash .ci/ensure_postgres.sh
	$(BIN)/python -m pytest -q
	$(BIN)/python -m pytest -q -m slow

test-slow: $(STAMP)
	bash .ci/ensure_postgres.sh
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check evomp surrogates hwmodels tests benchmarks
	$(BIN)/mypy evomp surrogates hwmodels

clean:
	rm -rf $(VENV)
