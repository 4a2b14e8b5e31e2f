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

.PHONY: run test test-fast coverage bench demo-weights clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	touch $(STAMP)

# Ray (the DA3_RAY_ADDRESS backend) is optional for `make run`; the suite tests it, so `make
# test` installs it.
$(RAY_STAMP): $(STAMP) requirements-ray.txt
	$(PY) -m pip install --quiet -r requirements-ray.txt
	touch $(RAY_STAMP)

run: $(STAMP)
	$(VENV)/bin/streamlit run streamlit_app.py --server.port $(PORT)

test: $(STAMP) $(RAY_STAMP)
	$(PY) -m pytest $(COV) --durations=15 $(ARGS)

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
	$(PY) -m da3_core.demo_weights $(or $(PRESET),da3-small)

clean:
	rm -rf $(VENV) test-artifacts .pytest_cache
