# callmesh — every developer entry point. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PY := .venv/bin/python
PYTEST := .venv/bin/pytest
SRC_PACKAGES := callmesh_core callmesh_devstack callmesh_sip_edge callmesh_media callmesh_routing \
	callmesh_queue callmesh_recording callmesh_notify callmesh_crm_sync callmesh_api callmesh_operator

.PHONY: help setup run test test-all bench lint protos fuzz clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: ## install what this machine lacks (Debian packages, Kafka jars, .venv); idempotent
	@./scripts/setup.sh

run: setup ## run PostgreSQL, Kafka and every service locally; Ctrl-C stops all
	@$(PY) -m callmesh_devstack run

test: setup ## run the test suite (slow suites excluded; see test-all)
	@$(PYTEST) -m "not slow" -q

test-all: setup ## run every test, including the slow suites
	@$(PYTEST) -q

bench: setup ## run the benchmarks; each prints `name: value unit` lines
	@$(PY) bench/run.py $(BENCH)

lint: setup ## ruff and mypy over the whole tree
	@.venv/bin/ruff check .
	@.venv/bin/ruff format --check .
	@.venv/bin/mypy $(addprefix -p ,$(SRC_PACKAGES))

FUZZ_SECONDS ?= 60
fuzz: setup ## fuzz the SIP, SDP and digest parsers with atheris (FUZZ_SECONDS=60)
	@mkdir -p .local/fuzz
	@cd .local/fuzz && ../../$(PY) ../../services/sip-edge/fuzz/fuzz_sip.py \
		--seconds $(FUZZ_SECONDS) --work-corpus corpus ../../services/sip-edge/tests/data/rfc4475

protos: setup ## regenerate libs/protos from protos/
	@$(PY) scripts/gen_protos.py

clean: ## stop local servers and remove .local state and caches (keeps .venv)
	-@$(PY) -m callmesh_devstack down 2>/dev/null || true
	rm -rf .local .pytest_cache .mypy_cache .ruff_cache
