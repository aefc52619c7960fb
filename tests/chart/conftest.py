"""Chart checks need a helm binary; without one every test here is skipped, saying how to get it
(and fails in CI, CI=true, where deploy/fetch-helm.sh must have provided it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from chartlib import helm_binary

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config, items):
    if helm_binary() is not None or os.environ.get("CI") == "true":
        return
    skip = pytest.mark.skip(
        reason="no helm binary on PATH or in .tools/bin: run deploy/fetch-helm.sh (CI does)"
    )
    for item in items:
        if item.path.parent == HERE:
            item.add_marker(skip)
