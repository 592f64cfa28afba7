# Quick start: `make demo` and `make test`. Both create .venv/ on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.saat-installed

.PHONY: test demo bench lint clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev,faiss]"
	@touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	@echo "saat demo is not available yet."
	@echo "When it lands it will: train a DPH hashing model (small_cnn, 32 bits) on the shipped fashion-mosaic"
	@echo "images, evaluate clean retrieval, run the mainstay attack and the baseline attacks, train SAAT and"
	@echo "ATRDH robust models, attack them again and write a report. Today only 'saat evaluate-codes' works."
	@exit 1

bench: $(STAMP)
	$(PY) benchmarks/bench_retrieval.py

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache .hypothesis
