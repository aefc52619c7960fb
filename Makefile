# Skyhaul: `make demo` runs the main job, `make test` runs the tests. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install test test-fast demo up proto proto-check lint format bench bench-orbit bench-links bench-terminal bench-sync bench-packet clean

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

install: $(STAMP) ## create .venv with every pinned dependency

test: $(STAMP) ## lint, then the whole suite, slow end-to-end tests included
	$(BIN)/ruff check services tests bench protos
	$(BIN)/python -m pytest -q --timeout=600

test-fast: $(STAMP) ## everything but the slow end-to-end tests
	$(BIN)/python -m pytest -q -m "not slow"

demo: $(STAMP) ## run the seed scenario end to end and write a report
	$(BIN)/skyhaul demo $(if $(SCENARIO),--scenario $(SCENARIO))

up: $(STAMP)
	$(BIN)/skyhaul up $(if $(SCENARIO),--scenario $(SCENARIO))

proto: $(STAMP) ## regenerate services/skyhaul/v1 from protos/
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python protos/generate.py

lint: $(STAMP)
	$(BIN)/ruff check services tests bench protos
	$(BIN)/ruff format --check services tests bench protos

format: $(STAMP)
	$(BIN)/ruff format services tests bench protos
	$(BIN)/ruff check --fix services tests bench protos

bench: bench-orbit bench-links bench-terminal bench-sync

bench-orbit: $(STAMP)
	$(BIN)/python bench/orbit.py
bench-links: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt  # the Hypatia-style baseline
	$(BIN)/python bench/links.py
bench-terminal: $(STAMP)
	$(BIN)/python bench/terminal.py
bench-sync: $(STAMP)
	$(BIN)/python bench/sync.py
bench-packet: $(STAMP)  ## packet data plane (root: namespaces, TUN; needs iperf3, ping)
	$(BIN)/python bench/packet.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache

-include deploy/k8s.mk
