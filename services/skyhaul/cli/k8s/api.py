"""Access to the Kubernetes API for `skyhaul k8s`: clients, namespace, selectors, errors, tools.

The `kubernetes` package is imported inside the functions only: it is slow to import and the rest
of the CLI must not pay for it. Every handler takes its API clients as a parameter, so tests pass
objects built from recorded API responses and no cluster is needed.
"""

from __future__ import annotations

import argparse
import os
import shutil
from dataclasses import dataclass
from typing import Any

PART_OF_LABEL = "app.kubernetes.io/part-of"
INSTANCE_LABEL = "app.kubernetes.io/instance"
COMPONENT_LABEL = "app.kubernetes.io/component"
REGION_LABEL = "skyhaul/region"
DATA_CENTER_LABEL = "skyhaul/data-center"

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


def selector_of(match_labels: dict[str, str] | None) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted((match_labels or {}).items()))


def resolve(args: argparse.Namespace, clients: Clients | None) -> tuple[Clients, str]:
    """The clients (given, else from --kubeconfig/--context) and the namespace of a command."""
    if clients is None:
        clients = connect(args.kubeconfig, args.context)
    namespace = args.namespace or default_namespace(args.kubeconfig, args.context)
    return clients, namespace


def api_error_message(exc: Exception) -> str | None:
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


def require_tool(name: str, why: str) -> str:
    """The path of an external program a subcommand runs, or a K8sError saying how to get it."""
    found = shutil.which(name)
    if found is None:
        raise K8sError(
            f"{name} is not on PATH; {why} needs it. Run `make helm-tools` (puts helm and kubectl in "
            ".tools/bin) and add .tools/bin to PATH, or install it."
        )
    return found
