"""The chaos soak, short: `skyhaul up` on the seed scenario under a put load while a seeded driver
kill -9s every kind of child (Redis included), brings Redis back empty, FLUSHALLs it, SIGSTOPs a
child for 10-15 s, fills the data center's disk and frees it and forces a terminal outage. At the
end every acknowledged object is in the region exactly once and whole, the run never stopped by
itself and no process is left. `make chaos` runs the same soak for 10 minutes.

The data center's disk is a tmpfs mounted for the run: that needs root.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support.chaos import SoakConfig, report, soak

pytestmark = pytest.mark.slow

SEED = 16


def _need_root() -> None:
    if os.geteuid() == 0:
        return
    reason = "the chaos soak mounts a tmpfs as the data center's disk: needs root"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true)")
    pytest.skip(reason)


# One more try: on a shared 2-vCPU machine a burst of load can hold a recovery past the soak's
# 120 s survival bound (seen once while another system ran beside it); a real regression fails twice.
@pytest.mark.flaky(reruns=1)
async def test_a_short_chaos_soak_loses_nothing_acknowledged_and_leaves_nothing(tmp_path: Path) -> None:
    _need_root()
    config = SoakConfig(
        duration_s=170.0,
        seed=SEED,
        work_dir=tmp_path / "chaos",
        min_gap_s=1.0,
        max_gap_s=3.0,
        stop_s=(10.0, 15.0),
        disk_full_s=(5.0, 10.0),
        outage_s=(5.0, 10.0),
        drain_timeout_s=300.0,
    )
    result = await soak(config)
    print(report(result))
    kinds = {fault.kind.split()[0] for fault in result.faults}  # "redis" is Redis back empty
    killed = {fault.kind.removeprefix("kill ") for fault in result.faults if fault.kind.startswith("kill ")}
    # Every kind of fault happened at least once, a kill -9 of every kind of child among them.
    assert {"kill", "redis", "flushall", "sigstop", "outage", "disk"} <= kinds, report(result)
    assert {"orbit", "links", "region-westus2", "terminal-mdc-kodiak", "mdc-kodiak", "redis"} <= killed
    assert result.acknowledged > 0 and result.full_answers  # a load ran, also while the disk was full
    assert result.launcher_survived and result.left_processes == [], report(result)
    assert result.verified == result.acknowledged, report(result)
    assert all(fault.survived for fault in result.faults), report(result)
    assert result.passed, report(result)
