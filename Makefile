VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run test lint typecheck bench clean lock

# constraints.txt pins every package CI tested: a fresh clone installs exactly that.
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

# The OpenID provider the SSO tests sign in against (npm's oidc-provider, pinned by its lock file).
tests/sso/provider/node_modules/.installed: tests/sso/provider/package-lock.json
	npm ci --prefix tests/sso/provider --no-audit --no-fund --silent
	touch $@

install: $(VENV)/.installed

run: install
	$(VENV)/bin/switchboard migrate
	SWITCHBOARD_PUBLIC_URL=$${SWITCHBOARD_PUBLIC_URL:-http://$(HOST):$(PORT)} $(VENV)/bin/switchboard demo
	$(VENV)/bin/switchboard serve --host $(HOST) --port $(PORT)

# pytest exits 5 when it collects no test: that is a failure here, never a silent pass.
test: install tests/sso/provider/node_modules/.installed
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check server realtime ui tests bench migrations
	$(VENV)/bin/ruff format --check server realtime ui tests bench migrations

typecheck: install
	$(VENV)/bin/mypy server realtime ui

bench: install
	$(VENV)/bin/python -m bench.run

# Upgrade the pins on purpose: resolve the newest versions pyproject.toml allows in a scratch venv,
# gate on the WebSocket protocol tests (realtime/wsprotocol.py leans on uvicorn and websockets
# internals), then rewrite constraints.txt. Run `make test` afterwards and commit both.
lock:
	rm -rf .venv-lock
	python3 -m venv .venv-lock
	.venv-lock/bin/python -m pip install -q --upgrade pip
	.venv-lock/bin/python -m pip install -q -e '.[dev]'
	PYTHONPATH=$(CURDIR) .venv-lock/bin/python -m pytest -q -p no:cacheprovider tests/realtime/test_wsprotocol.py
	.venv-lock/bin/python -m pip freeze --exclude-editable > constraints.txt
	rm -rf .venv-lock

clean:
	rm -rf $(VENV) var .pytest_cache
