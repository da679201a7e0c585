# Two commands do all the set-up on a fresh machine:
#   make demo   -> synthetic world -> store -> priors -> short training run
#   make test   -> the test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO ?= demo

.PHONY: install demo test clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	# compat: the repo root becomes a real sys.path entry, so `storage` is this project's package even
	# in a Dask worker, whose local directory (first on sys.path) holds dask's own `storage` folder
	$(PY) -m pip install -q -e '.[pose,onnx,s3,dev]' --config-settings editable_mode=compat
	touch $@

demo: install
	$(PY) -m pipelines demo --out $(DEMO)

test: install
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) $(DEMO)
