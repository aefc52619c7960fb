"""`skyhaul k8s forward`: port-forwards through the API server to a ready pod behind a Service.

Not `kubectl port-forward`: that sticks to the one pod it picked, and a restarted pod ends the
forward; here every connection opens a fresh stream to a pod that is ready at that moment, so a
long `forward --all` (as `make e2e-kind` runs it) survives pod restarts. Not to be confused with
the terminal's relays (runtime.settings.Forward): these are port-forward plans of the CLI.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from skyhaul.cli.k8s.api import (
    COMPONENT_LABEL,
    DATA_CENTER_LABEL,
    EXIT_OK,
    REGION_LABEL,
    Clients,
    K8sError,
    label_selector,
    resolve,
    selector_of,
)
from skyhaul.cli.k8s.status import pod_report
from skyhaul.runtime.services import SERVICES

# `forward --all` forwards each service's registry port (runtime/services.py) to the same local
# port (plus an offset); these components have a gRPC Service of their own (the terminal's port
# is on its data center's Service), in the order `forward --all` lists them.
GRPC_COMPONENTS = ("orbit", "links", "region", "mdc")
# Local ports of a second, third, ... region or data center: the first one's port + 100, + 200, ...
INSTANCE_PORT_STRIDE = 100


@dataclass(frozen=True)
class PortSpec:
    local: int
    remote: int


def parse_port_spec(text: str) -> PortSpec:
    """`LOCAL:REMOTE` or `PORT` (the same on both sides), as kubectl port-forward takes them."""
    match = re.fullmatch(r"(?:(\d+):)?(\d+)", text.strip())
    if not match:
        raise K8sError(f"port {text!r}: expected LOCALPORT:REMOTEPORT or PORT, e.g. 50052:50052")
    local, remote = int(match.group(1) or match.group(2)), int(match.group(2))
    for port in (local, remote):
        if not 0 < port < 65536:
            raise K8sError(f"port {text!r}: {port} is outside 1-65535")
    return PortSpec(local=local, remote=remote)


def find_service(services: Sequence[Any], name: str) -> Any:
    """The Service a user means by `name`: its full name, its name without the release prefix
    (`links`, `region-westus2`, `jaeger`), or its component when only one Service has it."""
    for matcher in (
        lambda s: s.metadata.name == name,
        lambda s: s.metadata.name.endswith(f"-{name}"),
        lambda s: (s.metadata.labels or {}).get(COMPONENT_LABEL) == name,
    ):
        found = [s for s in services if matcher(s)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            names = ", ".join(sorted(s.metadata.name for s in found))
            raise K8sError(f"service {name!r} is ambiguous: {names}; give the full name or --release")
    available = ", ".join(sorted(s.metadata.name for s in services)) or "none"
    raise K8sError(f"no Skyhaul service {name!r}; available: {available}")


def service_port(service: Any, port: int) -> Any:
    for candidate in service.spec.ports or []:
        if candidate.port == port:
            return candidate
    ports = ", ".join(f"{p.port} ({p.name})" for p in service.spec.ports or [])
    raise K8sError(f"service {service.metadata.name} has no port {port}; its ports: {ports}")


def container_port(service_port_obj: Any, pod: Any) -> int:
    """The pod port a Service port sends to: its targetPort, resolved by name when it is one."""
    target = service_port_obj.target_port
    if target is None:
        return service_port_obj.port
    if isinstance(target, int) or str(target).isdigit():
        return int(target)
    containers = list(pod.spec.containers) + list(pod.spec.init_containers or [])
    for container in containers:
        for declared in container.ports or []:
            if declared.name == target:
                return declared.container_port
    raise K8sError(f"pod {pod.metadata.name} declares no container port named {target!r}")


def pick_ready_pod(core: Any, namespace: str, service: Any) -> Any:
    """A Running, Ready pod behind the Service (the first by name, so the choice is stable)."""
    selector = selector_of(service.spec.selector)
    if not selector:
        raise K8sError(f"service {service.metadata.name} has no selector; nothing to forward to")
    pods = sorted(
        core.list_namespaced_pod(namespace, label_selector=selector).items, key=lambda p: p.metadata.name
    )
    for pod in pods:
        if pod_report(pod).ready:
            return pod
    states = "; ".join(f"{r.name}: {r.reason}" for r in map(pod_report, pods)) or "no pods"
    raise K8sError(f"no ready pod behind service {service.metadata.name} ({states})")


@dataclass(frozen=True)
class PortForwardPlan:
    service: str  # Service name
    label: str  # what `skyhaul status --target` calls it: orbit, region-westus2, terminal-mdc-x
    service_port: int
    local_port: int
    env_var: str  # SKYHAUL_*_ADDR for the first instance of a component, else ""


def plan_all(services: Sequence[Any], port_offset: int) -> list[PortForwardPlan]:
    """The standard set: every gRPC port of every Skyhaul service on a predictable local port.

    The first region gets 50053, the next 50153, 50253, ... (likewise for data centers and their
    terminals); all shifted by port_offset so they can sit beside a local `skyhaul up`.
    """
    plans: list[PortForwardPlan] = []
    for component in GRPC_COMPONENTS:
        members = [s for s in services if (s.metadata.labels or {}).get(COMPONENT_LABEL) == component]
        members.sort(key=lambda s: (_instance_id(s), s.metadata.name))
        for index, service in enumerate(members):
            instance = _instance_id(service)
            for port in service.spec.ports or []:
                kind = "terminal" if port.name == "terminal" else component
                if kind not in SERVICES or port.port != SERVICES[kind].port:
                    continue
                plans.append(
                    PortForwardPlan(
                        service=service.metadata.name,
                        label=f"{kind}-{instance}" if instance else kind,
                        service_port=port.port,
                        local_port=SERVICES[kind].port + index * INSTANCE_PORT_STRIDE + port_offset,
                        env_var=SERVICES[kind].addr_var if index == 0 else "",
                    )
                )
    return plans


def _instance_id(service: Any) -> str:
    labels = service.metadata.labels or {}
    return labels.get(REGION_LABEL) or labels.get(DATA_CENTER_LABEL) or ""


def env_lines(plans: Sequence[PortForwardPlan], address: str) -> list[str]:
    """Shell `export` lines: SKYHAUL_*_ADDR of the first instances, and every target for status."""
    lines = [f"export {p.env_var}={address}:{p.local_port}" for p in plans if p.env_var]
    targets = " ".join(f"{p.label}={address}:{p.local_port}" for p in plans)
    lines.append(f'export SKYHAUL_K8S_TARGETS="{targets}"')
    return lines


def relay(local: socket.socket, remote: socket.socket, chunk: int = 65536) -> None:
    """Copies bytes both ways until both directions end, then closes both sockets.

    The local client's EOF is passed on as a half-close. The remote side has no half-close (the
    port-forward stream is simply gone), so its EOF or an error ends the local connection too.
    """

    def pump(source: socket.socket, sink: socket.socket, remote_to_local: bool) -> None:
        try:
            while data := source.recv(chunk):
                sink.sendall(data)
            failed = remote_to_local
        except OSError:
            failed = True
        # Unblocks the other direction's recv (RDWR) or passes the half-close on (WR).
        closing = (
            [(source, socket.SHUT_RDWR), (sink, socket.SHUT_RDWR)] if failed else [(sink, socket.SHUT_WR)]
        )
        for sock, how in closing:
            with contextlib.suppress(OSError):  # the peer may be gone already
                sock.shutdown(how)

    backward = threading.Thread(target=pump, args=(remote, local, True), daemon=True)
    backward.start()
    pump(local, remote, False)
    backward.join()
    for sock in (local, remote):
        with contextlib.suppress(OSError):
            sock.close()


OpenRemote = Callable[[], tuple[socket.socket, Callable[[], None]]]


class PortForwarder:
    """Accepts connections on a listening socket and relays each one over a fresh remote stream."""

    def __init__(self, listener: socket.socket, open_remote: OpenRemote, label: str, log: TextIO) -> None:
        self.listener = listener
        self.open_remote = open_remote
        self.label = label
        self.log = log
        self.connections = 0

    def serve(self, stop: threading.Event) -> None:
        self.listener.settimeout(0.25)  # so `stop` is noticed without a connection arriving
        while not stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if stop.is_set():
                    return
                raise
            conn.settimeout(None)
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True, name=f"fwd-{self.label}").start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            remote, close_remote = self.open_remote()
        except Exception as exc:  # the API said no (pod gone, RBAC): tell the user, drop the client
            print(f"{self.label}: cannot open a port-forward: {exc}", file=self.log, flush=True)
            conn.close()
            return
        try:
            relay(conn, remote)
        finally:
            close_remote()


# `kubernetes.stream.portforward` swaps the ApiClient's call_api while it opens the websocket, so
# no other call may use the same client at that moment: every API call of the forwarder holds this.
_API_LOCK = threading.Lock()


def pod_stream_opener(core: Any, namespace: str, service: Any, port: int, log: TextIO) -> OpenRemote:
    """Opens a port-forward stream to a ready pod behind `service`, picked afresh per connection
    so a restarted pod is followed."""
    from kubernetes.stream import portforward

    def open_remote() -> tuple[socket.socket, Callable[[], None]]:
        with _API_LOCK:
            pod = pick_ready_pod(core, namespace, service)
            target = container_port(service_port(service, port), pod)
            stream = portforward(
                core.connect_get_namespaced_pod_portforward, pod.metadata.name, namespace, ports=str(target)
            )
        sock = stream.socket(target)
        sock.setblocking(True)

        def close() -> None:
            error = stream.error(target)
            if error:
                print(f"{service.metadata.name}: pod {pod.metadata.name} port {target}: {error}", file=log)
            stream.close()

        return sock, close

    return open_remote


def bind_listener(address: str, port: int) -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((address, port))
    except OSError as exc:
        listener.close()
        raise K8sError(
            f"cannot listen on {address}:{port}: {exc.strerror}; is a local `skyhaul up` or another "
            "forward using it? Choose another LOCALPORT or --port-offset."
        ) from exc
    listener.listen(64)
    return listener


def run_forward(
    args: argparse.Namespace,
    clients: Clients | None = None,
    out: TextIO | None = None,
    open_stream: Callable[..., OpenRemote] | None = None,
    stop: threading.Event | None = None,
) -> int:
    out = out or sys.stdout
    clients, namespace = resolve(args, clients)
    open_stream = open_stream or pod_stream_opener
    services = clients.core.list_namespaced_service(
        namespace, label_selector=label_selector(args.release)
    ).items
    if args.all:
        if args.service or args.ports:
            raise K8sError("--all forwards the standard set; give either --all or SERVICE PORT..., not both")
        plans = plan_all(services, args.port_offset)
        if not plans:
            raise K8sError(f"no Skyhaul gRPC services in namespace {namespace!r}; is the chart installed?")
    else:
        if not args.service or not args.ports:
            raise K8sError("give SERVICE and at least one LOCALPORT:REMOTEPORT, or --all")
        service = find_service(services, args.service)
        plans = []
        for text in args.ports:
            spec = parse_port_spec(text)
            service_port(service, spec.remote)  # fail now, not at the first connection
            plans.append(PortForwardPlan(service.metadata.name, args.service, spec.remote, spec.local, ""))

    by_name = {s.metadata.name: s for s in services}
    stop = stop or threading.Event()
    forwarders: list[PortForwarder] = []
    try:
        for plan in plans:
            service = by_name[plan.service]
            with _API_LOCK:
                pod = pick_ready_pod(clients.core, namespace, service)  # fail fast with the reason
            listener = bind_listener(args.address, plan.local_port)
            opener = open_stream(clients.core, namespace, service, plan.service_port, sys.stderr)
            forwarders.append(PortForwarder(listener, opener, plan.label, sys.stderr))
            print(
                f"{args.address}:{plan.local_port} -> service {plan.service} port {plan.service_port} "
                f"(pod {pod.metadata.name})",
                file=out,
            )
        lines = env_lines(plans, args.address)
        if args.env_file:
            _write_atomically(args.env_file, "\n".join(lines) + "\n")
        print("\n".join(lines), file=out)
        print("forwarding; Ctrl-C to stop", file=out, flush=True)
        threads = [threading.Thread(target=f.serve, args=(stop,), daemon=True) for f in forwarders]
        for thread in threads:
            thread.start()
        _wait_for_stop(stop)
        for thread in threads:
            thread.join()
    finally:
        stop.set()
        for forwarder in forwarders:
            forwarder.listener.close()
    return EXIT_OK


def _wait_for_stop(stop: threading.Event) -> None:
    """Blocks until `stop` is set, Ctrl-C, or SIGTERM (how `make e2e-kind` ends the forward)."""
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        stop.set()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _write_atomically(path: str, text: str) -> None:
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(temporary, path)
