VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run test lint typecheck bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

run: install
	$(VENV)/bin/switchboard migrate
	SWITCHBOARD_PUBLIC_URL=$${SWITCHBOARD_PUBLIC_URL:-http://$(HOST):$(PORT)} $(VENV)/bin/switchboard demo
	$(VENV)/bin/switchboard serve --host $(HOST) --port $(PORT)

# pytest exits 5 when it collects no test: that is a failure here, never a silent pass.
test: install
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check server realtime ui tests bench migrations
	$(VENV)/bin/ruff format --check server realtime ui tests bench migrations

typecheck: install
	$(VENV)/bin/mypy server realtime ui

bench: install
	$(VENV)/bin/python -m bench.run

clean:
	rm -rf $(VENV) var .pytest_cache
