"""The one gate for tests that read ../shared/data: present -> the path; missing -> fail in CI, else skip."""

from __future__ import annotations

import pytest
from support import shared_data as module


def test_present_data_is_returned(tmp_path, monkeypatch) -> None:
    (tmp_path / "tle").mkdir()
    (tmp_path / "tle" / "a.tle").write_text("x")
    monkeypatch.setattr(module, "SHARED_DATA_DIR", tmp_path)
    assert module.shared_data("tle/a.tle") == tmp_path / "tle" / "a.tle"


@pytest.mark.parametrize("ci", ["true", "TRUE"])
def test_missing_data_fails_in_ci(tmp_path, monkeypatch, ci: str) -> None:
    monkeypatch.setattr(module, "SHARED_DATA_DIR", tmp_path)
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match="tle/missing.tle not found; CI=true requires it"):
        module.shared_data("tle/missing.tle")


@pytest.mark.parametrize("ci", [None, "", "false"])
def test_missing_data_skips_outside_ci_with_one_line(tmp_path, monkeypatch, ci: str | None) -> None:
    monkeypatch.setattr(module, "SHARED_DATA_DIR", tmp_path)
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception) as skipped:
        module.shared_data("tle/missing.tle")
    assert "\n" not in str(skipped.value) and "tle/missing.tle not found" in str(skipped.value)
