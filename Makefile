# Every target bootstraps .venv itself: on a fresh machine `make serve` and `make test`
# are the whole set-up.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.kora-installed
HOST ?= 127.0.0.1
PORT ?= 8787
DATA ?= kora-data
ARGS ?=

.PHONY: test lint typecheck unit serve bench demo soak clean

# The venv is (re)built when it is missing or older than pyproject.toml.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	@$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

test: lint unit

lint: $(STAMP)
	$(VENV)/bin/ruff check kora actors tests bench
	$(VENV)/bin/ruff format --check kora actors tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

unit: $(STAMP)
	@# coverage starts before pytest loads its plugins (kora's own pytest11 plugin imports
	@# kora and actors), so import-time lines are counted too.
	$(VENV)/bin/coverage run -m pytest $(ARGS)
	@echo "== coverage of actors/"
	$(VENV)/bin/coverage report --include='actors/*' --fail-under=95
	@echo "== coverage of kora/"
	$(VENV)/bin/coverage report --include='kora/*' | tail -n 1

serve: $(STAMP)
	@mkdir -p $(DATA)
	$(VENV)/bin/kora serve --host $(HOST) --port $(PORT) --db $(DATA)/server.db $(ARGS)

bench: $(STAMP)
	@$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	$(PY) -m bench $(ARGS)

demo: $(STAMP)
	$(VENV)/bin/kora demo $(ARGS)

soak: $(STAMP)
	KORA_SIM_SEEDS=$${KORA_SIM_SEEDS:-5000} $(VENV)/bin/pytest -k simulation $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage htmlcov
