# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PORT ?= 8501

.PHONY: run test test-fast bench demo-weights clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/streamlit run streamlit_app.py --server.port $(PORT)

test: $(STAMP)
	$(PY) -m pytest

# Everything but the real-model and browser tests (seconds, for quick iterations).
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow and not e2e"

bench: $(STAMP)
	$(PY) -m benchmarks.run

# Untrained weights from a preset, for machines that cannot reach the model hub.
demo-weights: $(STAMP)
	$(PY) -m da3_core.demo_weights $(or $(PRESET),da3-small)

clean:
	rm -rf $(VENV) test-artifacts .pytest_cache
