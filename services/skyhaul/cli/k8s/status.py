"""`skyhaul k8s status` (what every Skyhaul pod says, from the API) and `skyhaul k8s wait` (every
Deployment rolled out, by `kubectl rollout status`; on failure, what is not available and why)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TextIO

from skyhaul.cli.k8s.api import (
    COMPONENT_LABEL,
    DATA_CENTER_LABEL,
    EXIT_NOT_READY,
    EXIT_OK,
    REGION_LABEL,
    Clients,
    label_selector,
    require_tool,
    resolve,
)

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
    clients, namespace = resolve(args, clients)
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


def pods_of(deployment: Any, pods: Sequence[Any]) -> list[Any]:
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
                    for report in sorted(map(pod_report, pods_of(deployment, pods)), key=lambda r: r.name)
                    if not report.ready
                ]
    return reports, details


# Waits for one Deployment's rollout: (deployment name, seconds left) -> rolled out in time.
RolloutStatus = Callable[[str, float], bool]


def kubectl_rollout_status(
    namespace: str,
    context: str | None = None,
    kubeconfig: str | None = None,
    run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
    kubectl: str | None = None,
) -> RolloutStatus:
    """`kubectl rollout status deployment/NAME`: it watches the rollout (current revision updated,
    old pods gone, Available) and prints its progress; we do not poll by hand."""
    kubectl = kubectl or require_tool("kubectl", "`skyhaul k8s wait`")
    flags = ["--namespace", namespace]
    if context:
        flags += ["--context", context]
    if kubeconfig:
        flags += ["--kubeconfig", kubeconfig]

    def rollout_status(name: str, seconds_left: float) -> bool:
        command = [kubectl, "rollout", "status", f"deployment/{name}", *flags]
        command.append(f"--timeout={max(1, round(seconds_left))}s")
        return run(command, check=False).returncode == 0

    return rollout_status


def wait_for_deployments(
    clients: Clients,
    namespace: str,
    selector: str,
    timeout_s: float,
    rollout_status: RolloutStatus,
    out: TextIO | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> bool:
    """Waits (through `rollout_status`) until every Deployment matching `selector` is rolled out;
    on failure or timeout, reports each one that is not and what its pods say."""
    out = out or sys.stdout
    start = clock()
    deployments = clients.apps.list_namespaced_deployment(namespace, label_selector=selector).items
    if not deployments:
        print(
            f"no Skyhaul deployments in namespace {namespace!r} (selector {selector}): "
            f"is the chart installed? (helm list -n {namespace})",
            file=out,
        )
        return False
    names = sorted(d.metadata.name for d in deployments)
    failed = None
    for name in names:
        if not rollout_status(name, timeout_s - (clock() - start)):
            failed = name
            break
    if failed is None:
        print(
            f"all {len(names)} Skyhaul deployments available in namespace {namespace!r} "
            f"({clock() - start:.0f} s)",
            file=out,
        )
        return True
    reports, details = readiness_snapshot(clients, namespace, selector)
    waiting = [r for r in reports if not r.ok]
    print(f"timed out after {timeout_s:.0f} s; not available:", file=out)
    if not waiting:  # it became available after kubectl gave up
        print(f"  deployment {failed}: kubectl rollout status failed (see above)", file=out)
    for report in waiting:
        print(f"  deployment {report.name}: {report.reason}", file=out)
        for line in details.get(report.name, []):
            print(f"    {line}", file=out)
    return False


def run_wait(
    args: argparse.Namespace,
    clients: Clients | None = None,
    out: TextIO | None = None,
    rollout_status: RolloutStatus | None = None,
) -> int:
    # A missing kubectl is said before anything else is tried.
    kubectl = None if rollout_status else require_tool("kubectl", "`skyhaul k8s wait`")
    clients, namespace = resolve(args, clients)
    rollout_status = rollout_status or kubectl_rollout_status(
        namespace, args.context, args.kubeconfig, kubectl=kubectl
    )
    ok = wait_for_deployments(
        clients,
        namespace,
        label_selector(args.release),
        timeout_s=args.timeout,
        rollout_status=rollout_status,
        out=out,
    )
    return EXIT_OK if ok else EXIT_NOT_READY
