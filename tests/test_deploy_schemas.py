"""The deployment files against their published schemas, offline: Compose and Kubernetes.

`deploy/compose.yaml` against the Compose Specification's JSON schema (vendored in
tests/schemas/), with every `${VAR}` filled in as Compose would from deploy/.env.example;
`deploy/k8s/*.yaml` against the strict Kubernetes schemas (no unknown field, every required
one) of each supported Kubernetes version, shipped by the `kubernetes-validate` package.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
# The Kubernetes versions the manifests support: the oldest whose Job API they need
# (podFailurePolicy on by default, Indexed Jobs) to the newest the validator knows.
KUBERNETES_VERSIONS = [f"1.{minor}.0" for minor in range(29, 38)]


def _interpolated(text: str, env: dict[str, str]) -> str:
    """Compose's interpolation: `${X}`, `${X:-default}`, `${X:?error}` from `env`."""

    def value(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if env.get(name):
            return env[name]
        if op == "-":
            return arg or ""
        raise AssertionError(f"${{{name}}} has no value in deploy/.env.example")

    return re.sub(r"\$\{(\w+)(?::?([-?])([^}]*))?\}", value, text)


def test_compose_file_passes_the_compose_spec_schema() -> None:
    example = (DEPLOY / ".env.example").read_text()
    env = dict(re.findall(r"^(\w+)=(.*)$", example, re.M))
    document = yaml.safe_load(_interpolated((DEPLOY / "compose.yaml").read_text(), env))
    schema = json.loads((ROOT / "tests" / "schemas" / "compose-spec.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
    )


def test_the_compose_schema_check_can_fail() -> None:
    schema = json.loads((ROOT / "tests" / "schemas" / "compose-spec.json").read_text())
    broken = {"services": {"worker": {"image": "x", "replica": 2}}}  # not a Compose key
    assert list(jsonschema.Draft7Validator(schema).iter_errors(broken))


def _manifests() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.name, document)
        for path in sorted((DEPLOY / "k8s").glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
        if document and document["kind"] != "Kustomization"  # kustomize's, not the API's
    ]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_k8s_manifests_pass_strict_validation(version: str) -> None:
    problems = []
    for file, document in _manifests():
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            where = ".".join(map(str, e.caught.absolute_path))
            problems.append(f"{file} {document['kind']} {where}: {e.caught.message}")
    assert not problems, f"Kubernetes {version}:\n" + "\n".join(problems)


def test_strict_validation_catches_what_the_issue_found() -> None:
    """The rule without `status` that Kubernetes up to 1.34 refuses, and an unknown field."""
    (job,) = [d for _, d in _manifests() if d["kind"] == "Job"]
    rules = job["spec"]["podFailurePolicy"]["rules"]
    without = {**job, "spec": {**job["spec"], "podFailurePolicy": {"rules": [
        {**rules[0], "onPodConditions": [{"type": "DisruptionTarget"}]}]}}}  # fmt: skip
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(without, "1.34.0", strict=True)
    unknown = {**job, "spec": {**job["spec"], "paralellism": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(unknown, "1.37.0", strict=True)
