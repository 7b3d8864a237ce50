# Quick start: `make run` (the main job on the embedded default model) and `make test` (the test suite).
# Both create ./.venv on first use. TORCH_SPEC pins the CPU-usable torch/torchvision pair that installs from this
# kind of machine's local wheel store; on your own GPU machine, install into your environment with
# `pip install -e '.[test]'` instead and keep your torch.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=

.PHONY: install run test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet $(TORCH_SPEC)
	$(VENV)/bin/pip install --quiet -e '.[test]'
	$(VENV)/bin/python tools/install_hpsv2.py  # the HPSv2 parity test's reference package (see the script)
	touch $@

install: $(VENV)/.installed

run: $(VENV)/.installed
	$(VENV)/bin/harness run --suite geneval-shapes

test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed
	$(VENV)/bin/python benchmarks/bench_generation.py

clean:
	rm -rf $(VENV) .tox .pytest_cache
