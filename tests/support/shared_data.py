"""The real data under ../shared/data (TLE snapshots, traces): read in place, never copied in.

A test that needs it calls `shared_data("tle/starlink_2020-10-30.tle")`. If the file is missing the
test fails when CI=true (CI must run it: a skip there would hide a test that never ran) and is
skipped with a one-line reason otherwise (a checkout without the data next to it).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def shared_data(relative: str) -> Path:
    """The path of `relative` under the shared data directory; fail (CI) or skip if it is missing."""
    path = SHARED_DATA_DIR / relative
    if not path.exists():
        message = f"shared data {path} not found"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message}; CI=true requires it", pytrace=False)
        pytest.skip(message)
    return path
