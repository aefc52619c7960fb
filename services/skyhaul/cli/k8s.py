"""`skyhaul k8s`: Skyhaul on a Kubernetes cluster, through the Kubernetes API.

- `status`  every Skyhaul pod: component, phase, readiness, restarts, and why it is not ready.
- `wait`    until every Skyhaul Deployment is Available, or a timeout with a report of what is not.
- `forward` port-forwards through the API server to the pod behind a Service, so the CLI and any
            gRPC client can drive in-cluster services without a NodePort.
- `traces`  until Jaeger holds a trace that spans the given services (used by `make e2e-kind`).

The `kubernetes` package is imported inside the handlers only: it is slow to import and the rest
of the CLI must not pay for it. Every handler takes its API clients as a parameter, so tests pass
objects built from recorded API responses and no cluster is needed.

Exit codes: 0 all good; 1 something is not ready / timed out; 2 bad arguments, no kubeconfig, or
the API server cannot be reached.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TextIO

PART_OF_LABEL = "app.kubernetes.io/part-of"
INSTANCE_LABEL = "app.kubernetes.io/instance"
COMPONENT_LABEL = "app.kubernetes.io/component"
REGION_LABEL = "skyhaul/region"
DATA_CENTER_LABEL = "skyhaul/data-center"

# gRPC ports of docs/conventions.md; `forward --all` uses them as local ports (plus an offset).
STANDARD_PORTS = {"orbit": 50051, "links": 50052, "region": 50053, "mdc": 50054, "terminal": 50055}
# Services with a gRPC server, in the order `forward --all` lists them.
GRPC_COMPONENTS = ("orbit", "links", "region", "mdc")
# Local ports of a second, third, ... region or data center: the first one's port + 100, + 200, ...
INSTANCE_PORT_STRIDE = 100

EXIT_OK = 0
EXIT_NOT_READY = 1
EXIT_ERROR = 2


class K8sError(Exception):
    """A problem the user must fix (no kubeconfig, unknown service, port in use); exit code 2."""


@dataclass(frozen=True)
class Clients:
    """The API clients a handler needs: a CoreV1Api and an AppsV1Api (or test doubles)."""

    core: Any
    apps: Any


# ---------------------------------------------------------------------------------------------
# Connecting


def connect(kubeconfig: str | None, context: str | None) -> Clients:
    """Clients for the kubeconfig context (or the in-cluster service account when there is none)."""
    from kubernetes import client, config

    try:
        api_client = config.new_client_from_config(config_file=kubeconfig, context=context)
    except (config.ConfigException, OSError) as exc:
        if kubeconfig or context:
            where = (kubeconfig or "the default kubeconfig") + (f" (context {context})" if context else "")
            raise K8sError(f"cannot load {where}: {exc}") from exc
        try:
            config.load_incluster_config()
        except config.ConfigException:
            raise K8sError(
                "no Kubernetes configuration: no kubeconfig (~/.kube/config or $KUBECONFIG) and not "
                "running in a pod. Create a cluster with `make kind-up`, or pass --kubeconfig/--context."
            ) from exc
        api_client = client.ApiClient()
    return Clients(core=client.CoreV1Api(api_client), apps=client.AppsV1Api(api_client))


def default_namespace(kubeconfig: str | None, context: str | None) -> str:
    """The namespace of the kubeconfig context, as kubectl picks it; else the pod's; else default."""
    from kubernetes import config

    try:
        contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
    except (config.ConfigException, OSError):
        contexts, active = [], None
    chosen = next((c for c in contexts if c.get("name") == context), None) if context else active
    if chosen and chosen.get("context", {}).get("namespace"):
        return chosen["context"]["namespace"]
    in_pod = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
    if os.path.exists(in_pod):
        with open(in_pod, encoding="utf-8") as handle:
            return handle.read().strip() or "default"
    return "default"


def label_selector(release: str | None) -> str:
    """Selector of the Skyhaul objects, of one Helm release when given."""
    selector = f"{PART_OF_LABEL}=skyhaul"
    if release:
        selector += f",{INSTANCE_LABEL}={release}"
    return selector


def _selector_of(match_labels: dict[str, str] | None) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted((match_labels or {}).items()))


# ---------------------------------------------------------------------------------------------
# status


@dataclass(frozen=True)
class PodReport:
    name: str
    component: str
    instance_id: str  # region or data center id, "" for orbit, links, redis, jaeger
    phase: str
    ready: bool
    ready_containers: int
    containers: int
    restarts: int
    reason: str  # why the pod is not ready ("" when it is)


def _sidecar_names(pod: Any) -> set[str]:
    """Init containers that run for the pod's whole life (restartPolicy Always): native sidecars."""
    return {
        c.name for c in (pod.spec.init_containers or []) if getattr(c, "restart_policy", None) == "Always"
    }


def _container_problem(status: Any) -> str:
    state = status.state
    if (
        state is not None
        and state.waiting is not None
        and state.waiting.reason not in (None, "PodInitializing")
    ):
        message = f": {state.waiting.message}" if state.waiting.message else ""
        text = f"{status.name} {state.waiting.reason}{message}"
    elif state is not None and state.terminated is not None:
        text = f"{status.name} terminated: {state.terminated.reason} (exit {state.terminated.exit_code})"
    elif not status.ready:
        text = f"{status.name} not ready"
    else:
        return ""
    last = status.last_state.terminated if status.last_state is not None else None
    if last is not None:
        text += f"; last exit: {last.reason} (exit {last.exit_code})"
    return text


def pod_report(pod: Any) -> PodReport:
    """What a person needs to know about one pod."""
    labels = pod.metadata.labels or {}
    status = pod.status
    sidecars = _sidecar_names(pod)
    statuses = [s for s in (status.init_container_statuses or []) if s.name in sidecars]
    statuses += list(status.container_statuses or [])
    containers = len(pod.spec.containers) + len(sidecars)
    ready_containers = sum(1 for s in statuses if s.ready)
    restarts = sum(s.restart_count or 0 for s in statuses)
    conditions = {c.type: c for c in (status.conditions or [])}
    ready_condition = conditions.get("Ready")
    ready = status.phase == "Running" and ready_condition is not None and ready_condition.status == "True"
    reason = ""
    if pod.metadata.deletion_timestamp is not None:
        reason = "Terminating"
    elif not ready:
        problems = [p for p in (_container_problem(s) for s in statuses) if p]
        scheduled = conditions.get("PodScheduled")
        if status.reason:
            problems.insert(0, f"{status.reason}: {status.message or ''}".rstrip(": "))
        elif scheduled is not None and scheduled.status == "False":
            problems.insert(0, f"{scheduled.reason}: {scheduled.message}")
        reason = "; ".join(problems) or (status.phase or "Unknown")
    return PodReport(
        name=pod.metadata.name,
        component=labels.get(COMPONENT_LABEL, "?"),
        instance_id=labels.get(REGION_LABEL) or labels.get(DATA_CENTER_LABEL) or "",
        phase=status.phase or "Unknown",
        ready=ready,
        ready_containers=ready_containers,
        containers=containers,
        restarts=restarts,
        reason=reason,
    )


def pod_reports(core: Any, namespace: str, selector: str) -> list[PodReport]:
    pods = core.list_namespaced_pod(namespace, label_selector=selector).items
    reports = [pod_report(p) for p in pods if (p.metadata.labels or {}).get(COMPONENT_LABEL) != "test"]
    return sorted(reports, key=lambda r: (r.component, r.instance_id, r.name))


def format_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    table = [list(map(str, header))] + [list(map(str, row)) for row in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    lines = []
    for row in table:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def run_status(args: argparse.Namespace, clients: Clients | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    clients, namespace = _resolve(args, clients)
    selector = label_selector(args.release)
    reports = pod_reports(clients.core, namespace, selector)
    if args.json:
        print(json.dumps([asdict(r) for r in reports], indent=2), file=out)
    elif reports:
        rows = [
            (
                r.name,
                r.component,
                r.instance_id or "-",
                r.phase,
                f"{r.ready_containers}/{r.containers}",
                r.restarts,
                r.reason or "ready",
            )
            for r in reports
        ]
        print(
            format_table(("NAME", "COMPONENT", "ID", "PHASE", "READY", "RESTARTS", "STATUS"), rows), file=out
        )
    if not reports:
        print(
            f"no Skyhaul pods in namespace {namespace!r} (selector {selector}); "
            "is the chart installed there? Pass --namespace/-n or --release.",
            file=sys.stderr,
        )
        return EXIT_NOT_READY
    not_ready = [r for r in reports if not r.ready]
    if not_ready and not args.json:
        print(f"{len(not_ready)} of {len(reports)} pods not ready", file=sys.stderr)
    return EXIT_NOT_READY if not_ready else EXIT_OK


# ---------------------------------------------------------------------------------------------
# wait


@dataclass(frozen=True)
class DeploymentReport:
    name: str
    component: str
    desired: int
    available: int
    ok: bool
    reason: str  # why it is not available ("" when it is)


def deployment_report(deployment: Any) -> DeploymentReport:
    """Whether a Deployment's current revision is fully rolled out and Available, and if not why."""
    desired = deployment.spec.replicas if deployment.spec.replicas is not None else 1
    status = deployment.status
    available = status.available_replicas or 0
    updated = status.updated_replicas or 0
    total = status.replicas or 0
    conditions = {c.type: c for c in (status.conditions or [])}
    progressing = conditions.get("Progressing")
    available_condition = conditions.get("Available")
    reason = ""
    if (status.observed_generation or 0) < (deployment.metadata.generation or 0):
        reason = "the controller has not yet seen the latest spec"
    elif progressing is not None and progressing.reason == "ProgressDeadlineExceeded":
        reason = f"rollout stalled: {progressing.message}"
    elif updated < desired:
        reason = f"{updated}/{desired} pods on the current revision"
    elif total > updated:
        reason = f"{total - updated} old pods still terminating"
    elif available < desired:
        reason = f"{available}/{desired} pods available"
    elif available_condition is None or available_condition.status != "True":
        reason = (
            available_condition.message if available_condition is not None else "no Available condition yet"
        )
    return DeploymentReport(
        name=deployment.metadata.name,
        component=(deployment.metadata.labels or {}).get(COMPONENT_LABEL, "?"),
        desired=desired,
        available=available,
        ok=not reason,
        reason=reason,
    )


def _pods_of(deployment: Any, pods: Sequence[Any]) -> list[Any]:
    wanted = (deployment.spec.selector.match_labels or {}).items()
    return [p for p in pods if wanted <= (p.metadata.labels or {}).items()]


def readiness_snapshot(
    clients: Clients, namespace: str, selector: str
) -> tuple[list[DeploymentReport], dict[str, list[str]]]:
    """Reports of every Skyhaul Deployment and, for each one not available, what its pods say."""
    deployments = clients.apps.list_namespaced_deployment(namespace, label_selector=selector).items
    reports = sorted((deployment_report(d) for d in deployments), key=lambda r: r.name)
    details: dict[str, list[str]] = {}
    failing = {r.name for r in reports if not r.ok}
    if failing:
        pods = clients.core.list_namespaced_pod(namespace, label_selector=selector).items
        for deployment in deployments:
            if deployment.metadata.name in failing:
                details[deployment.metadata.name] = [
                    f"pod {report.name}: {report.reason}"
                    for report in sorted(map(pod_report, _pods_of(deployment, pods)), key=lambda r: r.name)
                    if not report.ready
                ]
    return reports, details


def wait_for_deployments(
    clients: Clients,
    namespace: str,
    selector: str,
    timeout_s: float,
    poll_s: float = 2.0,
    out: TextIO | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Polls until every Deployment matching `selector` is Available; reports progress on change."""
    out = out or sys.stdout
    start = clock()
    last_summary = None
    while True:
        reports, details = readiness_snapshot(clients, namespace, selector)
        waiting = [r for r in reports if not r.ok]
        if reports and not waiting:
            print(
                f"all {len(reports)} Skyhaul deployments available in namespace {namespace!r} "
                f"({clock() - start:.0f} s)",
                file=out,
            )
            return True
        if not reports:
            summary = f"no Skyhaul deployments in namespace {namespace!r} (selector {selector}) yet"
        else:
            names = ", ".join(f"{r.name} ({r.reason})" for r in waiting)
            summary = (
                f"{len(reports) - len(waiting)}/{len(reports)} deployments available; waiting for {names}"
            )
        if summary != last_summary:
            print(f"waiting: {summary}", file=out)
            last_summary = summary
        if clock() - start >= timeout_s:
            print(f"timed out after {timeout_s:.0f} s; not available:", file=out)
            if not reports:
                print(f"  {summary}: is the chart installed? (helm list -n {namespace})", file=out)
            for report in waiting:
                print(f"  deployment {report.name}: {report.reason}", file=out)
                for line in details.get(report.name, []):
                    print(f"    {line}", file=out)
            return False
        sleep(poll_s)


def run_wait(args: argparse.Namespace, clients: Clients | None = None, out: TextIO | None = None) -> int:
    clients, namespace = _resolve(args, clients)
    ok = wait_for_deployments(
        clients,
        namespace,
        label_selector(args.release),
        timeout_s=args.timeout,
        poll_s=args.interval,
        out=out,
    )
    return EXIT_OK if ok else EXIT_NOT_READY


# ---------------------------------------------------------------------------------------------
# forward


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
    selector = _selector_of(service.spec.selector)
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
class ForwardPlan:
    service: str  # Service name
    label: str  # what `skyhaul status --target` calls it: orbit, region-westus2, terminal-mdc-x
    service_port: int
    local_port: int
    env_var: str  # SKYHAUL_*_ADDR for the first instance of a component, else ""


def plan_all(services: Sequence[Any], port_offset: int) -> list[ForwardPlan]:
    """The standard set: every gRPC port of every Skyhaul service on a predictable local port.

    The first region gets 50053, the next 50153, 50253, ... (likewise for data centers and their
    terminals); all shifted by port_offset so they can sit beside a local `skyhaul up`.
    """
    plans: list[ForwardPlan] = []
    for component in GRPC_COMPONENTS:
        members = [s for s in services if (s.metadata.labels or {}).get(COMPONENT_LABEL) == component]
        members.sort(key=lambda s: (_instance_id(s), s.metadata.name))
        for index, service in enumerate(members):
            instance = _instance_id(service)
            for port in service.spec.ports or []:
                kind = "terminal" if port.name == "terminal" else component
                if kind not in STANDARD_PORTS or port.port != STANDARD_PORTS[kind]:
                    continue
                plans.append(
                    ForwardPlan(
                        service=service.metadata.name,
                        label=f"{kind}-{instance}" if instance else kind,
                        service_port=port.port,
                        local_port=STANDARD_PORTS[kind] + index * INSTANCE_PORT_STRIDE + port_offset,
                        env_var=f"SKYHAUL_{kind.upper()}_ADDR" if index == 0 else "",
                    )
                )
    return plans


def _instance_id(service: Any) -> str:
    labels = service.metadata.labels or {}
    return labels.get(REGION_LABEL) or labels.get(DATA_CENTER_LABEL) or ""


def env_lines(plans: Sequence[ForwardPlan], address: str) -> list[str]:
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


class Forwarder:
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
    clients, namespace = _resolve(args, clients)
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
            plans.append(ForwardPlan(service.metadata.name, args.service, spec.remote, spec.local, ""))

    by_name = {s.metadata.name: s for s in services}
    stop = stop or threading.Event()
    forwarders: list[Forwarder] = []
    try:
        for plan in plans:
            service = by_name[plan.service]
            with _API_LOCK:
                pod = pick_ready_pod(clients.core, namespace, service)  # fail fast with the reason
            listener = bind_listener(args.address, plan.local_port)
            opener = open_stream(clients.core, namespace, service, plan.service_port, sys.stderr)
            forwarders.append(Forwarder(listener, opener, plan.label, sys.stderr))
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


# ---------------------------------------------------------------------------------------------
# traces


def trace_services(trace: dict[str, Any]) -> set[str]:
    """Service names of the spans of one trace in Jaeger's /api/traces format."""
    processes = trace.get("processes") or {}
    names = set()
    for span in trace.get("spans") or []:
        process = processes.get(span.get("processID")) or span.get("process") or {}
        if process.get("serviceName"):
            names.add(process["serviceName"])
    return names


def find_spanning_trace(payload: dict[str, Any], required: set[str]) -> tuple[str | None, int, set[str]]:
    """(id of a trace with spans from every required service or None, traces seen, services seen)."""
    seen: set[str] = set()
    traces = payload.get("data") or []
    for trace in traces:
        services = trace_services(trace)
        seen |= services
        if required <= services:
            return trace.get("traceID"), len(traces), seen
    return None, len(traces), seen


def fetch_jaeger_traces(base_url: str, service: str, lookback: str, limit: int = 200) -> dict[str, Any]:
    query = urllib.parse.urlencode({"service": service, "lookback": lookback, "limit": limit})
    with urllib.request.urlopen(f"{base_url.rstrip('/')}/api/traces?{query}", timeout=10) as response:
        return json.load(response)


def run_traces(
    args: argparse.Namespace,
    fetch: Callable[[str, str, str], dict[str, Any]] = fetch_jaeger_traces,
    out: TextIO | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    out = out or sys.stdout
    required = {name.strip() for name in args.require.split(",") if name.strip()} | {args.service}
    start = clock()
    last = ""
    while True:
        try:
            trace_id, count, seen = find_spanning_trace(
                fetch(args.jaeger_url, args.service, args.lookback), required
            )
            if trace_id:
                print(f"trace {trace_id} spans {', '.join(sorted(required))}", file=out)
                print(f"  {args.jaeger_url.rstrip('/')}/trace/{trace_id}", file=out)
                return EXIT_OK
            status = f"{count} traces of {args.service}; services seen: {', '.join(sorted(seen)) or 'none'}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            status = f"Jaeger at {args.jaeger_url} not answering: {exc}"
        if status != last:
            print(f"waiting: {status}", file=out, flush=True)
            last = status
        if clock() - start >= args.timeout:
            print(
                f"timed out after {args.timeout:.0f} s: no trace of {args.service} spans "
                f"{', '.join(sorted(required))} ({status})",
                file=out,
            )
            return EXIT_NOT_READY
        sleep(args.interval)


# ---------------------------------------------------------------------------------------------
# argparse


def _resolve(args: argparse.Namespace, clients: Clients | None) -> tuple[Clients, str]:
    if clients is None:
        clients = connect(args.kubeconfig, args.context)
    namespace = args.namespace or default_namespace(args.kubeconfig, args.context)
    return clients, namespace


def _guarded(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turns the errors a person can act on into one clear line and exit code 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except K8sError as exc:
            print(f"skyhaul k8s: {exc}", file=sys.stderr)
            return EXIT_ERROR
        except Exception as exc:
            message = _api_error_message(exc)
            if message is None:
                raise
            print(f"skyhaul k8s: {message}", file=sys.stderr)
            return EXIT_ERROR

    run.__name__ = handler.__name__
    run.__doc__ = handler.__doc__
    return run


def _api_error_message(exc: Exception) -> str | None:
    """A readable line for an API error or an unreachable API server; None for anything else."""
    module = type(exc).__module__
    if type(exc).__name__ == "ApiException":
        status, reason = getattr(exc, "status", 0), str(getattr(exc, "reason", "")).strip()
        if not status:  # the client never got an HTTP answer (connection refused, TLS, DNS)
            return f"cannot reach the Kubernetes API server ({reason}); is the cluster up? (`make kind-up`)"
        return f"the Kubernetes API refused: {status} {reason}".rstrip()
    if module.startswith("urllib3") or isinstance(exc, ConnectionError):
        return f"cannot reach the Kubernetes API server ({exc}); is the cluster up? (`make kind-up`)"
    return None


def _common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-n",
        "--namespace",
        default=os.environ.get("SKYHAUL_K8S_NAMESPACE"),
        help="namespace (default: $SKYHAUL_K8S_NAMESPACE, else the kubeconfig context's, else default)",
    )
    parser.add_argument("--context", help="kubeconfig context (default: the current context)")
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    parser.add_argument(
        "--release", help="only the objects of this Helm release (label app.kubernetes.io/instance)"
    )


STATUS_EPILOG = """\
Lists every pod labelled app.kubernetes.io/part-of=skyhaul: its component, region or data center
id, phase, ready containers (a data center pod has two: mdc and its terminal sidecar), restarts,
and why it is not ready (CrashLoopBackOff, ImagePullBackOff, Unschedulable, ...).
Exits 1 when any pod is not ready or none is found.

examples:
  skyhaul k8s status
  skyhaul k8s status -n skyhaul --release skyhaul
  skyhaul k8s status --json | jq '.[] | select(.ready | not)'
"""

WAIT_EPILOG = """\
Polls every Skyhaul Deployment until its current revision is rolled out and Available. On timeout
it lists each deployment that is not, and what its pods say, and exits 1.

examples:
  skyhaul k8s wait --timeout 300
  skyhaul k8s wait -n skyhaul --release skyhaul --timeout 600 --interval 5
"""

FORWARD_EPILOG = """\
Forwards local TCP ports through the Kubernetes API server to a ready pod behind a Skyhaul Service
(no NodePort or ingress needed), one stream per connection, until Ctrl-C. SERVICE is a Service's
full name, its name without the release prefix (orbit, links, region-westus2, mdc-mdc-prudhoe,
jaeger) or a component with a single Service. REMOTEPORT is the Service's port.

--all forwards every gRPC port of every Skyhaul service: orbit 50051, links 50052, the first
region 50053, the first data center 50054 and its terminal 50055; further regions and data
centers add 100 each (50153, 50253, ...). It prints `export SKYHAUL_*_ADDR=...` lines for the CLI
and SKYHAUL_K8S_TARGETS (every target, for `skyhaul status`).

examples:
  skyhaul k8s forward links 50052:50052
  skyhaul k8s forward region-westus2 7053:50053
  skyhaul k8s forward jaeger 16686:16686
  skyhaul k8s forward --all
  skyhaul k8s forward --all --port-offset 10000 --env-file /tmp/skyhaul-k8s.env
"""

TRACES_EPILOG = """\
Polls Jaeger's query API (GET /api/traces?service=SERVICE) until one trace has spans from every
service in --require, and prints its id and UI link; exits 1 on timeout with what was seen.

examples:
  skyhaul k8s traces --jaeger-url http://127.0.0.1:16686
  skyhaul k8s traces --service mdc --require mdc,terminal,region --timeout 300
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds `k8s` and its subcommands to the skyhaul CLI."""
    k8s = subparsers.add_parser(
        "k8s",
        help="Skyhaul on Kubernetes: pod status, wait for rollout, port-forward, traces",
        description=__doc__.split("\n\n")[0],
    )
    commands = k8s.add_subparsers(dest="k8s_command", metavar="COMMAND", required=True)
    formatter = argparse.RawDescriptionHelpFormatter

    status = commands.add_parser(
        "status",
        help="every Skyhaul pod: phase, readiness, restarts",
        epilog=STATUS_EPILOG,
        formatter_class=formatter,
    )
    _common_flags(status)
    status.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    status.set_defaults(func=_guarded(run_status))

    wait = commands.add_parser(
        "wait",
        help="until every Skyhaul Deployment is Available",
        epilog=WAIT_EPILOG,
        formatter_class=formatter,
    )
    _common_flags(wait)
    wait.add_argument("--timeout", type=float, default=300.0, help="seconds before giving up (default 300)")
    wait.add_argument("--interval", type=float, default=2.0, help="seconds between polls (default 2)")
    wait.set_defaults(func=_guarded(run_wait))

    forward = commands.add_parser(
        "forward",
        help="port-forward to Skyhaul services through the API server",
        epilog=FORWARD_EPILOG,
        formatter_class=formatter,
    )
    _common_flags(forward)
    forward.add_argument("service", nargs="?", metavar="SERVICE", help="the Service to forward to")
    forward.add_argument("ports", nargs="*", metavar="LOCALPORT:REMOTEPORT", help="ports (or PORT for both)")
    forward.add_argument("--all", action="store_true", help="forward the standard set of gRPC ports")
    forward.add_argument(
        "--port-offset", type=int, default=0, help="add this to every local port of --all (default 0)"
    )
    forward.add_argument(
        "--address", default="127.0.0.1", help="local address to listen on (default 127.0.0.1)"
    )
    forward.add_argument("--env-file", help="also write the export lines to this file once listening")
    forward.set_defaults(func=_guarded(run_forward))

    traces = commands.add_parser(
        "traces",
        help="until Jaeger holds a trace spanning the given services",
        epilog=TRACES_EPILOG,
        formatter_class=formatter,
    )
    traces.add_argument(
        "--jaeger-url",
        default=os.environ.get("SKYHAUL_JAEGER_URL", "http://127.0.0.1:16686"),
        help="Jaeger query base URL (default $SKYHAUL_JAEGER_URL or http://127.0.0.1:16686)",
    )
    traces.add_argument("--service", default="mdc", help="service whose traces to search (default mdc)")
    traces.add_argument(
        "--require", default="mdc,terminal,region", help="comma-separated services the trace must span"
    )
    traces.add_argument("--lookback", default="1h", help="how far back to search (Jaeger syntax, default 1h)")
    traces.add_argument("--timeout", type=float, default=300.0, help="seconds before giving up (default 300)")
    traces.add_argument("--interval", type=float, default=5.0, help="seconds between polls (default 5)")
    traces.set_defaults(func=_guarded(run_traces))
