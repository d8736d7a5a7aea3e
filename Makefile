# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
# Everything is installed from the hashed locks in requirements/ (README: "Dependencies and locks").
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# pip-audit and uv live in their own venv so that they never touch the application's dependencies.
TOOLS  := $(VENV)/tools
REQ    := requirements
# A local wheel directory (CPU torch lives there on these machines) is used when present.
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
PIP    := $(BIN)/pip install --disable-pip-version-check -q $(FIND_LINKS)
# Where torch==2.13.0+cpu is found: /opt/wheels here, else PyTorch's page of CPU/CUDA wheels.
TORCH_FIND_LINKS ?= $(if $(wildcard /opt/wheels/torch-*),/opt/wheels,https://download.pytorch.org/whl/torch/)
# Browser tests use Debian's /usr/bin/chromium; playwright must never fetch its own browsers.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1

STALE_LOCK = { echo "requirements/*.txt do not satisfy pyproject.toml: run 'make lock'" >&2; exit 1; }

.PHONY: run test install install-test audit lock bench eval clean browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# pip and setuptools come from the lock first (the venv's bundled pip may be too old to resolve
# extras such as uvicorn[standard] in --require-hashes mode), then the runtime lock, then the
# project itself without dependencies; the
# dry run (offline) fails when pyproject.toml asks for something the lock does not provide.
$(VENV)/.installed: pyproject.toml $(REQ)/build.txt $(REQ)/runtime.txt | $(BIN)/python
	$(PIP) --require-hashes -r $(REQ)/build.txt
	$(PIP) --require-hashes -r $(REQ)/runtime.txt
	$(PIP) --no-deps --no-build-isolation -e .
	$(PIP) --dry-run --no-index --no-build-isolation -e . || $(STALE_LOCK)
	touch $@

# torch is installed first, from its own lock: hash-pinned to the CPU wheel, so that pip can never
# take PyPI's CUDA build; the test lock (runtime + [st,test] extras) leaves torch out.
$(VENV)/.installed-test: pyproject.toml $(REQ)/torch.txt $(REQ)/test.txt $(VENV)/.installed
	$(PIP) --require-hashes --find-links $(TORCH_FIND_LINKS) -r $(REQ)/torch.txt
	$(PIP) --require-hashes -r $(REQ)/test.txt
	$(PIP) --dry-run --no-index --no-build-isolation -e ".[st,test]" || $(STALE_LOCK)
	touch $@

$(TOOLS)/.installed: $(REQ)/tools.txt
	test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --disable-pip-version-check -q --require-hashes -r $(REQ)/tools.txt
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

# YILIAN_DEMO=true (exported to every step) turns on the demo web chat with its identity picker
# (loopback only). Seeding the samples is idempotent and never overwrites.
run: export YILIAN_DEMO := true
run: install
	$(BIN)/yilian db upgrade
	$(BIN)/yilian bootstrap --samples
	$(BIN)/yilian serve

test: install-test $(TOOLS)/.installed browser
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)
	$(AUDIT)

# The browser tests drive Debian's Chromium (Playwright downloads no browser here). Installed
# when missing and this is a Debian machine we may install on; otherwise the tests say why they skip.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
		&& apt-get install -y -qq --no-install-recommends chromium fonts-wqy-microhei >/dev/null 2>&1; } \
		|| echo "chromium not installed: the browser tests will be skipped (apt-get install chromium)"

# Vulnerability audit of every pin in the locks (requirements/audit.py). Skipped, with one line,
# when the service cannot be reached; fails only on vulnerabilities that have a fixed release.
# AUDIT_STRICT=0 only warns; AUDIT_IGNORE="GHSA-... PYSEC-..." ignores ids (say why in the commit).
AUDIT_STRICT  ?= 1
AUDIT_IGNORE  ?=
AUDIT_TIMEOUT ?= 120
AUDIT = $(TOOLS)/bin/python $(REQ)/audit.py --timeout $(AUDIT_TIMEOUT) \
	$(if $(filter 0 no false,$(AUDIT_STRICT)),--warn-only,) $(foreach id,$(AUDIT_IGNORE),--ignore $(id)) \
	$(REQ)/build.txt $(REQ)/test.txt $(REQ)/torch.txt
audit: $(TOOLS)/.installed
	$(AUDIT)

# Regenerate the locks (needs PyPI). Existing pins are kept unless LOCK_FLAGS=--upgrade
# (or --upgrade-package NAME) is given. Universal locks: valid for Python >= 3.11 on any platform.
UV_COMPILE = $(TOOLS)/bin/uv pip compile -q --universal --python-version 3.11 --generate-hashes \
	--custom-compile-command "make lock" $(LOCK_FLAGS)
lock: $(TOOLS)/.installed
	$(UV_COMPILE) $(REQ)/build.in -o $(REQ)/build.txt
	$(UV_COMPILE) pyproject.toml -c $(REQ)/build.txt -o $(REQ)/runtime.txt
	$(UV_COMPILE) pyproject.toml --extra st --extra test -c $(REQ)/build.txt -c $(REQ)/runtime.txt \
		--find-links $(TORCH_FIND_LINKS) --override $(REQ)/torch.in --no-emit-package torch \
		-o $(REQ)/test.txt
	$(UV_COMPILE) $(REQ)/torch.in -c $(REQ)/test.txt --find-links $(TORCH_FIND_LINKS) -o $(REQ)/torch.txt
	$(UV_COMPILE) $(REQ)/tools.in -c $(REQ)/build.txt -o $(REQ)/tools.txt

bench: install-test
	$(BIN)/python bench/bench_knowledge.py

eval: install
	$(BIN)/yilian eval --questions tests/data/dev.jsonl

clean:
	rm -rf $(VENV) var .pytest_cache
