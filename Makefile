# mlpdesign: `make demo` runs the whole pipeline on built-in defaults; `make test` runs the tests.
# Both set up their own virtual environment in .venv on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEMO   := demo
N_POOL ?= 2000
N_PICK ?= 100
SEED   ?= 1

.PHONY: demo test venv lint bench clean eam paper-experiment docs

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# The main job: a small Zr pool through generate -> describe -> select -> write -> report.
demo: venv eam
	mkdir -p $(DEMO)
	$(BIN)/mlpdesign generate -n $(N_POOL) --seed $(SEED) -o $(DEMO)/pool.xyz --force
	$(BIN)/mlpdesign describe $(DEMO)/pool.xyz -o $(DEMO)/pool.h5 --jobs 2 --force
	$(BIN)/mlpdesign info $(DEMO)/pool.h5
	$(BIN)/mlpdesign select $(DEMO)/pool.h5 -n $(N_PICK) -o $(DEMO)/selection.h5 --force
	$(BIN)/mlpdesign select $(DEMO)/pool.h5 -n $(N_PICK) --criterion random --seed $(SEED) -o $(DEMO)/random.h5 --force
	$(BIN)/mlpdesign write $(DEMO)/pool.xyz $(DEMO)/selection.h5 -o $(DEMO)/train.xyz --force
	$(BIN)/mlpdesign vasp $(DEMO)/train.xyz -o $(DEMO)/runs --force
	@# stand-in labels (EAM) and the paper's cross-validation, design vs random
	$(BIN)/mlpdesign write $(DEMO)/pool.xyz $(DEMO)/random.h5 -o $(DEMO)/random.xyz --force
	@if [ -f $(EAM) ]; then set -ex; \
	  $(BIN)/mlpdesign label $(DEMO)/train.xyz --eam $(EAM) -o $(DEMO)/train-labelled.xyz --force; \
	  $(BIN)/mlpdesign label $(DEMO)/random.xyz --eam $(EAM) -o $(DEMO)/random-labelled.xyz --force; \
	  $(BIN)/mlpdesign crossval OPT=$(DEMO)/train-labelled.xyz RND=$(DEMO)/random-labelled.xyz \
	    --store $(DEMO)/pool.h5 -o $(DEMO)/cv -f; \
	else echo "skipping label/crossval: $(EAM) missing (make eam)"; fi
	@# label-free quality of the design vs random designs: metrics.json + figures
	$(BIN)/mlpdesign report $(DEMO)/pool.h5 $(DEMO)/selection.h5 $(DEMO)/random.h5 --random 20 \
	  -o $(DEMO)/report --force

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

# The paper's cross-validation (section 4) with EAM labels: three seed pairs at the paper's
# descriptors; QUICK=1 for the small setting (one pair). JOBS commands (fits) at once;
# POOL=100000 for the paper's pool size; VARIANTS=stratify,maxmin,balance (the default: all three).
JOBS ?= 2
paper-experiment: venv eam
	$(BIN)/python benchmarks/paper_experiment.py $(if $(QUICK),--quick,) --jobs $(JOBS) \
	  $(if $(POOL),--pool $(POOL),) $(if $(VARIANTS),--variants $(VARIANTS),)

lint: venv
	$(BIN)/ruff check mlpdesign tests benchmarks examples
	$(BIN)/ruff format --check mlpdesign tests benchmarks examples

bench: venv
	$(BIN)/python benchmarks/bench_generate.py
	$(BIN)/python benchmarks/bench_describe.py
	$(BIN)/python benchmarks/bench_select.py
	$(BIN)/python benchmarks/bench_write.py

# The numbers in README.md and docs/ come from benchmarks/results/*.json through one script.
docs: venv
	$(BIN)/python benchmarks/make_docs.py

clean:
	rm -rf $(DEMO) .pytest_cache
