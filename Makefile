# The two set-up commands are `make demo` and `make test` (see README.md).
VENV := .venv
PY := $(VENV)/bin/python
SERVICES := airflow slurm kafka slurm-multi
# Real upstream configs, when a checkout has them beside it, are an extra corpus for the tests.
ifneq ($(wildcard ../shared/upstream-configs/flat),)
export LCLSTREAM_UPSTREAM_CONFIGS ?= $(abspath ../shared/upstream-configs)
endif

.PHONY: install install-demo demo test test-unit lint format bench services-up services-down docs \
	data-path-venv clean

# Everything: every extra, the dev tools, the Debian packages the tests use.
install: $(VENV)/.installed-full

$(VENV)/.installed-full: pyproject.toml scripts/install.sh
	bash scripts/install.sh full

# Only what the demo needs (Airflow, MPI, matplotlib): no browser, no compose, no psana.
install-demo: $(VENV)/.installed-demo

$(VENV)/.installed-demo: pyproject.toml scripts/install.sh
	bash scripts/install.sh demo

demo: install-demo
	$(PY) scripts/demo.py

# A venv with the data path only (lclstreamer, lclstream-buffer, lclstream-receive, the consumer
# libraries, MPI) and no Airflow, made with plain pip: make data-path-venv DIR=/opt/lclstream
data-path-venv:
	@[ -n "$(DIR)" ] || { echo "usage: make data-path-venv DIR=PATH [PYTHON=python3]" >&2; exit 2; }
	$(or $(PYTHON),python3) -m venv "$(DIR)"
	"$(DIR)/bin/pip" install -q "$(CURDIR)[mpi]"
	@echo "data path ready: $(DIR)/bin/lclstreamer, lclstream-buffer, lclstream-receive"

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
	$(VENV)/bin/lint-imports
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
	bash scripts/services/postgres.sh purge  # not in SERVICES (benches only); state outside too
	bash scripts/services/slurm.sh purge  # its state lives outside the checkout
	bash scripts/services/slurm-multi.sh purge
	rm -rf $(VENV) .services site
