# The two commands of the README. Both create ./.venv on first use (Python >= 3.11).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test lint bench clean mutants stress

$(BIN)/skycrawl: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,aws,azure,gcp,selfhosted,docker,kubernetes,sim,browser,otel]'
	@touch $@

## demo: serve the bundled demo site on 127.0.0.1 and crawl it on the embedded local stack
demo: $(BIN)/skycrawl
	$(BIN)/skycrawl demo

## test: lint, type-check and run every test (starts whatever services the tests need)
test: $(BIN)/skycrawl lint
	$(BIN)/python -m pytest

lint: $(BIN)/skycrawl
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## bench: crawl a generated 5,000-page site with skycrawl, Scrapy and Crawlee (see bench/)
bench: $(BIN)/skycrawl
	$(BIN)/python bench/crawl_bench.py

clean:
	rm -rf $(VENV) .skycrawl .pytest_cache .mypy_cache .ruff_cache

## mutants: apply named mutations to the conductor one at a time; every one must be killed
mutants: $(BIN)/skycrawl
	$(BIN)/python tests/mutants/run.py

## stress: 8 conductor instances, 1,000 crawls delivered 3 times, faults everywhere; prints the figures
stress: $(BIN)/skycrawl
	$(BIN)/python tests/unit/conductor/conductor_sim.py
