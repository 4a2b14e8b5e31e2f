# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RAY_STAMP := $(VENV)/.installed-ray
PORT ?= 8501

# `make test` measures da3_core's line coverage (every process the tests start included: see
# .coveragerc) and prints the modules not at 100 %. ARGS passes extra pytest arguments.
COV := --cov --cov-config=.coveragerc --cov-report=term-missing:skip-covered
ARGS ?=
# The suite runs in PYTEST_WORKERS processes (pytest-xdist), a test module per unit of work
# (tests/conftest.py): much of it waits on workers, servers and browsers, so two processes
# keep a 2-core machine busy. PYTEST_WORKERS=0 runs it in this process alone.
PYTEST_WORKERS ?= 2
XDIST := -n $(PYTEST_WORKERS) --dist loadgroup

.PHONY: run test test-fast lint coverage bench demo-weights clean

# Installer: INSTALLER=auto (default) uses uv (bootstrapped from PyPI, pinned; it installs this
# project several times faster than pip: benchmarks/setup_time.md) and falls back to pip if uv
# cannot be had or fails; INSTALLER=pip forces pip. The logic is in scripts/install.sh.
# requirements.txt is the CPU-only deploy file (Community Cloud) and is not used here.
INSTALLER ?= auto
INSTALL := VENV=$(VENV) PYTHON=$(PYTHON) INSTALLER=$(INSTALLER) bash scripts/install.sh
REQS := requirements-torch.txt requirements-app.txt requirements-dev.txt

$(STAMP): $(REQS) scripts/install.sh
	$(INSTALL) $(addprefix -r ,$(REQS))
	touch $(STAMP)

# Ray (the DA3_RAY_ADDRESS backend) is optional for `make run`; the suite tests it, so `make
# test` installs it.
$(RAY_STAMP): $(STAMP) requirements-ray.txt
	$(INSTALL) -r requirements-ray.txt
	touch $(RAY_STAMP)

run: $(STAMP)
	$(VENV)/bin/streamlit run streamlit_app.py --server.port $(PORT)

test: $(STAMP) $(RAY_STAMP) lint
	$(PY) -m pytest $(XDIST) $(COV) --durations=15 $(ARGS)

# Lint, format and types (settings in pyproject.toml); `make test` runs this first.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# Everything but the real-model and browser tests (seconds, for quick iterations).
test-fast: $(STAMP) $(RAY_STAMP)
	$(PY) -m pytest -m "not slow and not e2e" $(ARGS)

# An HTML report (test-artifacts/coverage/html/index.html) of the last `make test`'s data.
coverage: $(STAMP)
	$(PY) -m coverage html --rcfile=.coveragerc -d test-artifacts/coverage/html
	@echo "open test-artifacts/coverage/html/index.html"

bench: $(STAMP) $(RAY_STAMP)
	$(PY) -m benchmarks.run

# Untrained weights from a preset, for machines that cannot reach the model hub.
demo-weights: $(STAMP)
	$(PY) -m da3_core.runs.demo_weights $(or $(PRESET),da3-small)

clean:
	rm -rf $(VENV) test-artifacts .pytest_cache
