# distill: the two quick-start commands (demo, test) and their helpers (install, bench, lint, docs).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install bench lint docs clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: this version is a CPU build on this machine's disk; an unpinned torch (asked for by
	# transformers/trl/peft) would pull a CUDA build of several GB
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test,docs,train]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/distill generate configs/retrieval_agent.yaml
	$(VENV)/bin/distill validate outputs/retrieval-agent/train.jsonl --config configs/retrieval_agent.yaml
	$(VENV)/bin/distill validate outputs/retrieval-agent/validation.jsonl --config configs/retrieval_agent.yaml

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) benchmarks/offline_throughput.py
	$(PY) benchmarks/index_speed.py

lint: $(STAMP)
	$(VENV)/bin/ruff check distill tests benchmarks configs
	$(VENV)/bin/mypy

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) outputs/*/ site/
