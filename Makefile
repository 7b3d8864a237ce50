# Quick start: `make run` (the main job on the embedded default model) and `make test` (the test suite).
# Both create ./.venv on first use. TORCH_SPEC pins the CPU-usable torch/torchvision pair that installs from this
# kind of machine's local wheel store; on your own GPU machine, install into your environment with
# `pip install -e '.[test]'` instead and keep your torch.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=

.PHONY: install run test gate gate-baseline bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet $(TORCH_SPEC)
	$(VENV)/bin/pip install --quiet -e '.[test]'
	$(VENV)/bin/python tools/install_hpsv2.py  # the HPSv2 parity test's reference package (see the script)
	$(VENV)/bin/python tools/install_imagereward.py  # image-reward in its own overlay (see the script)
	touch $@

install: $(VENV)/.installed

run: $(VENV)/.installed
	$(VENV)/bin/harness run --method hierarchicalprune --suite full

test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# The regression gate CI runs after the tests: a reduced geneval-shapes run of the reference model, checked against
# the committed baseline. The tolerance allows for float differences between CPUs flipping a few of its 120 verdicts.
GATE_DIR ?= .gate
GATE_RUN = run --model reference --suite geneval-shapes --limit 60 --no-progress --cache-dir $(GATE_DIR)/cache
gate: $(VENV)/.installed
	rm -rf $(GATE_DIR)
	$(VENV)/bin/harness $(GATE_RUN) --output-dir $(GATE_DIR)/runs
	$(VENV)/bin/harness check $(GATE_DIR)/runs/*/results.json --baseline results/ci-baseline/results.json \
		--max-drop geneval-shapes/overall=0.05 --max-drop geneval-shapes/correct_images=0.05

# Rewrite the committed baseline (after a change that is meant to move the scores, e.g. new reference weights).
gate-baseline: $(VENV)/.installed
	rm -rf $(GATE_DIR) results/ci-baseline
	$(VENV)/bin/harness $(GATE_RUN) --output-dir $(GATE_DIR)/runs
	mkdir -p results/ci-baseline
	cp $(GATE_DIR)/runs/*/results.json $(GATE_DIR)/runs/*/samples.jsonl results/ci-baseline/

bench: $(VENV)/.installed
	$(VENV)/bin/python benchmarks/bench_generation.py

clean:
	rm -rf $(VENV) .tox .pytest_cache $(GATE_DIR)
