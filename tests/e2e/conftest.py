"""End-to-end tests run against a local `skyhaul up`-style system, or, with SKYHAUL_E2E_EXTERNAL=1
(`make e2e-kind`), against a running deployment at SKYHAUL_*_ADDR: then only tests marked
`external` run, and they start nothing."""

import os

import pytest

EXTERNAL = os.environ.get("SKYHAUL_E2E_EXTERNAL") == "1"


def pytest_collection_modifyitems(config, items):
    if not EXTERNAL:
        return
    skip = pytest.mark.skip(reason="SKYHAUL_E2E_EXTERNAL=1: this test starts its own system")
    for item in items:
        if "external" not in item.keywords:
            item.add_marker(skip)
