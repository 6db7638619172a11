# Set-up and entry points. Every target creates the virtual environment first, so each one
# works on a fresh machine. TORCH picks the torch build: the default is the CPU wheel that
# this kind of machine has on disk; e.g. `make demo TORCH="torch==2.13.0 --index-url URL"`
# or TORCH=torch for a CUDA build.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.vireid-installed

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[dev,export,faiss,gpu]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vireid demo -o demo-out

test: $(STAMP)
	$(VENV)/bin/pytest tests

bench: $(STAMP)
	$(VENV)/bin/vireid bench --json bench.json

clean:
	rm -rf $(VENV) demo-out
