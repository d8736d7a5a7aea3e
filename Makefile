# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# A local wheel directory (CPU torch lives there on these machines) is used when present.
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
PIP    := $(BIN)/pip install --disable-pip-version-check -q $(FIND_LINKS)

.PHONY: run test install install-test bench eval clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) -e .
	touch $@

# torch is installed first and pinned so that sentence-transformers never pulls a CUDA build.
$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(PIP) "torch==2.13.0"
	$(PIP) -e ".[st,test]"
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

run: install
	$(BIN)/yilian db upgrade
	$(BIN)/yilian bootstrap
	$(BIN)/yilian serve

test: install-test
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench: install-test
	$(BIN)/python bench/bench_knowledge.py

eval: install
	$(BIN)/yilian eval --questions tests/data/dev.jsonl

clean:
	rm -rf $(VENV) var .pytest_cache
