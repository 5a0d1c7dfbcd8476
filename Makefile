# hems — two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed-dev

.PHONY: demo test fuzz lint format lock bench clean

# Creates .venv with the locked dependencies (hashes checked) and the project in editable mode.
$(STAMP): pyproject.toml requirements-dev.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet --require-hashes -r requirements-dev.lock
	$(PIP) install --quiet --no-deps -e .
	touch $(STAMP)

# The simulated home (HIL rig) and the daemon, with the web page at http://127.0.0.1:8080
demo: $(STAMP)
	$(PY) -m hil.demo $(ARGS)

# Whole suite. Installs mosquitto (and chromium for the web-page tests) when missing.
# The import contracts (pyproject.toml, [tool.importlinter]) run first: a wrong import fails.
test: $(STAMP)
	bash scripts/ensure-system-deps.sh
	$(VENV)/bin/lint-imports
	$(PY) -m pytest $(PYTEST_ARGS)

# Long fuzz runs of every parser of outside input (tests/fuzz); `make test` runs them short.
# A target takes minutes at 10,000 examples: the suite's 120 s per-test timeout (which would
# interrupt hypothesis mid-example and surface as a "flaky" error) is raised for these runs.
FUZZ_EXAMPLES ?= 10000
fuzz: $(STAMP)
	HEMS_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest tests/fuzz -q -p no:cacheprovider --timeout=3600

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Re-resolve the lock files after changing dependency ranges in pyproject.toml.
lock:
	$(PIP) install --quiet uv
	$(VENV)/bin/uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes -q -o requirements.lock
	$(VENV)/bin/uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes --extra dev -q -o requirements-dev.lock

bench: $(STAMP)
	for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build dist *.egg-info
