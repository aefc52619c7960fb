"""`skyhaul k8s` against API objects in the form the API server returns them (tests/unit/fixtures/k8s:
the chart's rendered specs of a 2-region, 2-data-center release with the status fields a cluster
adds, one pod crash-looping, one not pulling its image, one unschedulable), deserialised into the
kubernetes client's own models. No cluster and no network: sockets here are socketpairs and
AF_UNIX listeners in tmp_path.
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time
import urllib.error
from pathlib import Path
from types import SimpleNamespace

import pytest
from kubernetes.client import ApiException, V1DeploymentList, V1PodList, V1ServiceList

from skyhaul.cli import k8s
from skyhaul.cli.k8s import api, portforward, status, traces

FIXTURES = Path(__file__).parent / "fixtures" / "k8s"


def load(name: str, model):
    return model.from_dict(json.loads((FIXTURES / name).read_text()))


class FakeCore:
    """A CoreV1Api stand-in that answers from fixtures and records the selectors it was asked."""

    def __init__(self, pods: str = "pods.json", services: str = "services.json") -> None:
        self.pods = load(pods, V1PodList)
        self.services = load(services, V1ServiceList)
        self.selectors: list[str] = []

    def list_namespaced_pod(self, namespace, label_selector=""):
        assert namespace == "skyhaul"
        self.selectors.append(label_selector)
        wanted = dict(part.split("=", 1) for part in label_selector.split(",") if part)
        items = [p for p in self.pods.items if wanted.items() <= (p.metadata.labels or {}).items()]
        return SimpleNamespace(items=items)

    def list_namespaced_service(self, namespace, label_selector=""):
        assert namespace == "skyhaul"
        self.selectors.append(label_selector)
        return self.services


class FakeApps:
    """An AppsV1Api stand-in that returns the given deployment lists in turn (the last one repeats)."""

    def __init__(self, *lists: str) -> None:
        self.lists = [load(name, V1DeploymentList) for name in lists]
        self.calls = 0

    def list_namespaced_deployment(self, namespace, label_selector=""):
        assert namespace == "skyhaul"
        result = self.lists[min(self.calls, len(self.lists) - 1)]
        self.calls += 1
        return result


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skyhaul")
    k8s.register(parser.add_subparsers(dest="command"))
    return parser


def parse(*argv: str) -> argparse.Namespace:
    return make_parser().parse_args(["k8s", *argv])


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


# --- argparse -----------------------------------------------------------------------------------


def test_every_subcommand_parses_and_has_examples_in_its_help():
    parser = make_parser()
    for name in ("status", "wait", "forward", "traces"):
        args = parser.parse_args(["k8s", name] + (["--all"] if name == "forward" else []))
        assert callable(args.func)
        sub = parser._subparsers._group_actions[0].choices["k8s"]._subparsers._group_actions[0].choices[name]
        help_text = sub.format_help()
        assert "examples:" in help_text and f"skyhaul k8s {name}" in help_text


def test_k8s_without_a_subcommand_is_a_usage_error():
    with pytest.raises(SystemExit) as exc:
        parse()
    assert exc.value.code == 2


def test_release_narrows_the_label_selector():
    assert api.label_selector(None) == "app.kubernetes.io/part-of=skyhaul"
    assert api.label_selector("blue") == "app.kubernetes.io/part-of=skyhaul,app.kubernetes.io/instance=blue"


# --- status -------------------------------------------------------------------------------------


def test_pod_reports_say_what_is_wrong_with_each_pod():
    reports = {r.name.rsplit("-", 2)[0]: r for r in status.pod_reports(FakeCore(), "skyhaul", "")}
    assert "skyhaul-test" not in reports  # the finished `helm test` pod is not a service

    crashing = reports["skyhaul-mdc-mdc-prudhoe"]
    assert (crashing.component, crashing.instance_id, crashing.phase) == ("mdc", "mdc-prudhoe", "Running")
    # the terminal sidecar counts as a container of the data center pod
    assert (crashing.ready_containers, crashing.containers, crashing.ready) == (1, 2, False)
    assert crashing.restarts == 4
    assert "CrashLoopBackOff" in crashing.reason and "last exit: Error (exit 1)" in crashing.reason

    healthy_dc = reports["skyhaul-mdc-mdc-ship"]
    assert (healthy_dc.ready_containers, healthy_dc.containers, healthy_dc.ready) == (2, 2, True)
    assert healthy_dc.reason == ""

    assert "ImagePullBackOff" in reports["skyhaul-jaeger"].reason
    unscheduled = reports["skyhaul-region-eastus"]
    assert unscheduled.phase == "Pending" and unscheduled.reason.startswith("Unschedulable:")
    assert "unbound immediate PersistentVolumeClaims" in unscheduled.reason
    assert reports["skyhaul-links"].restarts == 1 and reports["skyhaul-links"].ready


def test_status_prints_a_table_and_fails_while_pods_are_not_ready(capsys):
    core = FakeCore()
    code = status.run_status(
        parse("status", "-n", "skyhaul", "--release", "skyhaul"), api.Clients(core, None)
    )
    out, err = capsys.readouterr()
    assert code == 1
    assert out.splitlines()[0].split() == ["NAME", "COMPONENT", "ID", "PHASE", "READY", "RESTARTS", "STATUS"]
    assert len(out.splitlines()) == 1 + 8
    assert "3 of 8 pods not ready" in err
    assert core.selectors == ["app.kubernetes.io/part-of=skyhaul,app.kubernetes.io/instance=skyhaul"]


def test_status_succeeds_when_every_pod_is_ready_and_json_is_machine_readable(capsys):
    code = status.run_status(
        parse("status", "-n", "skyhaul", "--json"), api.Clients(FakeCore("pods-ready.json"), None)
    )
    rows = json.loads(capsys.readouterr().out)
    assert code == 0
    assert {row["component"] for row in rows} == {"orbit", "links", "region", "mdc", "redis", "jaeger"}
    assert all(row["ready"] and row["reason"] == "" for row in rows)
    assert {row["instance_id"] for row in rows if row["component"] == "region"} == {"westus2", "eastus"}


def test_status_with_no_pods_says_where_it_looked(capsys):
    code = status.run_status(
        parse("status", "-n", "skyhaul", "--release", "absent"), api.Clients(FakeCore(), None)
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "no Skyhaul pods in namespace 'skyhaul'" in err and "instance=absent" in err


# --- wait ---------------------------------------------------------------------------------------


def test_deployment_reports_tell_available_from_not():
    reports = {
        r.name: r for r in map(status.deployment_report, load("deployments.json", V1DeploymentList).items)
    }
    assert reports["skyhaul-orbit"].ok and reports["skyhaul-orbit"].available == 1
    assert not reports["skyhaul-mdc-mdc-prudhoe"].ok
    assert reports["skyhaul-mdc-mdc-prudhoe"].reason == "0/1 pods available"
    assert reports["skyhaul-region-eastus"].reason.startswith("rollout stalled:")
    assert sum(r.ok for r in reports.values()) == 5


def test_a_deployment_whose_new_spec_is_not_yet_observed_is_not_available():
    deployment = load("deployments-available.json", V1DeploymentList).items[0]
    assert status.deployment_report(deployment).ok
    deployment.metadata.generation = 2  # `helm upgrade` changed the spec; the controller lags
    report = status.deployment_report(deployment)
    assert not report.ok and "not yet seen" in report.reason


class FakeRollout:
    """`kubectl rollout status` stand-in: records each wait; the named deployments fail (time out)."""

    def __init__(self, clock: FakeClock, failing: tuple[str, ...] = (), takes_s: float = 1.0) -> None:
        self.clock = clock
        self.failing = failing
        self.takes_s = takes_s
        self.waits: list[tuple[str, float]] = []

    def __call__(self, name: str, seconds_left: float) -> bool:
        self.waits.append((name, seconds_left))
        if name in self.failing:
            self.clock.now += seconds_left  # kubectl waited until its --timeout
            return False
        self.clock.now += self.takes_s
        return True


def test_wait_waits_for_the_rollout_of_every_deployment_within_one_timeout(capsys):
    clock = FakeClock()
    rollout = FakeRollout(clock)
    ok = status.wait_for_deployments(
        api.Clients(FakeCore(), FakeApps("deployments-available.json")),
        "skyhaul",
        "",
        timeout_s=60,
        rollout_status=rollout,
        clock=clock,
    )
    out = capsys.readouterr().out
    names = [name for name, _ in rollout.waits]
    assert ok and len(names) == 8 and names == sorted(names) and "skyhaul-orbit" in names
    # one timeout for the whole wait: each rollout gets what is left of it
    assert [left for _, left in rollout.waits] == [60 - i for i in range(8)]
    assert "all 8 Skyhaul deployments available" in out


def test_wait_times_out_with_a_report_of_each_deployment_and_its_pods(capsys):
    clock = FakeClock()
    clients = api.Clients(FakeCore(), FakeApps("deployments.json"))
    rollout = FakeRollout(clock, failing=("skyhaul-jaeger",))
    ok = status.wait_for_deployments(
        clients, "skyhaul", "", timeout_s=10, rollout_status=rollout, clock=clock
    )
    out = capsys.readouterr().out
    assert not ok and rollout.waits == [("skyhaul-jaeger", 10)]  # no waiting past the timeout
    report = out[out.index("timed out after 10 s") :]
    lines = report.splitlines()[1:]
    assert [line.split()[1] for line in lines if line.startswith("  deployment")] == [
        "skyhaul-jaeger:",
        "skyhaul-mdc-mdc-prudhoe:",
        "skyhaul-region-eastus:",
    ]
    # each deployment's pod problem is printed under it
    mdc_line = next(i for i, line in enumerate(lines) if "deployment skyhaul-mdc-mdc-prudhoe" in line)
    assert "CrashLoopBackOff" in lines[mdc_line + 1]
    assert "orbit" not in report


def test_wait_exit_code_and_no_deployments_hint(capsys):
    empty = SimpleNamespace(
        list_namespaced_deployment=lambda namespace, label_selector: SimpleNamespace(items=[])
    )
    rollout = FakeRollout(FakeClock())
    code = status.run_wait(
        parse("wait", "-n", "skyhaul", "--timeout", "0"),
        api.Clients(FakeCore(), empty),
        rollout_status=rollout,
    )
    out = capsys.readouterr().out
    assert code == 1 and rollout.waits == []
    assert "no Skyhaul deployments in namespace 'skyhaul'" in out and "is the chart installed?" in out


def test_wait_runs_kubectl_rollout_status_with_the_namespace_context_and_time_left():
    commands = []

    def run(command, check):
        commands.append(command)
        return SimpleNamespace(returncode=0 if "deployment/skyhaul-orbit" in command else 1)

    rollout = status.kubectl_rollout_status(
        "skyhaul", context="kind-skyhaul", kubeconfig="/k.yaml", run=run, kubectl="/bin/kubectl"
    )
    assert rollout("skyhaul-orbit", 299.6) and not rollout("skyhaul-links", 0.2)
    assert commands[0] == [
        "/bin/kubectl",
        "rollout",
        "status",
        "deployment/skyhaul-orbit",
        "--namespace",
        "skyhaul",
        "--context",
        "kind-skyhaul",
        "--kubeconfig",
        "/k.yaml",
        "--timeout=300s",
    ]
    assert commands[1][-1] == "--timeout=1s"  # never 0s, which kubectl takes as "forever"


def test_wait_without_kubectl_is_one_line_and_exit_code_2(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no kubectl anywhere
    args = parse("wait", "-n", "skyhaul", "--kubeconfig", str(tmp_path / "absent.yaml"))
    assert args.func(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "kubectl is not on PATH" in err and "make helm-tools" in err


# --- forward: resolution ------------------------------------------------------------------------


def test_port_specs_accept_local_colon_remote_or_one_port():
    assert portforward.parse_port_spec("60052:50052") == portforward.PortSpec(60052, 50052)
    assert portforward.parse_port_spec("16686") == portforward.PortSpec(16686, 16686)
    for bad in ("abc", "1:2:3", "0:50051", "70000", ""):
        with pytest.raises(api.K8sError, match="port"):
            portforward.parse_port_spec(bad)


def test_find_service_by_full_name_short_name_or_unique_component():
    services = FakeCore().services.items
    assert portforward.find_service(services, "skyhaul-links").metadata.name == "skyhaul-links"
    assert portforward.find_service(services, "region-westus2").metadata.name == "skyhaul-region-westus2"
    assert portforward.find_service(services, "jaeger").metadata.name == "skyhaul-jaeger"  # not jaeger-ui
    assert portforward.find_service(services, "redis").metadata.name == "skyhaul-redis"
    with pytest.raises(api.K8sError, match="ambiguous: skyhaul-region-eastus, skyhaul-region-westus2"):
        portforward.find_service(services, "region")
    with pytest.raises(api.K8sError, match="no Skyhaul service 'orbitz'; available: .*skyhaul-orbit"):
        portforward.find_service(services, "orbitz")


def test_service_ports_resolve_to_the_declared_container_ports_including_the_sidecar():
    core = FakeCore("pods-ready.json")
    service = portforward.find_service(core.services.items, "mdc-mdc-prudhoe")
    pod = portforward.pick_ready_pod(core, "skyhaul", service)
    assert pod.metadata.name.startswith("skyhaul-mdc-mdc-prudhoe-")
    assert portforward.container_port(portforward.service_port(service, 50054), pod) == 50054
    assert (
        portforward.container_port(portforward.service_port(service, 50055), pod) == 50055
    )  # declared by the terminal
    with pytest.raises(
        api.K8sError, match="has no port 7001; its ports: 50054 \\(grpc\\), 50055 \\(terminal\\)"
    ):
        portforward.service_port(service, 7001)


def test_no_ready_pod_behind_a_service_is_an_error_that_says_why():
    core = FakeCore("pods.json")
    service = portforward.find_service(core.services.items, "mdc-mdc-prudhoe")
    with pytest.raises(
        api.K8sError, match="no ready pod behind service skyhaul-mdc-mdc-prudhoe.*CrashLoopBackOff"
    ):
        portforward.pick_ready_pod(core, "skyhaul", service)


def test_forward_all_plans_the_standard_ports():
    plans = portforward.plan_all(FakeCore().services.items, port_offset=0)
    by_label = {p.label: p for p in plans}
    assert {label: p.local_port for label, p in by_label.items()} == {
        "orbit": 50051,
        "links": 50052,
        "region-eastus": 50053,
        "region-westus2": 50153,
        "mdc-mdc-prudhoe": 50054,
        "terminal-mdc-prudhoe": 50055,
        "mdc-mdc-ship": 50154,
        "terminal-mdc-ship": 50155,
    }
    assert by_label["terminal-mdc-ship"].service == "skyhaul-mdc-mdc-ship"
    assert by_label["terminal-mdc-ship"].service_port == 50055
    assert {p.env_var for p in plans if p.env_var} == {
        "SKYHAUL_ORBIT_ADDR",
        "SKYHAUL_LINKS_ADDR",
        "SKYHAUL_REGION_ADDR",
        "SKYHAUL_MDC_ADDR",
        "SKYHAUL_TERMINAL_ADDR",
    }
    shifted = portforward.plan_all(FakeCore().services.items, port_offset=10000)
    assert [p.local_port - 10000 for p in shifted] == [p.local_port for p in plans]


def test_env_lines_export_addresses_and_every_status_target():
    plans = portforward.plan_all(FakeCore().services.items, port_offset=10000)
    lines = portforward.env_lines(plans, "127.0.0.1")
    assert "export SKYHAUL_TERMINAL_ADDR=127.0.0.1:60055" in lines
    targets = lines[-1].split("=", 1)[1].strip('"').split()
    assert len(targets) == len(plans) and "region-westus2=127.0.0.1:60153" in targets


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("orbitz", "50051"), "no Skyhaul service 'orbitz'"),
        (("orbit", "50052"), "has no port 50052"),
        (("orbit",), "give SERVICE and at least one"),
        (("--all", "orbit", "50051"), "either --all or SERVICE"),
        (("mdc-mdc-prudhoe", "50054"), "no ready pod"),
    ],
)
def test_forward_rejects_bad_requests_before_listening(argv, message, monkeypatch):
    monkeypatch.setattr(portforward, "bind_listener", lambda *a: pytest.fail("must not listen"))
    with pytest.raises(api.K8sError, match=message):
        portforward.run_forward(parse("forward", "-n", "skyhaul", *argv), api.Clients(FakeCore(), None))


# --- forward: the byte relay --------------------------------------------------------------------


def echo_remote() -> tuple[socket.socket, threading.Thread]:
    """One end of a socketpair whose other end echoes until EOF: a stand-in for the pod's port."""
    ours, theirs = socket.socketpair()

    def echo() -> None:
        while data := theirs.recv(4096):
            theirs.sendall(data)
        theirs.close()

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    return ours, thread


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "connection closed early"
        data += chunk
    return data


def test_relay_copies_both_ways_and_passes_on_the_client_half_close():
    client, local = socket.socketpair()
    remote, echo = echo_remote()
    relay = threading.Thread(target=portforward.relay, args=(local, remote))
    relay.start()
    payload = bytes(range(256)) * 1024
    client.sendall(payload)
    assert recv_exactly(client, len(payload)) == payload
    client.shutdown(socket.SHUT_WR)  # the echo side sees EOF, closes, and the relay ends
    assert client.recv(1) == b""
    relay.join(timeout=10)
    echo.join(timeout=10)
    assert not relay.is_alive() and not echo.is_alive()


def test_relay_ends_the_client_connection_when_the_remote_stream_goes_away():
    client, local = socket.socketpair()
    remote, pod_side = socket.socketpair()
    relay = threading.Thread(target=portforward.relay, args=(local, remote))
    relay.start()
    pod_side.sendall(b"bye")
    pod_side.close()  # port-forward stream gone (pod deleted, API server restarted)
    assert recv_exactly(client, 3) == b"bye"
    assert client.recv(1) == b""
    relay.join(timeout=10)
    assert not relay.is_alive()


def test_forwarder_serves_concurrent_connections_each_on_its_own_stream(tmp_path):
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "fwd.sock"))
    listener.listen(8)
    opened, closed = [], []

    def open_remote():
        remote, _ = echo_remote()
        opened.append(remote)
        return remote, lambda: closed.append(remote)

    forwarder = portforward.PortForwarder(listener, open_remote, "links", log=None)
    stop = threading.Event()
    server = threading.Thread(target=forwarder.serve, args=(stop,))
    server.start()
    clients = []
    for _ in range(3):
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(str(tmp_path / "fwd.sock"))
        clients.append(client)
    for index, client in enumerate(clients):
        client.sendall(f"hello {index}".encode())
    for index, client in enumerate(clients):
        assert recv_exactly(client, len(f"hello {index}")) == f"hello {index}".encode()
        client.close()
    stop.set()
    server.join(timeout=10)
    assert not server.is_alive()
    assert forwarder.connections == 3 and len(opened) == 3


def test_forwarder_drops_a_client_when_the_stream_cannot_be_opened(tmp_path, capsys):
    import sys

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "fwd.sock"))
    listener.listen(1)

    def refuse():
        raise ApiException(status=403, reason="Forbidden")

    forwarder = portforward.PortForwarder(listener, refuse, "orbit", log=sys.stderr)
    stop = threading.Event()
    server = threading.Thread(target=forwarder.serve, args=(stop,))
    server.start()
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(str(tmp_path / "fwd.sock"))
    assert client.recv(1) == b""
    stop.set()
    server.join(timeout=10)
    assert "orbit: cannot open a port-forward" in capsys.readouterr().err


def test_forward_all_listens_writes_the_env_file_and_stops(tmp_path, monkeypatch, capsys):
    sockets: dict[int, str] = {}

    def unix_listener(address, port):
        path = str(tmp_path / f"{port}.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(4)
        sockets[port] = path
        return listener

    def open_stream(core, namespace, service, port, log):
        def open_remote():
            remote, _ = echo_remote()
            return remote, lambda: None

        return open_remote

    monkeypatch.setattr(portforward, "bind_listener", unix_listener)
    env_file = tmp_path / "forward.env"
    stop = threading.Event()
    args = parse("forward", "-n", "skyhaul", "--all", "--port-offset", "10000", "--env-file", str(env_file))
    runner = threading.Thread(
        target=portforward.run_forward,
        args=(args, api.Clients(FakeCore("pods-ready.json"), None)),
        kwargs={"open_stream": open_stream, "stop": stop},
    )
    runner.start()
    deadline = time.monotonic() + 30
    while not env_file.exists() and runner.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    env = env_file.read_text()
    assert "export SKYHAUL_LINKS_ADDR=127.0.0.1:60052\n" in env
    assert sorted(sockets) == [60051, 60052, 60053, 60054, 60055, 60153, 60154, 60155]
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(sockets[60055])
    client.sendall(b"ping")
    assert recv_exactly(client, 4) == b"ping"
    client.close()
    stop.set()
    runner.join(timeout=10)
    assert not runner.is_alive()
    assert "127.0.0.1:60155 -> service skyhaul-mdc-mdc-ship port 50055" in capsys.readouterr().out


# --- traces -------------------------------------------------------------------------------------


def test_find_spanning_trace_needs_spans_from_every_required_service():
    payload = json.loads((FIXTURES / "jaeger-traces.json").read_text())
    trace_id, count, seen = traces.find_spanning_trace(
        payload, {"skyhaul-mdc", "skyhaul-terminal", "skyhaul-region"}
    )
    assert trace_id == "7d2a61f0c9e84b1f8a5c3e2d1b0a9f87" and count == 2
    trace_id, _, seen = traces.find_spanning_trace(payload, {"skyhaul-mdc", "skyhaul-orbit"})
    assert trace_id is None and seen == {"skyhaul-mdc", "skyhaul-links", "skyhaul-terminal", "skyhaul-region"}


def test_traces_polls_through_outages_until_a_spanning_trace_appears(capsys):
    payload = json.loads((FIXTURES / "jaeger-traces.json").read_text())
    partial = {"data": payload["data"][:1]}
    answers = [urllib.error.URLError("connection refused"), partial, partial, payload]
    asked = []

    def fetch(url, service, lookback):
        asked.append((url, service, lookback))
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    clock = FakeClock()
    args = parse("traces", "--jaeger-url", "http://127.0.0.1:16686/", "--interval", "5")
    assert traces.run_traces(args, fetch=fetch, clock=clock, sleep=clock.sleep) == 0
    out = capsys.readouterr().out
    # plain names on the command line, Jaeger asked for the service.name the services report
    assert asked[0] == ("http://127.0.0.1:16686/", "skyhaul-mdc", "1h") and len(asked) == 4
    assert "not answering" in out and "services seen: skyhaul-links, skyhaul-mdc" in out
    assert "http://127.0.0.1:16686/trace/7d2a61f0c9e84b1f8a5c3e2d1b0a9f87" in out


def test_traces_times_out_with_what_it_saw(capsys):
    payload = json.loads((FIXTURES / "jaeger-traces.json").read_text())
    clock = FakeClock()
    args = parse("traces", "--require", "mdc,orbit", "--timeout", "20")
    assert traces.run_traces(args, fetch=lambda *a: payload, clock=clock, sleep=clock.sleep) == 1
    out = capsys.readouterr().out
    assert "timed out after 20 s: no trace of skyhaul-mdc spans skyhaul-mdc, skyhaul-orbit" in out
    assert "services seen: skyhaul-links, skyhaul-mdc, skyhaul-region, skyhaul-terminal" in out


# --- errors and configuration --------------------------------------------------------------------


def test_errors_a_person_can_act_on_become_one_line_and_exit_code_2(capsys):
    def forbidden(args):
        raise ApiException(status=403, reason="Forbidden")

    def missing(args):
        raise api.K8sError("no Skyhaul service 'x'")

    def unreachable(args):
        raise ApiException(status=0, reason="[Errno 111] Connection refused")

    assert k8s._guarded(forbidden)(argparse.Namespace()) == 2
    assert k8s._guarded(missing)(argparse.Namespace()) == 2
    assert k8s._guarded(unreachable)(argparse.Namespace()) == 2
    err = capsys.readouterr().err
    assert "the Kubernetes API refused: 403 Forbidden" in err and "no Skyhaul service 'x'" in err
    assert "cannot reach the Kubernetes API server ([Errno 111] Connection refused)" in err

    def bug(args):
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):  # a bug is not dressed up as a cluster problem
        k8s._guarded(bug)(argparse.Namespace())


def test_a_missing_kubeconfig_is_a_clear_error(tmp_path):
    with pytest.raises(api.K8sError, match="cannot load .*absent.yaml"):
        api.connect(str(tmp_path / "absent.yaml"), None)


def test_the_namespace_defaults_to_the_kubeconfig_context(tmp_path):
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kind-skyhaul", "cluster": {"server": "https://127.0.0.1:6443"}}],
                "users": [{"name": "kind-skyhaul", "user": {"token": "not-a-secret"}}],
                "contexts": [
                    {
                        "name": "kind-skyhaul",
                        "context": {
                            "cluster": "kind-skyhaul",
                            "user": "kind-skyhaul",
                            "namespace": "skyhaul",
                        },
                    },
                    {"name": "bare", "context": {"cluster": "kind-skyhaul", "user": "kind-skyhaul"}},
                ],
                "current-context": "kind-skyhaul",
            }
        )
    )
    assert api.default_namespace(str(kubeconfig), None) == "skyhaul"
    assert api.default_namespace(str(kubeconfig), "bare") == "default"
    clients = api.connect(str(kubeconfig), "kind-skyhaul")  # builds clients; contacts nothing
    assert clients.core.api_client.configuration.host == "https://127.0.0.1:6443"
