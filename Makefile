# Set-up and the two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint bench chromium

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/landsight demo --overwrite

# Headless Chromium for the map / report tests (Debian's package; skipped there when it cannot be installed).
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ; } || \
		echo "chromium not installed: browser tests will be skipped"

test: $(VENV)/.installed chromium
	$(PY) -m pytest

lint: $(VENV)/.installed
	$(PY) -m ruff check src tests benchmarks

bench: $(VENV)/.installed
	$(PY) benchmarks/featurize.py
	$(PY) benchmarks/accuracy.py
