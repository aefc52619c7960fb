"""What the chart renders, checked against what the services expect of each other."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from chartlib import (
    CHART,
    REPO,
    VALUES_FILES,
    Rendered,
    all_containers,
    env_of,
    helm_template,
    render,
    render_chart,
    values_id,
)

from skyhaul.runtime import telemetry
from skyhaul.runtime.scenario import parse_scenario
from skyhaul.runtime.services import SERVICES
from skyhaul.runtime.settings import parse_shard, shard_members

SKYHAUL_COMMANDS = {"serve", "status"}
COMPONENT_OF_ADDR = {
    "SKYHAUL_ORBIT_ADDR": "orbit",
    "SKYHAUL_LINKS_ADDR": "links",
    "SKYHAUL_REGION_ADDR": "region",
    "SKYHAUL_MDC_ADDR": "mdc",
    "SKYHAUL_TERMINAL_ADDR": "mdc",  # the terminal's control port is on its data center's Service
}
LOOPBACK = ("127.0.0.1", "localhost")


def skyhaul_image(rendered: Rendered) -> str:
    values = rendered.values
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    return f"{values['image']['repository']}:{values['image']['tag'] or chart['appVersion']}"


def skyhaul_containers(rendered: Rendered):
    image = skyhaul_image(rendered)
    for owner, labels, spec in rendered.pod_specs():
        for container in all_containers(spec):
            if container["image"] == image:
                yield owner, labels, spec, container


def split_hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host, int(port)


def declared_ports(pod_spec: dict) -> dict[int, str]:
    return {
        p["containerPort"]: p.get("name", "") for c in all_containers(pod_spec) for p in c.get("ports") or []
    }


def services_by_name(rendered: Rendered) -> dict[str, dict]:
    return {s["metadata"]["name"]: s for s in rendered.of_kind("Service")}


def pods_behind(rendered: Rendered, service: dict) -> list[tuple[str, dict, dict]]:
    selector = service["spec"]["selector"].items()
    return [(o, labels, spec) for o, labels, spec in rendered.pod_specs() if selector <= labels.items()]


def scenario_config_maps(rendered: Rendered) -> list[dict]:
    """The ConfigMaps holding a scenario (Jaeger has its own for its configuration)."""
    return [c for c in rendered.of_kind("ConfigMap") if "scenario.yaml" in c.get("data", {})]


def resolve_service_port(rendered: Rendered, host: str, port: int) -> tuple[dict, dict]:
    """The Service `host` and its port `port`, asserting both exist and a pod declares the target."""
    service = services_by_name(rendered).get(host)
    assert service is not None, f"{host} is not a Service the chart renders"
    matches = [p for p in service["spec"]["ports"] if p["port"] == port]
    assert matches, f"service {host} has no port {port}"
    pods = pods_behind(rendered, service)
    assert len(pods) == 1, f"service {host} selects {len(pods)} pods"
    target = matches[0]["targetPort"]
    declared = declared_ports(pods[0][2])
    assert target in declared.values() or target in declared, (
        f"{host}:{port} targets undeclared port {target}"
    )
    return service, matches[0]


VARIANTS = pytest.mark.parametrize("values_file", VALUES_FILES, ids=values_id)


@VARIANTS
def test_every_container_runs_a_real_skyhaul_subcommand(values_file: Path | None):
    rendered = render(values_file)
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["skyhaul"]' in dockerfile
    argvs = []
    for owner, _, _, container in skyhaul_containers(rendered):
        # no `command`: the image's ENTRYPOINT (skyhaul) runs, with args as its arguments
        assert "command" not in container, f"{owner}/{container['name']} overrides the skyhaul entrypoint"
        assert container["args"][0] in SKYHAUL_COMMANDS, container["args"]
        argvs.append(container["args"])
    assert len(argvs) >= 6
    unique = sorted({tuple(a) for a in argvs})
    # One interpreter runs `skyhaul ARGS --help` for each: argparse must accept every argument the
    # chart passes (a `serve` of an unknown service or a misspelt option exits 2).
    driver = (
        "import contextlib, io, json, sys\n"
        "from skyhaul.cli.main import main\n"
        "codes = []\n"
        "for argv in json.loads(sys.argv[1]):\n"
        "    out = io.StringIO()\n"
        "    try:\n"
        "        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):\n"
        "            main([*argv, '--help'])\n"
        "        codes.append([0, out.getvalue()])\n"
        "    except SystemExit as exc:\n"
        "        codes.append([exc.code or 0, out.getvalue()])\n"
        "print(json.dumps(codes))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", driver, json.dumps([list(a) for a in unique])],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(REPO / "services"), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    for argv, (code, output) in zip(unique, json.loads(result.stdout.splitlines()[-1]), strict=True):
        assert code == 0 and "usage: skyhaul" in output, (
            f"skyhaul {' '.join(argv)} --help: exit {code}\n{output}"
        )


@VARIANTS
def test_every_skyhaul_addr_points_at_a_rendered_service_on_the_right_port(values_file: Path | None):
    rendered = render(values_file)
    ports = rendered.values["components"]
    checked = 0
    for owner, _, spec, container in skyhaul_containers(rendered):
        for name, value in env_of(container).items():
            if not (name.startswith("SKYHAUL_") and name.endswith("_ADDR")):
                continue
            host, port = split_hostport(value)
            if host in LOOPBACK:
                # a sidecar in the same pod must declare the port
                assert port in declared_ports(spec), (
                    f"{owner}: {name}={value} but no container declares {port}"
                )
            else:
                service, service_port = resolve_service_port(rendered, host, port)
                component = COMPONENT_OF_ADDR[name]
                assert service["metadata"]["labels"]["app.kubernetes.io/component"] == component, (
                    owner,
                    name,
                )
                expected = ports["terminal" if name == "SKYHAUL_TERMINAL_ADDR" else component]["port"]
                assert port == expected, f"{owner}: {name}={value}, the {component} port is {expected}"
            checked += 1
    assert checked >= 10


@VARIANTS
def test_redis_and_telemetry_endpoints_are_wired(values_file: Path | None):
    rendered = render(values_file)
    values = rendered.values
    for _, _, _, container in skyhaul_containers(rendered):
        env = env_of(container)
        if container["args"][0] != "serve":
            continue
        redis_url = env["SKYHAUL_REDIS_URL"]
        if values["redis"]["externalUrl"]:
            assert redis_url == values["redis"]["externalUrl"]
            assert not any(d["metadata"]["name"].endswith("-redis") for d in rendered.of_kind("Deployment"))
        else:
            # The in-chart Redis has a password (from the Secret, expanded by the kubelet).
            assert redis_url.startswith("redis://:$(SKYHAUL_REDIS_PASSWORD)@")
            host, port = redis_url.removeprefix("redis://").split("/")[0].rpartition("@")[2].split(":")
            resolve_service_port(rendered, host, int(port))
        # one service.name for a service, in the chart as in local runs
        assert env["OTEL_SERVICE_NAME"] == telemetry.service_name(container["args"][1])
        endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        if values["telemetry"]["otlpEndpoint"]:
            assert endpoint == values["telemetry"]["otlpEndpoint"]
        elif values["jaeger"]["enabled"]:
            host, port = endpoint.removeprefix("http://").split(":")
            resolve_service_port(rendered, host, int(port))
            assert int(port) == 4317
        else:
            assert endpoint is None
        if endpoint:
            assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == values["telemetry"]["protocol"] == "grpc"
        assert "k8s.pod.name=$(POD_NAME)" in env["OTEL_RESOURCE_ATTRIBUTES"]


def test_http_protobuf_goes_to_the_jaeger_otlp_http_port():
    rendered = render(None, "telemetry.protocol=http/protobuf")
    served = 0
    for _, _, _, container in skyhaul_containers(rendered):
        if container["args"][0] != "serve":
            continue
        served += 1
        env = env_of(container)
        assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
        host, port = env["OTEL_EXPORTER_OTLP_ENDPOINT"].removeprefix("http://").split(":")
        service, service_port = resolve_service_port(rendered, host, int(port))
        assert service["metadata"]["labels"]["app.kubernetes.io/component"] == "jaeger"
        assert service_port["name"] == "otlp-http"
    assert served >= 5


def _jaeger(rendered: Rendered) -> tuple[dict, dict, dict]:
    """Jaeger's Deployment, its container and its parsed configuration."""
    [deployment] = [
        d
        for d in rendered.of_kind("Deployment")
        if d["metadata"]["labels"]["app.kubernetes.io/component"] == "jaeger"
    ]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    [config_map] = [
        c for c in rendered.of_kind("ConfigMap") if c["metadata"]["name"].endswith("-jaeger-config")
    ]
    return deployment, container, config_map


@VARIANTS
def test_jaeger_is_v2_and_its_config_matches_its_ports(values_file: Path | None):
    rendered = render(values_file)
    values = rendered.values
    if not values["jaeger"]["enabled"]:
        assert not [
            c for c in rendered.of_kind("ConfigMap") if c["metadata"]["name"].endswith("-jaeger-config")
        ]
        return
    deployment, container, config_map = _jaeger(rendered)
    repository, tag = container["image"].rsplit(":", 1)
    assert repository == "jaegertracing/jaeger" and tag.split(".")[0] == "2"
    config_text = config_map["data"]["config.yaml"]
    config = yaml.safe_load(config_text)
    # the pod mounts this ConfigMap where its --config points
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    [config_volume] = [
        n for n, v in volumes.items() if v.get("configMap", {}).get("name") == config_map["metadata"]["name"]
    ]
    assert container["args"] == ["--config", f"{mounts[config_volume]}/config.yaml"]
    # a config change rolls the pod
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["checksum/config"] == hashlib.sha256(config_text.rstrip("\n").encode()).hexdigest()

    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    otlp = config["receivers"]["otlp"]["protocols"]
    assert split_hostport(otlp["grpc"]["endpoint"]) == ("0.0.0.0", ports["otlp-grpc"])
    assert split_hostport(otlp["http"]["endpoint"]) == ("0.0.0.0", ports["otlp-http"])
    query = config["extensions"]["jaeger_query"]
    assert split_hostport(query["http"]["endpoint"]) == ("0.0.0.0", ports["ui"])
    health = config["extensions"]["healthcheckv2"]
    assert split_hostport(health["http"]["endpoint"]) == ("0.0.0.0", ports["health"])
    for probe in (container["readinessProbe"], container["livenessProbe"]):
        assert probe["httpGet"] == {"path": "/status", "port": "health"}
    # the in-memory store is bounded by values.jaeger.maxTraces and is what the pipeline writes to
    store = config["exporters"]["jaeger_storage_exporter"]["trace_storage"]
    assert query["storage"]["traces"] == store
    assert (
        config["extensions"]["jaeger_storage"]["backends"][store]["memory"]["max_traces"]
        == values["jaeger"]["maxTraces"]
    )
    pipeline = config["service"]["pipelines"]["traces"]
    assert pipeline["receivers"] == ["otlp"] and pipeline["exporters"] == ["jaeger_storage_exporter"]
    assert {"jaeger_storage", "jaeger_query", "healthcheckv2"} <= set(config["service"]["extensions"])
    # every Service port of Jaeger reaches a declared container port
    [service] = [
        s for s in rendered.of_kind("Service") if s["metadata"]["name"] == deployment["metadata"]["name"]
    ]
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(ports)


def test_telemetry_can_be_switched_off():
    rendered = render(None, "telemetry.enabled=false")
    for _, _, _, container in skyhaul_containers(rendered):
        assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env_of(container)


@VARIANTS
def test_every_data_center_pod_has_its_terminal_sidecar_and_reaches_its_region_only_through_it(
    values_file: Path | None,
):
    rendered = render(values_file)
    scenario = rendered.values["scenario"]
    components = rendered.values["components"]
    services = services_by_name(rendered)
    region_services = {
        s for s in services if services[s]["metadata"]["labels"]["app.kubernetes.io/component"] == "region"
    }
    assert scenario["data_centers"], "a variant without data centers checks nothing here"
    if components["mdc"].get("shards"):
        check_shard_pods(rendered)
        return
    for dc in scenario["data_centers"]:
        [deployment] = [
            d
            for d in rendered.of_kind("Deployment")
            if d["spec"]["template"]["metadata"]["labels"].get("skyhaul/data-center") == dc["id"]
        ]
        spec = deployment["spec"]["template"]["spec"]
        [terminal] = [c for c in spec.get("initContainers") or [] if c["args"] == ["serve", "terminal"]]
        [mdc] = [c for c in spec["containers"] if c["args"] == ["serve", "mdc"]]
        assert terminal["restartPolicy"] == "Always"  # a native sidecar, not a one-shot init container
        terminal_env, mdc_env = env_of(terminal), env_of(mdc)
        assert terminal_env["SKYHAUL_DATA_CENTER_ID"] == mdc_env["SKYHAUL_DATA_CENTER_ID"] == dc["id"]

        relay_port, _, target = terminal_env["SKYHAUL_TERMINAL_FORWARDS"].partition("=")
        host, port = split_hostport(target)
        service, _ = resolve_service_port(rendered, host, port)
        assert service["metadata"]["labels"]["skyhaul/region"] == dc["home_region"]
        assert port == components["region"]["port"]
        assert int(relay_port) in {p["containerPort"] for p in terminal["ports"]}

        assert mdc_env["SKYHAUL_REGION_ADDR"] == f"127.0.0.1:{relay_port}"
        assert mdc_env["SKYHAUL_TERMINAL_ADDR"] == f"127.0.0.1:{components['terminal']['port']}"
        assert split_hostport(terminal_env["SKYHAUL_LISTEN"])[1] == components["terminal"]["port"]
        # nothing in the data center container names a region Service directly
        assert not any(host in str(v) for v in mdc_env.values() for host in region_services)


def check_shard_pods(rendered: Rendered) -> None:
    """N shard pods: every data center in exactly one (the services' rule, shard_members), each pod's
    terminal sidecar and mdc host the same shard, and the mdc reaches its regions only through the
    terminal's relays on relayPort + j."""
    scenario = rendered.values["scenario"]
    components = rendered.values["components"]
    count = components["mdc"]["shards"]
    ids = [dc["id"] for dc in scenario["data_centers"]]
    region_services = {
        name
        for name, service in services_by_name(rendered).items()
        if service["metadata"]["labels"]["app.kubernetes.io/component"] == "region"
    }
    shard_pods = [
        d
        for d in rendered.of_kind("Deployment")
        if "skyhaul/shard" in d["spec"]["template"]["metadata"]["labels"]
    ]
    assert len(shard_pods) == count
    assert not [
        d
        for d in rendered.of_kind("Deployment")
        if "skyhaul/data-center" in d["spec"]["template"]["metadata"]["labels"]
    ], "shards replace the per-data-center pods"
    hosted: list[str] = []
    for deployment in shard_pods:
        spec = deployment["spec"]["template"]["spec"]
        [terminal] = [c for c in spec.get("initContainers") or [] if c["args"] == ["serve", "terminal"]]
        [mdc] = [c for c in spec["containers"] if c["args"] == ["serve", "mdc"]]
        assert terminal["restartPolicy"] == "Always"
        terminal_env, mdc_env = env_of(terminal), env_of(mdc)
        assert "SKYHAUL_DATA_CENTER_ID" not in terminal_env and "SKYHAUL_DATA_CENTER_ID" not in mdc_env
        index, total = parse_shard(terminal_env["SKYHAUL_SHARD"])
        assert mdc_env["SKYHAUL_SHARD"] == terminal_env["SKYHAUL_SHARD"] and total == count
        assert deployment["metadata"]["name"].endswith(f"mdc-shard-{index}")
        hosted += shard_members(ids, index, total)
        relay_port = components["terminal"]["relayPort"]
        assert terminal_env["SKYHAUL_RELAY_BASE_PORT"] == str(relay_port)
        assert mdc_env["SKYHAUL_REGION_RELAY"] == f"127.0.0.1:{relay_port}"
        assert mdc_env["SKYHAUL_TERMINAL_ADDR"] == f"127.0.0.1:{components['terminal']['port']}"
        # Every region of the scenario, each at a rendered region Service on the region port.
        addrs = dict(item.split("=") for item in terminal_env["SKYHAUL_REGION_ADDRS"].split(","))
        assert set(addrs) == {r["id"] for r in scenario["regions"]}
        for region_id, address in addrs.items():
            host, port = split_hostport(address)
            service, _ = resolve_service_port(rendered, host, port)
            assert service["metadata"]["labels"]["skyhaul/region"] == region_id
        # The mdc names the regions only for its settings; its traffic goes to 127.0.0.1 relays.
        assert not any(host in mdc_env["SKYHAUL_REGION_RELAY"] for host in region_services)
    assert sorted(hosted) == sorted(ids), "every data center is in exactly one shard"


@pytest.mark.parametrize("shards", [1, 3, 4])
def test_shard_pods_cover_every_data_center_once(shards: int):
    fleet = REPO / "helm" / "skyhaul" / "ci" / "fleet-values.yaml"
    rendered = render(fleet, f"components.mdc.shards={shards}")
    rendered.values["components"]["mdc"]["shards"] = shards  # render() merges only the file
    check_shard_pods(rendered)
    claims = [c["metadata"]["name"] for c in rendered.of_kind("PersistentVolumeClaim")]
    assert sum(1 for name in claims if "-mdc-shard-" in name) == shards  # one durable volume per shard


def test_zero_shards_is_one_pod_per_data_center():
    rendered = render(None, "components.mdc.shards=0")
    assert [
        d
        for d in rendered.of_kind("Deployment")
        if "skyhaul/data-center" in d["spec"]["template"]["metadata"]["labels"]
    ]
    assert not [
        d
        for d in rendered.of_kind("Deployment")
        if "skyhaul/shard" in d["spec"]["template"]["metadata"]["labels"]
    ]


@pytest.mark.parametrize(
    "setting, message",
    [
        ("components.mdc.shards=-1", "minimum"),
        ("components.mdc.shards=two", "integer"),
        ("components.mdc.shards=1001", "maximum"),
        ("components.mdc.shards=9", "every shard must hold one"),  # the default scenario has one data center
    ],
)
def test_bad_shard_counts_are_refused(setting: str, message: str):
    result = helm_template("--set", setting, check=False)
    assert result.returncode != 0 and message in result.stderr


def test_shard_relays_may_not_cover_the_control_ports(tmp_path):
    values = tmp_path / "values.yaml"
    fleet = yaml.safe_load((REPO / "helm" / "skyhaul" / "ci" / "fleet-values.yaml").read_text())
    values.write_text(yaml.safe_dump({"scenario": fleet["scenario"]}))
    result = helm_template(
        "-f",
        str(values),
        "--set",
        "components.mdc.shards=1",
        "--set",
        "components.terminal.relayPort=50052",
        check=False,
    )
    assert result.returncode != 0 and "include the" in result.stderr


def test_the_fleet_of_a_thousand_renders_as_shard_pods(tmp_path):
    scenario = yaml.safe_load((REPO / "scenarios" / "fleet-1000.yaml").read_text())
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"scenario": scenario, "components": {"mdc": {"shards": 8}}}))
    docs = render_chart(CHART, "-f", str(values))
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    shard_pods = [d for d in deployments if "skyhaul/shard" in d["spec"]["template"]["metadata"]["labels"]]
    assert len(shard_pods) == 8
    assert (
        len(deployments) == 8 + 2 + len(scenario["regions"]) + 2
    )  # shards, orbit, links, regions, redis, jaeger


@VARIANTS
def test_one_region_deployment_and_claim_per_scenario_region(values_file: Path | None):
    rendered = render(values_file)
    region = rendered.values["components"]["region"]
    ids = [r["id"] for r in rendered.values["scenario"]["regions"]]
    deployments = {
        d["spec"]["template"]["metadata"]["labels"]["skyhaul/region"]: d
        for d in rendered.of_kind("Deployment")
        if "skyhaul/region" in d["spec"]["template"]["metadata"]["labels"]
    }
    assert sorted(deployments) == sorted(ids)
    claims = {c["metadata"]["name"]: c for c in rendered.of_kind("PersistentVolumeClaim")}
    for region_id, deployment in deployments.items():
        spec = deployment["spec"]["template"]["spec"]
        [container] = spec["containers"]
        assert env_of(container)["SKYHAUL_REGION_ID"] == region_id
        assert deployment["spec"]["strategy"]["type"] == "Recreate"
        data = next(v for v in spec["volumes"] if v["name"] == "data")
        if region["persistence"]["enabled"]:
            claim = claims[data["persistentVolumeClaim"]["claimName"]]
            assert claim["spec"]["resources"]["requests"]["storage"] == region["persistence"]["size"]
        else:
            assert "emptyDir" in data
        assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]


@VARIANTS
def test_probes_target_declared_ports_and_every_server_has_grpc_probes(values_file: Path | None):
    rendered = render(values_file)
    for owner, _, spec in rendered.pod_specs():
        for container in all_containers(spec):
            declared = {p["containerPort"]: p.get("name") for p in container.get("ports") or []}
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                probe = container.get(kind)
                if probe is None:
                    continue
                handler = probe.get("grpc") or probe.get("httpGet") or probe.get("tcpSocket")
                if handler is None:
                    assert "exec" in probe, f"{owner}/{container['name']} {kind} has no handler"
                    continue
                port = handler["port"]
                assert port in declared or port in declared.values(), (
                    f"{owner}/{container['name']} {kind} targets port {port}, declared: {declared}"
                )
            if container.get("args", [""])[0] == "serve":
                for kind in ("readinessProbe", "livenessProbe"):
                    assert container[kind]["grpc"]["port"] in declared, (owner, container["name"], kind)


@VARIANTS
def test_services_select_exactly_one_workload_that_declares_their_target_ports(values_file: Path | None):
    rendered = render(values_file)
    for name, service in services_by_name(rendered).items():
        for port in service["spec"]["ports"]:
            resolve_service_port(rendered, name, port["port"])


@VARIANTS
def test_helm_test_pod_checks_every_grpc_server(values_file: Path | None):
    rendered = render(values_file)
    [pod] = rendered.of_kind("Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    [container] = pod["spec"]["containers"]
    args = container["args"]
    assert args[0] == "status" and pod["spec"]["restartPolicy"] == "Never"
    targets = {args[i + 1].split("=", 1)[1] for i, a in enumerate(args) if a == "--target"}
    grpc_ports = {
        f"{name}:{p['port']}"
        for name, s in services_by_name(rendered).items()
        for p in s["spec"]["ports"]
        if p.get("appProtocol") == "grpc"
        and s["metadata"]["labels"]["app.kubernetes.io/component"] != "jaeger"
    }
    assert targets == grpc_ports


@VARIANTS
def test_pods_are_locked_down(values_file: Path | None):
    rendered = render(values_file)
    for owner, _, spec in rendered.pod_specs():
        assert spec["securityContext"]["runAsNonRoot"] is True, owner
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", owner
        assert spec["automountServiceAccountToken"] is False, owner
        assert spec["enableServiceLinks"] is False, owner
        tmp_volumes = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        for container in all_containers(spec):
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, (owner, container["name"])
            assert context["allowPrivilegeEscalation"] is False, (owner, container["name"])
            assert context["capabilities"]["drop"] == ["ALL"], (owner, container["name"])
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts") or []}
            assert mounts.get("/tmp") in tmp_volumes, f"{owner}/{container['name']} has no writable /tmp"
            assert "limits" in container["resources"] and "requests" in container["resources"]


@VARIANTS
def test_images_are_pinned_and_skyhaul_defaults_to_the_app_version(values_file: Path | None):
    rendered = render(values_file)
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    images = [c["image"] for _, _, spec in rendered.pod_specs() for c in all_containers(spec)]
    for image in images:
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest" and "/" not in tag, image
    if not rendered.values["image"]["tag"]:
        assert skyhaul_image(rendered).endswith(f":{chart['appVersion']}")
        assert skyhaul_image(rendered) in images


@VARIANTS
def test_every_object_has_the_recommended_labels(values_file: Path | None):
    rendered = render(values_file)
    for doc in rendered.docs:
        labels = doc["metadata"]["labels"]
        for key in ("name", "instance", "version", "component", "part-of", "managed-by"):
            assert labels.get(f"app.kubernetes.io/{key}"), (doc["kind"], doc["metadata"]["name"], key)
        assert labels["app.kubernetes.io/part-of"] == "skyhaul"
        assert labels["helm.sh/chart"].startswith("skyhaul-")
    for deployment in rendered.of_kind("Deployment"):
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert "app.kubernetes.io/version" not in selector  # selectors are immutable; versions change
        assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


@VARIANTS
def test_the_scenario_config_map_is_the_scenario_in_values_and_every_service_mounts_it(
    values_file: Path | None,
):
    rendered = render(values_file)
    [config_map] = scenario_config_maps(rendered)
    scenario = yaml.safe_load(config_map["data"]["scenario.yaml"])
    expected = dict(rendered.values["scenario"])
    if not any(expected.get("constellation", {}).values()):
        expected["constellation"] = {"preset": "starlink-2020-10"}
    assert scenario == expected
    for _, _, spec, container in skyhaul_containers(rendered):
        if container["args"][0] != "serve":
            continue
        assert env_of(container)["SKYHAUL_SCENARIO"] == "/etc/skyhaul/scenario.yaml"
        volume = next(v for v in spec["volumes"] if v["name"] == "scenario")
        assert volume["configMap"]["name"] == config_map["metadata"]["name"]
        assert {"name": "scenario", "mountPath": "/etc/skyhaul", "readOnly": True} in container[
            "volumeMounts"
        ]


@VARIANTS
def test_the_rendered_scenario_is_one_the_services_accept(values_file: Path | None):
    [config_map] = scenario_config_maps(render(values_file))
    scenario = parse_scenario(yaml.safe_load(config_map["data"]["scenario.yaml"]), "chart")
    assert scenario.regions and len(scenario.regions) == len(
        render(values_file).values["scenario"]["regions"]
    )


def test_a_changed_scenario_restarts_the_pods_that_load_it():
    def checksums(rendered: Rendered) -> set[str]:
        return {
            d["spec"]["template"]["metadata"]["annotations"]["checksum/scenario"]
            for d in rendered.of_kind("Deployment")
            if "checksum/scenario" in d["spec"]["template"]["metadata"].get("annotations", {})
        }

    before, after = checksums(render(None)), checksums(render(None, "scenario.speed=30"))
    assert len(before) == len(after) == 1 and before != after


def test_repository_scenarios_are_accepted_by_the_chart(tmp_path):
    files = sorted((REPO / "scenarios").glob("*.yaml"))
    assert files, f"no scenarios/*.yaml under {REPO}: nothing to render, so nothing was checked"
    for path in files:
        values_file = tmp_path / f"{path.stem}-values.yaml"
        values_file.write_text(yaml.safe_dump({"scenario": yaml.safe_load(path.read_text())}))
        result = helm_template("-f", str(values_file), check=False)
        assert result.returncode == 0, f"{path.name} as chart values: {result.stderr}"


def test_the_chart_ports_are_the_service_registry_ports():
    # values.yaml cannot import Python: this keeps its copy of the port map equal to the one
    # written in skyhaul.runtime.services (which settings, the launcher and `k8s forward` use).
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert {name: values["components"][name]["port"] for name in SERVICES} == {
        name: info.port for name, info in SERVICES.items()
    }
    rendered = render(None)
    service_ports = {
        (s["metadata"]["labels"]["app.kubernetes.io/component"], p.get("name", ""), p["port"])
        for s in rendered.of_kind("Service")
        for p in s["spec"]["ports"]
    }
    for name, info in SERVICES.items():
        component = "mdc" if name == "terminal" else name  # the terminal is the mdc pod's sidecar
        assert any(c == component and port == info.port for c, _, port in service_ports), (
            f"no {component} Service port {info.port} for {name}: {sorted(service_ports)}"
        )


def test_rendering_fails_loudly_when_nothing_is_rendered(tmp_path):
    # A chart that renders no object must not pass the checks above by having nothing to check.
    empty = tmp_path / "empty-chart"
    (empty / "templates").mkdir(parents=True)
    (empty / "Chart.yaml").write_text("apiVersion: v2\nname: empty\nversion: 0.1.0\n")
    with pytest.raises(AssertionError, match="rendered no objects"):
        render_chart(empty)
