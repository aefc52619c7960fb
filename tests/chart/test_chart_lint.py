"""The chart as Helm and Kubernetes see it: strict lint, the values schema, the API schemas."""

from __future__ import annotations

import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from chartlib import CHART, REPO, VALUES_FILES, helm_template, render, run_helm, values_id

# A current Kubernetes minor that kubernetes-validate ships schemas for (kind's node images track it).
KUBERNETES_VERSION = "1.35.0"


@pytest.mark.parametrize("values_file", VALUES_FILES, ids=values_id)
def test_helm_lint_strict(values_file: Path | None):
    args = ["lint", "--strict", str(CHART)] + (["-f", str(values_file)] if values_file else [])
    result = run_helm(*args, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("values_file", VALUES_FILES, ids=values_id)
def test_rendered_objects_validate_against_the_kubernetes_schemas(values_file: Path | None):
    rendered = render(values_file)
    assert len(rendered.docs) >= 8
    for doc in rendered.docs:
        # strict: an unknown field (a typo such as `readinessprobe`) is an error, as the API server's is
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_validator_would_catch_a_misspelt_field():
    deployment = render(None).of_kind("Deployment")[0]
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = broken["spec"]["template"][
        "spec"
    ]["containers"][0].pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinessprobe"):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize(
    ("values", "unknown"),
    [
        ({"replicaCount": 2}, "replicaCount"),
        ({"image": {"repository": "skyhaul", "tag": "0.1.0", "digest": "sha256:0"}}, "digest"),
        ({"components": {"orbit": {"port": 50051, "replicas": 2}}}, "replicas"),
        (
            {"components": {"region": {"port": 50053, "persistance": {"enabled": True, "size": "1Gi"}}}},
            "persistance",
        ),
        ({"components": {"gateway": {"port": 50056}}}, "gateway"),
        ({"jaeger": {"enabled": True, "storage": "badger"}}, "storage"),
        ({"redis": {"externalUrl": "", "password": "x"}}, "password"),
        ({"scenario": {"regions": [{"id": "westus2", "colour": "blue"}], "data_centers": []}}, "colour"),
        ({"scenario": {"sheduler": {"mode": "slotted"}}}, "sheduler"),
    ],
)
def test_a_values_file_with_an_unknown_key_is_rejected(tmp_path, values, unknown):
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    result = helm_template("-f", str(values_file), check=False)
    assert result.returncode != 0, f"helm accepted the unknown key {unknown!r}"
    assert re.search(rf"additional properties '{unknown}' not allowed", result.stderr), result.stderr


@pytest.mark.parametrize(
    "setting",
    ["image.tag=latest", "redis.image.tag=latest", "jaeger.image.tag=latest"],
)
def test_latest_is_never_accepted_as_an_image_tag(setting):
    result = helm_template("--set", setting, check=False)
    assert result.returncode != 0
    assert "tag" in result.stderr


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("scenario.regions[0].id=West_US", "/scenario/regions/0/id"),
        ("components.orbit.nodePort=8080", "/components/orbit/nodePort"),
        ("logLevel=verbose", "/logLevel"),
        ("scenario.constellation.shells[0].planes=0", "/scenario/constellation"),
    ],
)
def test_bad_values_name_the_offending_field(setting, message):
    result = helm_template("--set", setting, check=False)
    assert result.returncode != 0
    assert message in result.stderr


def test_two_sources_for_the_constellation_are_rejected():
    result = helm_template(
        "--set",
        "scenario.constellation.preset=kuiper-630",
        "--set",
        "scenario.constellation.tle_file=x.tle",
        check=False,
    )
    assert result.returncode != 0 and "/scenario/constellation" in result.stderr


def test_inconsistent_scenarios_fail_with_a_message_naming_the_problem(tmp_path):
    values_file = tmp_path / "values.yaml"
    values_file.write_text(
        yaml.safe_dump(
            {
                "scenario": {
                    "regions": [{"id": "westus2"}],
                    "data_centers": [
                        {"id": "mdc-a", "home_region": "eastus", "location": {"lat": 1, "lon": 2}}
                    ],
                }
            }
        )
    )
    result = helm_template("-f", str(values_file), check=False)
    assert result.returncode != 0
    assert (
        'scenario.data_centers[mdc-a].home_region: "eastus" is not a region in scenario.regions (westus2)'
        in (result.stderr)
    )
    values_file.write_text(yaml.safe_dump({"scenario": {"regions": [{"id": "westus2"}, {"id": "westus2"}]}}))
    result = helm_template("-f", str(values_file), check=False)
    assert result.returncode != 0 and 'id "westus2" appears twice' in result.stderr


def test_chart_app_version_is_the_package_version():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    pyproject = (REPO / "pyproject.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', pyproject, re.MULTILINE).group(1)
    assert chart["appVersion"] == version
    assert chart["apiVersion"] == "v2" and re.fullmatch(r"\d+\.\d+\.\d+", chart["version"])
