"""The chaos soak: `skyhaul up` on the seed scenario under a steady put load while a seeded fault
driver breaks it, then proof that nothing acknowledged was lost and nothing was left behind.

Run it with `make chaos` (10 minutes) or `PYTHONPATH=services:tests python -m support.chaos
--duration 300 --seed 7`; `tests/e2e/test_chaos.py` runs a short one. It lives with the test
support, not in bench/ (it measures no speed against a baseline) nor in the product (it kills
processes and mounts file systems): it is a test harness with a command line.

What happens:

1. The seed scenario (scenarios/azure-mdc-2020.yaml) is copied with a higher speed (more link
   changes per wall minute), no built-in workload (every object is ours, so each is accounted
   for) and a 100 Mbit/s uplink (the final drain stays short). As root, a small tmpfs is mounted
   as the data center's data dir so its disk can be filled and freed; it is unmounted at the end.
2. `skyhaul up` runs it. Put workers store objects of mixed sizes (log-uniform) through the mdc's
   PutObject; an object counts only once the mdc acknowledged it with our sha256. A put that got an
   error is retried later with the same key and bytes (a retried put is idempotent).
3. The fault driver, seeded, goes through every kind of fault in a shuffled order, round after
   round, at random gaps: kill -9 of each child (pids re-read from run.json), Redis killed and
   back empty (a marker key must be gone), FLUSHALL, SIGSTOP of one child for 10-30 s, the data
   center's disk full for a while, a forced terminal outage. A timed fault sometimes has a kill -9
   land in its middle (during a disk full: of the data center, or a clean SIGTERM stop). A fault is
   survived when, within a bound, every service is SERVING again, the launcher still runs and a
   new put is acknowledged.
4. At the end: faults stop, the backlog drains (bounded), every acknowledged object must be in
   the region once, whole (sha256 of the properties and of the bytes read back), the launcher must
   still be running and no child may have restarted more often than the soak stopped it; then
   the run is stopped and no process of it may be left.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import psutil
import redis
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from skyhaul.v1 import mdc_pb2, mdc_pb2_grpc, region_pb2, region_pb2_grpc, terminal_pb2, terminal_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
SEED_SCENARIO = REPO / "scenarios" / "azure-mdc-2020.yaml"
SERVICES_DIR = REPO / "services"
KEY_PREFIX = "chaos/"
FILL_FILE = "chaos-disk-fill.bin"
REDIS_MARKER = "skyhaul-chaos:marker"
DISK_FULL_ANSWER = "puts while the disk was full answered"
OK_WHILE_FULL = {"RESOURCE_EXHAUSTED", "UNAVAILABLE"}  # what a put may answer while the disk is full


@dataclasses.dataclass
class SoakConfig:
    duration_s: float = 600.0
    seed: int = 2020
    work_dir: Path = Path("runs/chaos")
    speed: float = 30.0
    uplink_mbps: float = 100.0
    put_workers: int = 2
    put_pause_s: float = 1.0  # mean pause of a put worker between puts (exponential)
    min_size: int = 512
    max_size: int = 4 << 20
    min_gap_s: float = 3.0  # between one fault's recovery and the next fault
    max_gap_s: float = 12.0
    stop_s: tuple[float, float] = (10.0, 30.0)
    disk_full_s: tuple[float, float] = (8.0, 20.0)
    outage_s: tuple[float, float] = (5.0, 20.0)
    overlap: float = 0.4  # chance that a kill -9 lands while a timed fault (stop, disk, outage) holds
    recover_timeout_s: float = 120.0
    drain_timeout_s: float = 600.0
    disk_mb: int = 1024
    fill_disk: bool = True  # needs root (tmpfs); off otherwise
    restart_delay_s: float = 0.5
    # Redis dies twice a round (kill, back empty): above `skyhaul up`'s default of 5 in 300 s, so a
    # 10-minute soak keeps killing it; the driver still stays below this limit.
    max_restarts: int = 10
    restart_window_s: float = 300.0


@dataclasses.dataclass
class Fault:
    kind: str  # "kill orbit", "redis empty", "flushall", "sigstop links", "disk full", "outage"
    at_s: float
    length_s: float = 0.0
    survived: bool = False
    note: str = ""


@dataclasses.dataclass
class SoakResult:
    faults: list[Fault]
    acknowledged: int
    verified: int
    problems: list[str]  # every broken end condition, one line each; empty when the soak passed
    restarts: dict[str, int]
    put_errors: dict[str, int]
    full_answers: dict[str, int]  # status codes of puts while the disk was full
    duration_s: float
    launcher_survived: bool
    left_processes: list[str]
    seed: int = 0
    stopped: dict[str, int] = dataclasses.field(default_factory=dict)  # label -> kills/SIGTERMs sent

    @property
    def passed(self) -> bool:
        return not self.problems


# --------------------------------------------------------------------------------- the run


def scenario_file(config: SoakConfig) -> Path:
    data = yaml.safe_load(SEED_SCENARIO.read_text())
    data["speed"] = config.speed
    for dc in data["data_centers"]:
        dc["workload"] = {"objects": 0}
        dc["terminal"] = {**dc.get("terminal", {}), "uplink_mbps": config.uplink_mbps}
    path = config.work_dir / "scenario.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def auth_metadata(run_dir: Path) -> tuple[tuple[str, str], ...]:
    """What a state-changing call sends: the run's token once `skyhaul up` writes one
    (`RUN/token`, the access control of #16); nothing while runs have none."""
    try:
        token = (run_dir / "token").read_text().strip()
    except OSError:
        return ()
    return (("authorization", f"Bearer {token}"),) if token else ()


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class UpProcess:
    """`skyhaul up` as a child, with its own run dir and state dir."""

    def __init__(self, config: SoakConfig, scenario: Path) -> None:
        self.run_dir = (config.work_dir / "run").resolve()
        self.log = config.work_dir / "skyhaul-up.log"
        env = {
            **os.environ,
            "SKYHAUL_STATE_DIR": str((config.work_dir / "state").resolve()),
            "PYTHONPATH": str(SERVICES_DIR),
        }
        env.pop("SKYHAUL_REDIS_URL", None)  # its own Redis: one we may kill
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "skyhaul.cli.main", "up", "--json",
                    "--scenario", str(scenario), "--run-dir", str(self.run_dir),
                    "--restart-delay", str(config.restart_delay_s),
                    "--max-restarts", str(config.max_restarts),
                    "--restart-window", str(config.restart_window_s),
                ],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.seen_pids: set[int] = set()

    def state(self) -> dict:
        for _ in range(20):  # written atomically, but the file may not exist yet
            with contextlib.suppress(OSError, ValueError):
                return json.loads((self.run_dir / "run.json").read_text())
            time.sleep(0.05)
        raise RuntimeError(f"cannot read {self.run_dir / 'run.json'}")

    def pid(self, label: str) -> int | None:
        state = self.state()
        return state.get("redis_pid") if label == "redis" else state["pids"].get(label)

    def note_pids(self) -> None:
        """Remember every process of the run seen so far (for the final "nothing left" check)."""
        with contextlib.suppress(psutil.Error):
            self.seen_pids.update(c.pid for c in psutil.Process(self.proc.pid).children(recursive=True))

    def wait_serving(self, timeout: float = 180.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"skyhaul up exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError, ValueError):
                state = json.loads((self.run_dir / "run.json").read_text())
                if state.get("phase") == "serving":
                    self.note_pids()
                    return state
            time.sleep(0.2)
        raise RuntimeError(f"skyhaul up not serving after {timeout:g} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> int:
        self.note_pids()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def leftovers(self, timeout: float = 20.0) -> list[str]:
        """Processes of this run still alive: ones seen as its children, or any working in its dir."""
        deadline = time.monotonic() + timeout
        while True:
            left = {pid for pid in self.seen_pids if alive(pid)}
            for proc in psutil.process_iter(["pid", "cwd", "status"]):
                with contextlib.suppress(psutil.Error, TypeError):
                    cwd = proc.info["cwd"] or ""
                    if proc.info["status"] != psutil.STATUS_ZOMBIE and cwd.startswith(str(self.run_dir)):
                        left.add(proc.info["pid"])
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        described = []
        for pid in sorted(left):
            with contextlib.suppress(psutil.Error):
                described.append(f"{pid} {' '.join(psutil.Process(pid).cmdline())[:120]}")
        return described


class DataCenterDisk:
    """A tmpfs mounted as the data center's data dir, so its disk can be filled and freed."""

    def __init__(self, path: Path, size_mb: int) -> None:
        self.path = path
        self.size_mb = size_mb
        self.mounted = False

    def mount(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size_mb}m,mode=0700", "chaos-mdc", str(self.path)],
            check=True,
            capture_output=True,
        )
        self.mounted = True

    def fill(self) -> int:
        """Take every free byte; returns how many were taken."""
        taken = 0
        with open(self.path / FILL_FILE, "wb", buffering=0) as fill:
            for chunk in (1 << 20, 4096, 1):
                block = b"\0" * chunk
                while True:
                    try:
                        taken += fill.write(block)
                    except OSError:
                        break
        return taken

    def free(self) -> None:
        (self.path / FILL_FILE).unlink(missing_ok=True)

    def unmount(self) -> None:
        if self.mounted:
            self.free()
            result = subprocess.run(["umount", str(self.path)], capture_output=True, text=True)
            if result.returncode != 0:  # a process still has it open: detach it now, freed when closed
                subprocess.run(["umount", "-l", str(self.path)], capture_output=True)
            self.mounted = False


# --------------------------------------------------------------------------------- the load


class PutLoad:
    """Put workers: objects of mixed sizes; the acknowledged ones are what the region must hold."""

    def __init__(
        self, config: SoakConfig, mdc_address: str, metadata: tuple[tuple[str, str], ...] = ()
    ) -> None:
        self.config = config
        self.rng = random.Random(config.seed * 7919 + 1)
        self.address = mdc_address
        self.metadata = metadata
        self.planned: dict[str, tuple[int, int]] = {}  # key -> (size, data seed): bytes made again on demand
        self.acknowledged: dict[str, str] = {}  # key -> sha256 hex
        self.retry: collections.deque[str] = collections.deque()
        self.errors: collections.Counter[str] = collections.Counter()
        self.full_answers: collections.Counter[str] = collections.Counter()
        self.disk_full = False
        self.last_ack = 0.0  # monotonic
        self._next = 0
        self._stop = asyncio.Event()

    def data(self, key: str) -> bytes:
        size, seed = self.planned[key]
        return random.Random(seed).randbytes(size)

    def _new_key(self) -> str:
        key = f"{KEY_PREFIX}{self._next:06d}.bin"
        self._next += 1
        low, high = math.log(self.config.min_size), math.log(self.config.max_size)
        self.planned[key] = (int(math.exp(self.rng.uniform(low, high))), self.rng.getrandbits(64))
        return key

    async def _put(self, mdc: mdc_pb2_grpc.ModularDataCenterServiceStub, key: str) -> None:
        data = self.data(key)
        digest = hashlib.sha256(data).hexdigest()

        async def messages():
            yield mdc_pb2.PutObjectRequest(header=mdc_pb2.ObjectHeader(key=key))
            for start in range(0, len(data), 256 * 1024):
                yield mdc_pb2.PutObjectRequest(data=data[start : start + 256 * 1024])

        full = self.disk_full
        try:
            reply = await mdc.PutObject(messages(), timeout=30, metadata=self.metadata)
        except grpc.aio.AioRpcError as exc:
            self.errors[exc.code().name] += 1
            if full and self.disk_full:
                self.full_answers[exc.code().name] += 1
            self.retry.append(key)
            return
        if reply.object.sha256_hex != digest:
            raise AssertionError(
                f"{key}: the mdc acknowledged sha256 {reply.object.sha256_hex}, we sent {digest}"
            )
        if full and self.disk_full:
            self.full_answers["OK"] += 1
        self.acknowledged[key] = digest
        self.last_ack = time.monotonic()

    async def worker(self) -> None:
        async with grpc.aio.insecure_channel(self.address) as channel:
            mdc = mdc_pb2_grpc.ModularDataCenterServiceStub(channel)
            while not self._stop.is_set():
                key = self.retry.popleft() if self.retry else self._new_key()
                await self._put(mdc, key)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._stop.wait(), self.rng.expovariate(1 / self.config.put_pause_s)
                    )

    def stop(self) -> None:
        self._stop.set()


# --------------------------------------------------------------------------------- the faults


async def _health(address: str) -> bool:
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=2
            )
            return reply.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.aio.AioRpcError:
        return False


def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


class FaultDriver:
    def __init__(
        self, config: SoakConfig, run: UpProcess, load: PutLoad, disk: DataCenterDisk | None
    ) -> None:
        self.config = config
        self.run = run
        self.load = load
        self.disk = disk
        self.rng = random.Random(config.seed)
        state = run.state()
        self.services: dict[str, str] = state["services"]
        self.redis_url: str = state["redis_url"]
        self.terminal = next(label for label in self.services if label.startswith("terminal-"))
        self.mdc_label = next(label for label, address in self.services.items() if address == load.address)
        self.kills: dict[str, list[float]] = collections.defaultdict(list)  # label -> monotonic kill times
        self.faults: list[Fault] = []
        self.started = time.monotonic()
        self.overlapped: list[Fault] = []  # kills that landed inside another fault, judged with it
        self.stopped_pid: int | None = None  # a SIGSTOPped process, to be continued whatever happens

    def kinds(self) -> list[str]:
        labels = [*self.services, "redis"]
        kinds = [f"kill {label}" for label in labels]
        kinds += ["redis empty", "flushall", "sigstop", "outage"]
        if self.disk is not None:
            kinds.append("disk full")
        return kinds

    def _budget_left(self, label: str) -> bool:
        """Keep clear of the crash-loop limit: it is the policy working, not a fault survived."""
        now = time.monotonic()
        recent = [t for t in self.kills[label] if now - t < self.config.restart_window_s]
        return len(recent) < self.config.max_restarts - 1

    async def run_until(self, deadline: float) -> None:
        queue: list[str] = []
        while time.monotonic() < deadline:
            await asyncio.sleep(self.rng.uniform(self.config.min_gap_s, self.config.max_gap_s))
            if time.monotonic() >= deadline or self.run.proc.poll() is not None:
                break  # over, or the run stopped by itself: nothing left to break
            if not queue:
                queue = self.kinds()
                self.rng.shuffle(queue)
            kind = queue.pop()
            fault = Fault(kind, time.monotonic() - self.started)
            self.faults.append(fault)
            try:
                await self.inject(fault)
                recovered = await self.recovered(fault)
                fault.survived = fault.survived and recovered
                for kill in self.overlapped:
                    kill.survived = kill.survived and recovered
                    self._print(kill)
                self.overlapped.clear()
            except Exception as exc:  # a fault the harness could not even apply is reported as such
                fault.survived = False
                fault.note = f"{type(exc).__name__}: {exc}"[:200]
            self._print(fault)

    def _print(self, fault: Fault) -> None:
        verdict = "survived" if fault.survived else "NOT SURVIVED"
        print(f"chaos: {fault.at_s:6.1f} s  {fault.kind:<28} {verdict}  {fault.note}", flush=True)

    async def inject(self, fault: Fault) -> None:
        kind = fault.kind
        fault.survived = True  # until something below says otherwise
        if kind.startswith("kill "):
            await self._kill(fault, kind.removeprefix("kill "))
        elif kind == "redis empty":
            client = _redis(self.redis_url)
            try:
                await asyncio.to_thread(client.set, REDIS_MARKER, "1")
                await self._kill(fault, "redis")
                if not await self._wait(lambda: self._redis_up(client), 60):
                    fault.survived, fault.note = False, "Redis not back"
                elif await asyncio.to_thread(client.exists, REDIS_MARKER):
                    fault.survived, fault.note = False, "Redis came back with its old data"
            finally:
                client.close()
        elif kind == "flushall":
            client = _redis(self.redis_url)
            try:
                await asyncio.to_thread(client.flushall)
            finally:
                client.close()
        elif kind == "sigstop":
            label = self.rng.choice([*self.services, "redis"])
            fault.kind = f"sigstop {label}"
            fault.length_s = self.rng.uniform(*self.config.stop_s)
            pid = self.run.pid(label)
            self.stopped_pid = pid
            os.kill(pid, signal.SIGSTOP)
            try:
                await self._hold(fault)
            finally:
                self.resume()
        elif kind == "disk full":
            assert self.disk is not None
            fault.length_s = self.rng.uniform(*self.config.disk_full_s)
            before = collections.Counter(self.load.full_answers)
            taken = await asyncio.to_thread(self.disk.fill)
            self.load.disk_full = True
            try:
                await self._hold(fault)
            finally:
                self.load.disk_full = False
                self.disk.free()
            answers = dict(collections.Counter(self.load.full_answers) - before)
            fault.note = f"{taken >> 20} MiB taken; puts answered {answers or 'nothing'}"
        elif kind == "outage":
            fault.length_s = self.rng.uniform(*self.config.outage_s)
            async with grpc.aio.insecure_channel(self.services[self.terminal]) as channel:
                await terminal_pb2_grpc.TerminalServiceStub(channel).SetOverrides(
                    terminal_pb2.SetOverridesRequest(
                        forced_outage=True, duration={"seconds": math.ceil(fault.length_s)}
                    ),
                    timeout=10,
                    metadata=self.load.metadata,
                )
            await self._hold(fault)
        else:
            raise ValueError(f"unknown fault {kind!r}")

    async def _hold(self, fault: Fault) -> None:
        """Keep a timed fault in force for its length; sometimes a kill -9 lands in the middle."""
        if self.rng.random() >= self.config.overlap:
            await asyncio.sleep(fault.length_s)
            return
        label = self.rng.choice([*self.services, "redis"])
        how = signal.SIGKILL
        if fault.kind == "disk full":
            # The data center restarting on its full disk is the case worth having: after a crash
            # (kill -9) or a clean stop (SIGTERM, as an eviction or a rolling restart sends).
            label, how = self.mdc_label, self.rng.choice([signal.SIGKILL, signal.SIGTERM])
        before = self.rng.uniform(0.2, 0.8) * fault.length_s
        await asyncio.sleep(before)
        verb = "kill" if how == signal.SIGKILL else "sigterm"
        kill = Fault(f"{verb} {label}", time.monotonic() - self.started, note=f"(during {fault.kind})")
        self.faults.append(kill)
        kill.survived = True
        try:
            await self._kill(kill, label, how)
        except Exception as exc:  # noqa: BLE001 - reported, the outer fault goes on
            kill.survived, kill.note = False, f"{kill.note} {type(exc).__name__}: {exc}"[:200]
        self.overlapped.append(kill)
        await asyncio.sleep(max(0.0, fault.length_s - before))

    async def _kill(self, fault: Fault, label: str, how: signal.Signals = signal.SIGKILL) -> None:
        if not self._budget_left(label):
            # Swapped for a FLUSHALL rather than provoking the crash-loop stop on purpose.
            fault.kind, fault.note = "flushall", f"(instead of kill {label}: restart budget)"
            await self.inject(fault)
            return
        victim = self.run.pid(label)
        os.kill(victim, how)
        self.kills[label].append(time.monotonic())

        def replaced() -> bool:
            pid = self.run.pid(label)
            return pid not in (None, victim) and alive(pid)

        if not await self._wait(lambda: asyncio.to_thread(replaced), self.config.recover_timeout_s):
            fault.survived, fault.note = False, f"{label} not restarted"

    def _redis_up(self, client: redis.Redis):
        async def check() -> bool:
            try:
                return bool(await asyncio.to_thread(client.ping))
            except (redis.RedisError, OSError):
                return False

        return check()

    async def _wait(self, condition, timeout: float, every: float = 0.25) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await condition():
                return True
            await asyncio.sleep(every)
        return False

    async def recovered(self, fault: Fault) -> bool:
        """Every service SERVING again, the launcher alive and a put acknowledged after the fault."""
        ended = time.monotonic()

        async def well() -> bool:
            self.run.note_pids()
            if self.run.proc.poll() is not None:
                return False
            serving = await asyncio.gather(*(_health(address) for address in self.services.values()))
            return all(serving) and self.load.last_ack > ended

        if await self._wait(well, self.config.recover_timeout_s, every=0.5):
            return True
        if self.run.proc.poll() is not None:
            fault.note += f" the run stopped (exit {self.run.proc.returncode})"
        else:
            fault.note += " not recovered in time"
        return False

    def resume(self) -> None:
        if self.stopped_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.stopped_pid, signal.SIGCONT)
            self.stopped_pid = None

    async def clear(self) -> None:
        """Undo whatever is still in force."""
        self.resume()
        if self.disk is not None:
            self.disk.free()
        self.load.disk_full = False
        with contextlib.suppress(grpc.aio.AioRpcError):
            async with grpc.aio.insecure_channel(self.services[self.terminal]) as channel:
                await terminal_pb2_grpc.TerminalServiceStub(channel).ClearOverrides(
                    terminal_pb2.ClearOverridesRequest(), timeout=10, metadata=self.load.metadata
                )


# --------------------------------------------------------------------------------- the end


async def _list_objects(mdc) -> dict[str, mdc_pb2.ObjectInfo]:
    found, token = {}, ""
    while True:
        reply = await mdc.ListObjects(
            mdc_pb2.ListObjectsRequest(prefix=KEY_PREFIX, page_token=token, max_results=1000), timeout=30
        )
        found.update((o.key, o) for o in reply.objects)
        token = reply.next_page_token
        if not token:
            return found


async def _list_blobs(region, container: str) -> list[region_pb2.BlobProperties]:
    found, token = [], ""
    while True:
        reply = await region.ListBlobs(
            region_pb2.ListBlobsRequest(container=container, prefix=KEY_PREFIX, page_token=token), timeout=30
        )
        found += reply.blobs
        token = reply.next_page_token
        if not token:
            return found


async def drain(mdc_address: str, keys: set[str], timeout: float) -> list[str]:
    """Wait until every key is SYNCED at the data center; returns the problems left at the bound."""
    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(mdc_address) as channel:
        mdc = mdc_pb2_grpc.ModularDataCenterServiceStub(channel)
        while True:
            try:
                objects = await _list_objects(mdc)
            except grpc.aio.AioRpcError as exc:
                objects, error = None, exc.code().name
            if objects is not None:
                missing = [k for k in keys if k not in objects]
                failed = [k for k in keys if k in objects and objects[k].state == mdc_pb2.SYNC_STATE_FAILED]
                pending = [k for k in keys if k in objects and objects[k].state != mdc_pb2.SYNC_STATE_SYNCED]
                backwards = [
                    k
                    for k in keys
                    if k in objects
                    and objects[k].state == mdc_pb2.SYNC_STATE_SYNCED
                    and objects[k].synced_at.ToNanoseconds() < objects[k].created_at.ToNanoseconds()
                ]
                if missing or failed:
                    return [
                        f"{len(missing)} acknowledged objects unknown to the data center (first: {missing[:3]})"
                    ] * bool(missing) + [
                        f"{len(failed)} objects FAILED to sync (first: {failed[:3]})"
                    ] * bool(failed)
                if not pending:
                    return [f"{len(backwards)} objects synced before they were created"] * bool(backwards)
            if time.monotonic() > deadline:
                what = f"{len(pending)} still not synced" if objects is not None else f"ListObjects {error}"
                return [f"backlog not drained within {timeout:g} s: {what}"]
            await asyncio.sleep(1.0)


async def verify_region(region_address: str, container: str, load: PutLoad) -> tuple[int, list[str]]:
    """Every acknowledged object in the region exactly once with its sha256 (properties and bytes)."""
    problems: list[str] = []
    async with grpc.aio.insecure_channel(region_address) as channel:
        region = region_pb2_grpc.CloudRegionServiceStub(channel)
        blobs = await _list_blobs(region, container)
        names = collections.Counter(b.name for b in blobs)
        doubled = [name for name, count in names.items() if count > 1]
        if doubled:
            problems.append(f"{len(doubled)} blobs listed more than once (first: {doubled[:3]})")
        unknown = [name for name in names if name not in load.planned]
        if unknown:
            problems.append(f"{len(unknown)} blobs nobody put (first: {unknown[:3]})")
        by_name = {b.name: b for b in blobs}
        verified, wrong = 0, []
        for key, digest in sorted(load.acknowledged.items()):
            blob = by_name.get(key)
            if blob is None:
                wrong.append(f"{key} missing")
                continue
            read = hashlib.sha256()
            async for part in region.GetBlob(
                region_pb2.GetBlobRequest(container=container, blob=key), timeout=60
            ):
                read.update(part.data)
            if blob.sha256_hex != digest or read.hexdigest() != digest or blob.size != load.planned[key][0]:
                wrong.append(f"{key} differs")
                continue
            verified += 1
        if wrong:
            problems.append(
                f"{len(wrong)} acknowledged objects not in the region whole: {', '.join(wrong[:5])}"
            )
    return verified, problems


# --------------------------------------------------------------------------------- the soak


async def soak(config: SoakConfig) -> SoakResult:
    started = time.monotonic()
    config.work_dir.mkdir(parents=True, exist_ok=True)
    config.work_dir = config.work_dir.resolve()
    scenario = scenario_file(config)
    dc = yaml.safe_load(scenario.read_text())["data_centers"][0]
    mdc_label = dc["id"] if dc["id"].startswith("mdc") else f"mdc-{dc['id']}"
    container = dc.get("sync", {}).get("container", "mdc-sync")
    disk = None
    if config.fill_disk:
        disk = DataCenterDisk(config.work_dir / "run" / "data" / mdc_label, config.disk_mb)
        disk.mount()
    run: UpProcess | None = None
    problems: list[str] = []
    driver = None
    load = None
    verified = 0
    restarts: dict[str, int] = {}
    launcher_survived = False
    left: list[str] = []
    try:
        run = UpProcess(config, scenario)
        state = await asyncio.to_thread(run.wait_serving)
        print(
            f"chaos: skyhaul up serving in {time.monotonic() - started:.0f} s (run dir {run.run_dir})",
            flush=True,
        )
        load = PutLoad(config, state["services"][mdc_label], auth_metadata(run.run_dir))
        driver = FaultDriver(config, run, load, disk)
        workers = [asyncio.create_task(load.worker()) for _ in range(config.put_workers)]
        try:
            await driver.run_until(started + config.duration_s)
        finally:
            await driver.clear()
            load.stop()
            await asyncio.gather(*workers, return_exceptions=True)
        if run.proc.poll() is None:
            print(f"chaos: faults over; draining {len(load.acknowledged)} acknowledged objects", flush=True)
            problems += await drain(
                state["services"][mdc_label], set(load.acknowledged), config.drain_timeout_s
            )
            region_label = next(label for label in state["services"] if label.startswith("region-"))
            verified, found = await verify_region(state["services"][region_label], container, load)
            problems += found
        launcher_survived = run.proc.poll() is None
        if not launcher_survived:
            problems.append(f"the run stopped by itself (exit {run.proc.returncode}): {run.log_tail(5)}")
        restarts = run.state().get("restarts", {})
        for label, count in sorted(restarts.items()):
            stopped = len(driver.kills.get(label, ()))
            if count > stopped:
                problems.append(
                    f"{label} restarted {count} times but was stopped {stopped} times: it died by itself "
                    f"(see {run.run_dir / ('redis' if label == 'redis' else f'logs/{label}.log')})"
                )
    finally:
        if driver is not None:
            driver.resume()
        if run is not None:
            code = await asyncio.to_thread(run.stop)
            if launcher_survived and code != 0:
                problems.append(f"skyhaul up exited {code} when stopped: {run.log_tail(5)}")
            left = await asyncio.to_thread(run.leftovers)
            if left:
                problems.append(f"{len(left)} processes left: {'; '.join(left[:3])}")
        if disk is not None:
            disk.unmount()
    faults = driver.faults if driver else []
    lost = [f"{f.kind} at {f.at_s:.0f} s ({f.note.strip()})" for f in faults if not f.survived]
    if lost:
        problems.append(f"{len(lost)} faults not survived: {'; '.join(lost[:5])}")
    if load is not None and load.full_answers:
        wrong = {code: n for code, n in load.full_answers.items() if code not in OK_WHILE_FULL | {"OK"}}
        if wrong:
            problems.append(f"{DISK_FULL_ANSWER} {wrong} (expected RESOURCE_EXHAUSTED or UNAVAILABLE)")
    return SoakResult(
        faults=faults,
        acknowledged=len(load.acknowledged) if load else 0,
        verified=verified,
        problems=problems,
        restarts=restarts,
        put_errors=dict(load.errors) if load else {},
        full_answers=dict(load.full_answers) if load else {},
        duration_s=time.monotonic() - started,
        launcher_survived=launcher_survived,
        left_processes=left,
        seed=config.seed,
        stopped={label: len(times) for label, times in driver.kills.items()} if driver else {},
    )


def report(result: SoakResult) -> str:
    rows = collections.defaultdict(lambda: [0, 0])
    for fault in result.faults:
        kind = fault.kind.split(" (")[0]
        rows[kind][0] += 1
        rows[kind][1] += fault.survived
    width = max([len(k) for k in rows] + [28])
    lines = [f"{'fault':<{width}} {'injected':>8} {'survived':>8}"]
    lines += [f"{kind:<{width}} {n:>8} {ok:>8}" for kind, (n, ok) in sorted(rows.items())]
    total, ok = len(result.faults), sum(f.survived for f in result.faults)
    lines.append(f"{'all faults':<{width}} {total:>8} {ok:>8}")
    lines.append("")
    lines.append(f"objects acknowledged {result.acknowledged}, verified in the region {result.verified}")
    lines.append(f"put errors (retried): {dict(sorted(result.put_errors.items())) or 'none'}")
    lines.append(f"puts while the disk was full: {dict(sorted(result.full_answers.items())) or 'none'}")
    lines.append(
        "restarts per service (of which stopped by the soak): "
        + ", ".join(f"{k} {n} ({result.stopped.get(k, 0)})" for k, n in sorted(result.restarts.items()))
    )
    lines.append(
        f"launcher alive until stopped: {result.launcher_survived}; processes left: {len(result.left_processes)}"
    )
    lines.append(f"duration {result.duration_s:.0f} s (seed {result.seed})")
    lines.append("PASSED" if result.passed else "FAILED:\n  " + "\n  ".join(result.problems))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--duration",
        type=float,
        default=600.0,
        help="wall seconds from the start until faults stop (default 600)",
    )
    parser.add_argument("--seed", type=int, default=2020, help="seeds the faults and the load (default 2020)")
    parser.add_argument("--work-dir", help="default runs/chaos-<time>")
    parser.add_argument("--speed", type=float, default=30.0, help="scenario speed (default 30)")
    parser.add_argument("--drain-timeout", type=float, default=600.0)
    parser.add_argument("--no-disk", action="store_true", help="no disk-full faults (needs no root)")
    args = parser.parse_args(argv)
    fill = not args.no_disk
    if fill and os.geteuid() != 0:
        print("chaos: not root: no tmpfs for the data center, so no disk-full faults", flush=True)
        fill = False
    config = SoakConfig(
        duration_s=args.duration,
        seed=args.seed,
        work_dir=Path(args.work_dir or f"runs/chaos-{time.strftime('%Y%m%d-%H%M%S')}"),
        speed=args.speed,
        drain_timeout_s=args.drain_timeout,
        fill_disk=fill,
    )
    result = asyncio.run(soak(config))
    print(report(result), flush=True)
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
