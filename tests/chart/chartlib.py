"""Helpers for the chart checks: find helm, render the chart, index what it renders.

helm comes from PATH or from .tools/bin (deploy/fetch-helm.sh puts it there; CI runs that script).
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "skyhaul"
RELEASE = "skyhaul"
NAMESPACE = "skyhaul"

# Every values file the chart ships or is deployed with; None is the chart's defaults alone.
VALUES_FILES: list[Path | None] = [
    None,
    *sorted((CHART / "ci").glob("*.yaml")),
    REPO / "deploy" / "kind" / "values.yaml",
]


def values_id(path: Path | None) -> str:
    return "defaults" if path is None else str(path.relative_to(REPO))


@functools.cache
def helm_binary() -> str | None:
    on_path = shutil.which("helm")
    if on_path:
        return on_path
    fetched = REPO / ".tools" / "bin" / "helm"
    return str(fetched) if fetched.is_file() else None


def run_helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    helm = helm_binary()
    assert helm is not None, "no helm binary on PATH or in .tools/bin: run deploy/fetch-helm.sh"
    result = subprocess.run([helm, *args], capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result


def helm_template(*args: str, check: bool = True, chart: Path = CHART) -> subprocess.CompletedProcess[str]:
    return run_helm("template", RELEASE, str(chart), "--namespace", NAMESPACE, *args, check=check)


def render_chart(chart: Path, *args: str) -> tuple[dict, ...]:
    """The objects `helm template` renders; an empty render is a failure, never a silent pass."""
    result = helm_template(*args, chart=chart)
    docs = tuple(d for d in yaml.safe_load_all(result.stdout) if d)
    assert docs, f"helm template {chart.name} {' '.join(args)} rendered no objects"
    return docs


@dataclass(frozen=True)
class Rendered:
    """The objects one `helm template` rendered, with lookups the checks need."""

    docs: tuple[dict, ...]
    values: dict  # the values the chart saw (defaults merged with the file)

    def of_kind(self, kind: str) -> list[dict]:
        return [d for d in self.docs if d["kind"] == kind]

    def named(self, kind: str, name: str) -> dict:
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
        return found[0]

    def pod_specs(self) -> list[tuple[str, dict, dict]]:
        """(owner name, pod labels, pod spec) of every Deployment template and bare Pod."""
        specs = [
            (
                d["metadata"]["name"],
                d["spec"]["template"]["metadata"]["labels"],
                d["spec"]["template"]["spec"],
            )
            for d in self.of_kind("Deployment")
        ]
        specs += [(p["metadata"]["name"], p["metadata"]["labels"], p["spec"]) for p in self.of_kind("Pod")]
        return specs


def all_containers(pod_spec: dict) -> list[dict]:
    return list(pod_spec.get("initContainers") or []) + list(pod_spec["containers"])


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env") or []}


@functools.cache
def render(values_file: Path | None = None, *set_args: str) -> Rendered:
    args = ["-f", str(values_file)] if values_file else []
    for item in set_args:
        args += ["--set", item]
    docs = render_chart(CHART, *args)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    if values_file:
        values = merge(values, yaml.safe_load(values_file.read_text()) or {})
    return Rendered(docs=docs, values=values)


def merge(base: dict, override: dict) -> dict:
    """Helm's rule: maps merge key by key, anything else (lists included) replaces."""
    out = dict(base)
    for key, value in override.items():
        out[key] = (
            merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out
