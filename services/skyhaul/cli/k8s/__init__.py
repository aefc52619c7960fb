"""`skyhaul k8s`: Skyhaul on a Kubernetes cluster.

- `status`  every Skyhaul pod: component, phase, readiness, restarts, and why it is not ready.
            Needs: the Kubernetes API (a kubeconfig, or running in a pod).
- `wait`    until every Skyhaul Deployment is rolled out, or a timeout with a report of what is not.
            Needs: `kubectl` on PATH (it runs `kubectl rollout status`), and the API for the report.
- `forward` port-forwards through the API server to the pod behind a Service, so the CLI and any
            gRPC client can drive in-cluster services without a NodePort. Needs: the Kubernetes API.
- `traces`  until Jaeger holds a trace that spans the given services (used by `make e2e-kind`).
            Needs: Jaeger's query API over HTTP (no cluster access).

The parts: api.py (clients, namespace, errors), status.py (status, wait), portforward.py, traces.py.

Exit codes: 0 all good; 1 something is not ready / timed out; 2 bad arguments, no kubeconfig, a
missing tool, or the API server cannot be reached.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from skyhaul.cli.k8s.api import EXIT_ERROR, K8sError, api_error_message
from skyhaul.cli.k8s.portforward import run_forward
from skyhaul.cli.k8s.status import run_status, run_wait
from skyhaul.cli.k8s.traces import run_traces


def _guarded(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turns the errors a person can act on into one clear line and exit code 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except K8sError as exc:
            print(f"skyhaul k8s: {exc}", file=sys.stderr)
            return EXIT_ERROR
        except Exception as exc:
            message = api_error_message(exc)
            if message is None:
                raise
            print(f"skyhaul k8s: {message}", file=sys.stderr)
            return EXIT_ERROR

    run.__name__ = handler.__name__
    run.__doc__ = handler.__doc__
    return run


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
Needs: the Kubernetes API (kubeconfig or in-pod service account); no kubectl.

examples:
  skyhaul k8s status
  skyhaul k8s status -n skyhaul --release skyhaul
  skyhaul k8s status --json | jq '.[] | select(.ready | not)'
"""

WAIT_EPILOG = """\
Runs `kubectl rollout status` on every Skyhaul Deployment until its current revision is rolled
out and Available (within --timeout in all). On a timeout or failed rollout it lists each
deployment that is not available, and what its pods say, and exits 1.
Needs: kubectl on PATH (`make helm-tools` puts it in .tools/bin) and the Kubernetes API.
After `helm upgrade --install --wait` (what `make deploy` runs) it returns at once.

examples:
  skyhaul k8s wait --timeout 300
  skyhaul k8s wait -n skyhaul --release skyhaul --timeout 600
"""

FORWARD_EPILOG = """\
Needs: the Kubernetes API (kubeconfig); no kubectl. Unlike `kubectl port-forward`, each connection
goes to a pod that is ready at that moment, so a forward outlives pod restarts.

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
Needs: Jaeger's query API over HTTP (e.g. through `skyhaul k8s forward jaeger 16686:16686`).

examples:
  skyhaul k8s traces --jaeger-url http://127.0.0.1:16686
  skyhaul k8s traces --service mdc --require mdc,terminal,region --timeout 300
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds `k8s` and its subcommands to the skyhaul CLI."""
    k8s = subparsers.add_parser(
        "k8s",
        help="Skyhaul on Kubernetes: pod status, wait for rollout (kubectl), port-forward, traces",
        description=__doc__.split("\n\nThe parts")[0],  # each subcommand and the tool it needs
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    # kubectl watches the rollout now; the flag stays so existing scripts keep working.
    wait.add_argument("--interval", type=float, default=2.0, help=argparse.SUPPRESS)
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
