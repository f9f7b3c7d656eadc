# Two commands for a fresh machine: `make run` and `make test` (see README.md).
# A venv is created in .venv if missing. The CPU build of PyTorch is installed only when no torch
# is importable there: pass VENV_FLAGS=--system-site-packages to reuse a CUDA torch you already have.
VENV ?= .venv
VENV_FLAGS ?=
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
PIP := $(PY) -m pip install --disable-pip-version-check -q
ARGS ?=

.PHONY: run test install install-dev clean

$(PY):
	python3 -m venv $(VENV_FLAGS) $(VENV)

$(VENV)/.torch: | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) "$(TORCH_SPEC)"
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(PIP) -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.torch
	$(PIP) -e ".[dev]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: install
	$(VENV)/bin/rollsift train $(ARGS)

test: install-dev
	$(PY) -m pytest $(ARGS)

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
