# The two set-up commands are `make demo` and `make test` (see README.md).
VENV := .venv
PY := $(VENV)/bin/python
SERVICES := airflow slurm kafka
export LCLSTREAM_UPSTREAM_CONFIGS ?= $(abspath ../shared/upstream-configs)

.PHONY: install demo test test-unit lint format bench services-up services-down docs clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/install.sh
	bash scripts/install.sh

demo: install
	$(PY) scripts/demo.py

# Installs, starts every service, runs ruff + mypy + the whole suite, always stops the services.
test: install
	@status=0; \
	$(MAKE) --no-print-directory services-up || status=$$?; \
	if [ $$status -eq 0 ]; then $(MAKE) --no-print-directory lint docs || status=$$?; fi; \
	if [ $$status -eq 0 ]; then \
	  LCLSTREAM_REQUIRE_SERVICES=1 $(PY) -m pytest -ra --durations=15 $(PYTEST_ARGS) || status=$$?; \
	fi; \
	$(MAKE) --no-print-directory services-down; \
	exit $$status

test-unit: install
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) scripts/gen_config_reference.py --check

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: install
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

services-up: install
	@for s in $(SERVICES); do \
	  start=$$(date +%s); \
	  bash scripts/services/$$s.sh start || exit 1; \
	  echo "services: $$s up in $$(( $$(date +%s) - start )) s"; \
	done

services-down:
	@for s in $(SERVICES); do bash scripts/services/$$s.sh stop || true; done

docs: install
	$(PY) scripts/gen_config_reference.py
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

clean: services-down
	rm -rf $(VENV) .services site
