# ARCNet mesh. `make demo` and `make test` create .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test test-slow bench fuzz install clean

$(STAMP): pyproject.toml setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m arcnet.cli.demo

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# Benchmarks print a table each (add --json for named figures); see bench/README.md.
bench: $(STAMP)
	$(PY) bench/transport.py
	$(PY) bench/gossip.py
	$(PY) bench/sim.py
	$(PY) bench/placement.py
	$(PY) bench/blobs.py --quick
	$(PY) bench/runtime.py
	$(PY) bench/audit.py

# Fuzz every decoder (not part of `make test`): FUZZ_INPUTS per decoder.
FUZZ_INPUTS ?= 1000000
fuzz: $(STAMP)
	@$(PY) -c "import atheris" 2>/dev/null || $(PY) -m pip install -q 'atheris>=2.3'
	$(PY) fuzz/run.py --inputs $(FUZZ_INPUTS)

clean:
	rm -rf $(VENV) build *.egg-info demo-run sim-out
