# mlpdesign: `make demo` runs the whole pipeline on built-in defaults; `make test` runs the tests.
# Both set up their own virtual environment in .venv on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEMO   := demo
N_POOL ?= 2000
N_PICK ?= 100
SEED   ?= 1

.PHONY: demo test venv lint bench clean eam paper-experiment

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
	$(BIN)/mlpdesign describe $(DEMO)/pool.xyz -o $(DEMO)/pool.h5 --jobs 2 --force
	$(BIN)/mlpdesign info $(DEMO)/pool.h5

test: venv eam
	$(BIN)/python -m pytest -q

# Stand-in labels for label/fit/crossval: the Mendelev-Ackland Zr EAM potential from Debian's
# lammps-data package (fetched with apt-get download + dpkg -x; `apt-get update` first when the
# package lists are empty). If it cannot be fetched, only the tests that need it are skipped.
EAM     := third_party/Zr_mm.eam.fs
eam: $(EAM)

$(EAM):
	@mkdir -p third_party
	@cd third_party && rm -rf lammps-data lammps-data_*.deb && \
	  { apt-get download lammps-data >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null 2>&1 && apt-get download lammps-data >/dev/null 2>&1; }; } && \
	  dpkg -x lammps-data_*.deb lammps-data && \
	  cp lammps-data/usr/share/lammps/potentials/Zr_mm.eam.fs Zr_mm.eam.fs && \
	  rm -rf lammps-data lammps-data_*.deb && echo "fetched $@ (Debian lammps-data)" || \
	  echo "warning: could not fetch $@ (apt-get download lammps-data); tests that need it are skipped"

# The paper's cross-validation (section 4) with EAM labels; QUICK=1 for the small setting.
paper-experiment: venv eam
	$(BIN)/python benchmarks/paper_experiment.py $(if $(QUICK),--quick,)

lint: venv
	$(BIN)/ruff check mlpdesign tests benchmarks examples
	$(BIN)/ruff format --check mlpdesign tests benchmarks examples

bench: venv
	$(BIN)/python benchmarks/bench_generate.py
	$(BIN)/python benchmarks/bench_describe.py

clean:
	rm -rf $(DEMO) .pytest_cache
