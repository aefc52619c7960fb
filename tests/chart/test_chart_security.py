"""The chart's access control (issue 16): the Secret (token, event key, Redis password), its wiring
into every pod, Redis with a password, and the NetworkPolicies (who reaches regions and Redis)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from chartlib import RELEASE, VALUES_FILES, Rendered, all_containers, render, values_id

VARIANTS = pytest.mark.parametrize("values_file", VALUES_FILES, ids=values_id)
SECRET_KEYS = {"token", "eventKey", "redisPassword"}


def secret_refs(container: dict) -> dict[str, tuple[str, str]]:
    """name -> (secret, key) of every env var the container takes from a Secret."""
    return {
        e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for e in container.get("env") or []
        if "secretKeyRef" in (e.get("valueFrom") or {})
    }


def the_secret(rendered: Rendered) -> dict:
    [secret] = [
        s
        for s in rendered.of_kind("Secret")
        if s["metadata"]["labels"]["app.kubernetes.io/component"] == "secrets"
    ]
    return secret


def serving_containers(rendered: Rendered):
    for owner, labels, spec in rendered.pod_specs():
        for container in all_containers(spec):
            if (container.get("args") or [None])[0] == "serve":
                yield owner, labels, container


@VARIANTS
def test_a_secret_holds_a_generated_token_event_key_and_redis_password(values_file: Path | None):
    secret = the_secret(render(values_file))
    data = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    assert set(data) == SECRET_KEYS
    assert all(len(value) == 40 and value.isalnum() for value in data.values()), "randAlphaNum 40 each"
    assert len(set(data.values())) == 3


def test_values_given_are_used_and_an_existing_secret_replaces_ours():
    secret = the_secret(render(None, "security.token=tok-123", "security.redisPassword=abc123"))
    assert base64.b64decode(secret["data"]["token"]) == b"tok-123"
    assert base64.b64decode(secret["data"]["redisPassword"]) == b"abc123"
    assert len(base64.b64decode(secret["data"]["eventKey"])) == 40  # still generated

    rendered = render(None, "security.existingSecret=my-secrets")
    assert not rendered.of_kind("Secret")
    for _, _, container in serving_containers(rendered):
        assert {secret for secret, _ in secret_refs(container).values()} == {"my-secrets"}


@VARIANTS
def test_every_service_gets_the_token_and_event_key_and_redis_its_password(values_file: Path | None):
    rendered = render(values_file)
    name = the_secret(rendered)["metadata"]["name"]
    external = bool(rendered.values["redis"]["externalUrl"])
    checked = 0
    for owner, _, container in serving_containers(rendered):
        refs = secret_refs(container)
        assert refs["SKYHAUL_TOKEN"] == (name, "token"), owner
        assert refs["SKYHAUL_EVENT_KEY"] == (name, "eventKey"), owner
        names = [e["name"] for e in container["env"]]
        if external:
            assert "SKYHAUL_REDIS_PASSWORD" not in refs
        else:
            assert refs["SKYHAUL_REDIS_PASSWORD"] == (name, "redisPassword")
            # $(VAR) expands only from variables defined earlier in the list.
            assert names.index("SKYHAUL_REDIS_PASSWORD") < names.index("SKYHAUL_REDIS_URL")
        checked += 1
    assert checked >= 5

    redis = [d for d in rendered.of_kind("Deployment") if d["metadata"]["name"].endswith("-redis")]
    assert len(redis) == (0 if external else 1)
    for deployment in redis:
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        args = container["args"]
        assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
        assert "--protected-mode" not in args
        refs = secret_refs(container)
        assert refs["REDIS_PASSWORD"] == refs["REDISCLI_AUTH"] == (name, "redisPassword")


def admitted(rendered: Rendered, policy: dict, port: int) -> set[str]:
    """Components of the rendered pods a policy lets through to `port` of the pods it selects."""
    components = set()
    for _, labels, _ in rendered.pod_specs():
        for rule in policy["spec"]["ingress"]:
            if not any(p["port"] == port for p in rule.get("ports") or []):
                continue
            sources = rule.get("from")
            if sources is None or any(
                selects(s["podSelector"], labels) for s in sources if "podSelector" in s
            ):
                components.add(labels["app.kubernetes.io/component"])
    return components


def selects(selector: dict, labels: dict) -> bool:
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions") or []:
        assert expression["operator"] == "In"
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def policy_for(rendered: Rendered, component: str) -> dict:
    found = [
        p
        for p in rendered.of_kind("NetworkPolicy")
        if p["spec"]["podSelector"]["matchLabels"].get("app.kubernetes.io/component") == component
    ]
    assert len(found) == 1, f"expected one NetworkPolicy for {component}, found {len(found)}"
    policy = found[0]
    selected = [o for o, labels, _ in rendered.pod_specs() if selects(policy["spec"]["podSelector"], labels)]
    assert selected and all(
        labels["app.kubernetes.io/instance"] == RELEASE for _, labels, _ in rendered.pod_specs()
    )
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    return policy


@VARIANTS
def test_only_data_center_pods_reach_regions_and_only_skyhaul_pods_reach_redis(values_file: Path | None):
    rendered = render(values_file)
    values = rendered.values
    region = policy_for(rendered, "region")
    assert admitted(rendered, region, values["components"]["region"]["port"]) == {"mdc", "test"}
    if not values["redis"]["externalUrl"]:
        redis = policy_for(rendered, "redis")
        assert admitted(rendered, redis, 6379) == {
            "orbit",
            "links",
            "region",
            "mdc",
        }  # not jaeger, not the test pod
    mdc = policy_for(rendered, "mdc")
    ports = {p["port"] for rule in mdc["spec"]["ingress"] for p in rule["ports"]}
    assert ports == {values["components"]["mdc"]["port"], values["components"]["terminal"]["port"]}
    assert values["components"]["terminal"]["relayPort"] not in ports


@VARIANTS
def test_the_relay_listens_on_loopback_inside_the_data_center_pod(values_file: Path | None):
    rendered = render(values_file)
    for owner, _, container in serving_containers(rendered):
        if container["args"][1] == "terminal":
            env = {e["name"]: e.get("value", "") for e in container["env"]}
            # A shard's sync relays (SKYHAUL_RELAY_BASE_PORT + j) always bind 127.0.0.1 (terminal/service.py).
            assert "SKYHAUL_TERMINAL_FORWARDS" in env or "SKYHAUL_RELAY_BASE_PORT" in env, owner
            for item in filter(None, env.get("SKYHAUL_TERMINAL_FORWARDS", "").split(",")):
                local = item.split("=")[0]
                assert local.isdigit(), f"{owner}: relay {item!r} names a listen host (default is 127.0.0.1)"


def test_network_policies_can_be_switched_off():
    assert not render(None, "security.networkPolicies=false").of_kind("NetworkPolicy")
