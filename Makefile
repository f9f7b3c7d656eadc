# Two commands for a fresh machine: `make run` and `make test` (see README.md).
# A venv is created in .venv if missing. The CPU build of PyTorch is installed only when no torch
# is importable there: pass VENV_FLAGS=--system-site-packages to reuse a CUDA torch you already have.
VENV ?= .venv
VENV_FLAGS ?=
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
PIP := $(PY) -m pip install --disable-pip-version-check -q
ARGS ?=

.PHONY: run test test-main test-verl install install-dev clean

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
	$(VENV)/bin/rollsift train --overwrite $(ARGS)

# verl pins transformers < 5.11 and an older antlr than math-verify's, so its integration tests
# run in their own venv (.venv-verl), as a verl user's environment would be.
VERL_VENV ?= .venv-verl
VERL_PY := $(VERL_VENV)/bin/python

$(VERL_VENV)/.installed: pyproject.toml
	test -x $(VERL_PY) || python3 -m venv $(VENV_FLAGS) $(VERL_VENV)
	$(VERL_PY) -c "import torch" 2>/dev/null || $(VERL_PY) -m pip install --disable-pip-version-check -q "$(TORCH_SPEC)"
	$(VERL_PY) -m pip install --disable-pip-version-check -q -e ".[verl]" "pytest>=8" "hypothesis>=6.100"
	touch $@

test: test-main test-verl

test-main: install-dev
	$(PY) -m pytest $(ARGS)

test-verl: $(VERL_VENV)/.installed
	OMP_NUM_THREADS=1 $(VERL_PY) -m pytest -p no:cacheprovider tests/test_integration_verl.py $(ARGS)

clean:
	rm -rf $(VENV) $(VERL_VENV) build dist src/*.egg-info .pytest_cache
