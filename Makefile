# Skyhaul: `make demo` runs the main job, `make test` runs the tests. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install test test-fast demo up proto proto-check lint format bench bench-orbit bench-links bench-terminal bench-sync bench-packet bench-fleet report-link-model chaos clean

# .venv from requirements.lock with uv (a few times faster than pip; the version pinned in the
# lock), falling back to pip when uv cannot install. Both show their progress.
UV_VERSION := $(shell sed -n 's/^uv==//p' requirements.lock)
PIP := $(BIN)/python -m pip --disable-pip-version-check

# uv does not read pip's configuration: this prints pip's effective settings (pip.conf files and
# PIP_* variables, as `pip config list` shows them) as the variables uv reads instead.
define PIP_CONFIG_AS_UV_ENV
import shlex, subprocess, sys
listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
rank = {":env:": 2, "install": 1, "global": 0}
settings = {}
for line in listing.splitlines():
    key, _, value = line.partition("=")
    section, _, name = key.partition(".")
    if section in rank and rank[section] >= settings.get(name, (-1, ""))[0]:
        settings[name] = (rank[section], value.strip().strip("'\""))
as_uv = {
    "index-url": ("UV_DEFAULT_INDEX", " "),
    "extra-index-url": ("UV_INDEX", " "),
    "find-links": ("UV_FIND_LINKS", ","),
    "constraint": ("UV_CONSTRAINT", " "),
    "cert": ("SSL_CERT_FILE", " "),
    "default-timeout": ("UV_HTTP_TIMEOUT", " "),
}
print("export UV_INDEX_STRATEGY=unsafe-best-match")  # pip's rule: the best match across all indexes
for name, (_, value) in sorted(settings.items()):
    if name in as_uv:
        variable, separator = as_uv[name]
        print(f"export {variable}={shlex.quote(separator.join(value.split()))}")
endef
export PIP_CONFIG_AS_UV_ENV

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "==> $(VENV): installing the $$(grep -c '==' requirements.lock) packages of requirements.lock with uv $(UV_VERSION)"
	@{ $(PIP) install --quiet uv==$(UV_VERSION) \
	   && eval "$$($(BIN)/python -c "$$PIP_CONFIG_AS_UV_ENV")" \
	   && $(BIN)/uv pip install --python $(BIN)/python -r requirements.lock; } \
	 || { echo "==> uv could not install: installing with pip instead"; \
	      $(PIP) install --progress-bar on -r requirements.lock; }
	@echo "==> $(VENV): installing skyhaul itself (editable)"
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
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

report-link-model: $(STAMP) ## the link model beside each calibration trace, and its prediction cost ratio
	PYTHONPATH=services $(BIN)/python bench/report_link_model.py $(if $(PLOTS),--plots $(PLOTS))

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
bench-fleet: $(STAMP) ## fleet-scale routing: per-destination against per-source, same run
	$(BIN)/python bench/fleet.py

chaos: $(STAMP) ## chaos soak: faults under a put load, then every acknowledged object checked (root: disk-full faults)
	PYTHONPATH=$(abspath services):$(abspath tests) $(BIN)/python -m support.chaos $(if $(DURATION),--duration $(DURATION)) $(if $(SEED),--seed $(SEED)) $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache

-include deploy/k8s.mk
