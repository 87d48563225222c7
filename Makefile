# mlpdesign: `make demo` runs the whole pipeline on built-in defaults; `make test` runs the tests.
# Both set up their own virtual environment in .venv on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEMO   := demo
N_POOL ?= 2000
N_PICK ?= 100
SEED   ?= 1

.PHONY: demo test venv lint bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# The main job: a small Zr pool through generate -> describe -> select -> write -> report.
demo: venv
	mkdir -p $(DEMO)
	$(BIN)/mlpdesign generate -n $(N_POOL) --seed $(SEED) -o $(DEMO)/pool.xyz --force

test: venv
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check mlpdesign tests benchmarks examples
	$(BIN)/ruff format --check mlpdesign tests benchmarks examples

bench: venv
	$(BIN)/python benchmarks/bench_generate.py

clean:
	rm -rf $(DEMO) .pytest_cache
