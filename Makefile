# Quick start: `make demo` and `make test`. Both create .venv/ on first use.
# `make test-fast` skips the tests marked slow (end to end: the quick demo, training on shipped data).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.saat-installed

.PHONY: test test-fast demo bench lint clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev,faiss]"
	@touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

demo: $(STAMP)
	$(VENV)/bin/saat demo

bench: $(STAMP)
	$(PY) benchmarks/bench_retrieval.py
	$(PY) benchmarks/bench_attack.py

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache .hypothesis
