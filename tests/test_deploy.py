"""The deployment files, checked without a container engine: Dockerfile, .dockerignore, Compose,
Kubernetes manifests, the command lines of docs/deployment.md, and the Dockerfile's install steps.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement

from hpsearch.cli import build_parser
from hpsearch.commands import COMMANDS
from hpsearch.version import __version__

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DOCS = ROOT / "docs" / "deployment.md"

# Commands and flags other modules are adding: a command line that uses one is checked once its
# module is registered, and skipped (with the reason) until then.
PENDING_COMMANDS = {"dashboard", "status"}


# --- a small Dockerfile parser --------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str
    line: int
    stage: int  # 0 for the first FROM's stage, then 1, ...


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped (as Docker does)."""
    instructions: list[Instruction] = []
    stage = -1
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction is removed
        if not pending:
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        pending.append(line)
        keyword, _, value = " ".join(p for p in pending if p).partition(" ")
        pending = []
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, value.strip(), start, stage))
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


KNOWN_INSTRUCTIONS = {
    "FROM", "ARG", "ENV", "RUN", "COPY", "ADD", "WORKDIR", "USER", "EXPOSE", "HEALTHCHECK",
    "ENTRYPOINT", "CMD", "LABEL", "VOLUME", "STOPSIGNAL", "SHELL", "ONBUILD",
}  # fmt: skip


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text())


def _args(instructions: list[Instruction]) -> dict[str, str]:
    """ARG defaults, for resolving ${NAME} in FROM and RUN."""
    defaults: dict[str, str] = {}
    for i in instructions:
        if i.keyword == "ARG" and "=" in i.value:
            name, _, default = i.value.partition("=")
            defaults.setdefault(name.strip(), default.strip())
    return defaults


def _expand(value: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: variables.get(m.group(1), m.group(0)), value)


def _env(instructions: list[Instruction], stage: int) -> dict[str, str]:
    env: dict[str, str] = {}
    for i in instructions:
        if i.keyword == "ENV" and i.stage == stage:
            for pair in shlex.split(i.value):
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def _pip_installs(instructions: list[Instruction]) -> list[list[str]]:
    """The argument lists of every `pip install` in RUN instructions, ARGs filled in."""
    variables = _args(instructions)
    installs = []
    for i in instructions:
        if i.keyword != "RUN":
            continue
        for command in re.split(r"&&|;", i.value):
            tokens = shlex.split(_expand(command, variables))
            if tokens[:2] == ["pip", "install"]:
                installs.append(tokens[2:])
    return installs


def test_dockerfile_parses_into_known_instructions(dockerfile: list[Instruction]) -> None:
    assert dockerfile, "no instructions"
    unknown = [(i.line, i.keyword) for i in dockerfile if i.keyword not in KNOWN_INSTRUCTIONS]
    assert not unknown


def test_dockerfile_builds_on_python_311_slim_in_two_stages(
    dockerfile: list[Instruction],
) -> None:
    variables = _args(dockerfile)
    bases = [_expand(i.value, variables).split()[0] for i in dockerfile if i.keyword == "FROM"]
    assert len(bases) == 2
    assert all(b.startswith("python:3.11-slim") for b in bases), bases
    # The runtime stage only copies the virtual environment: no pip install, no apt-get there.
    runtime = [i for i in dockerfile if i.stage == 1 and i.keyword == "RUN"]
    assert not any("pip install" in i.value or "apt-get" in i.value for i in runtime)
    copied = [i.value for i in dockerfile if i.stage == 1 and i.keyword == "COPY"]
    assert copied == ["--from=build /opt/hpsearch /opt/hpsearch"]


def test_dockerfile_installs_lean_and_leaves_no_build_tools(dockerfile: list[Instruction]) -> None:
    text = " ".join(i.value for i in dockerfile if i.keyword == "RUN")
    for tool in ("gcc", "build-essential", "g++", "make ", "apt-get install"):
        assert tool not in text
    installs = _pip_installs(dockerfile)
    assert installs
    assert all("--no-cache-dir" in args for args in installs)


def test_dockerfile_copy_sources_exist_and_are_in_the_build_context(
    dockerfile: list[Instruction],
) -> None:
    rules = _dockerignore_rules()
    for i in dockerfile:
        if i.keyword not in ("COPY", "ADD") or "--from=" in i.value:
            continue
        *sources, _ = shlex.split(i.value)
        for source in sources:
            assert (ROOT / source).exists(), f"line {i.line}: COPY {source} does not exist"
            assert not _ignored(source, rules), f"line {i.line}: {source} is in .dockerignore"


def test_dockerfile_runs_hpsearch_as_a_non_root_user(dockerfile: list[Instruction]) -> None:
    entrypoints = [i for i in dockerfile if i.keyword == "ENTRYPOINT"]
    assert [json.loads(i.value) for i in entrypoints] == [["hpsearch"]]
    users = [i.value for i in dockerfile if i.keyword == "USER"]
    assert users
    assert users[-1].split(":")[0] not in ("root", "0")
    assert int(users[-1].split(":")[0]) >= 1000  # numeric, for Kubernetes' runAsNonRoot


def test_dockerfile_pins_match_pyproject(dockerfile: list[Instruction]) -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    requirements = [Requirement(r) for r in pyproject["project"]["dependencies"]]
    declared = {r.name.lower(): r for r in requirements}
    pins: dict[str, str] = {}
    for args in _pip_installs(dockerfile):
        for token in args:
            if "==" in token and not token.startswith("-"):
                requirement = Requirement(token)
                pins[requirement.name.lower()] = next(iter(requirement.specifier)).version
    assert pins == {"torch": "2.14.1", "torchvision": "0.29.1"}
    for name, version in pins.items():
        assert name in declared, f"{name} is pinned in the Dockerfile but not a dependency"
        assert declared[name].specifier.contains(version), (name, version, declared[name])


def test_dockerfile_holds_no_secret_and_sets_the_nvidia_runtime_variables(
    dockerfile: list[Instruction],
) -> None:
    for i in dockerfile:
        if i.keyword in ("ENV", "ARG", "LABEL"):
            assert not re.search(r"PASSWORD|SECRET|TOKEN|_KEY\b", i.value, re.I), i
    env = _env(dockerfile, stage=1)
    assert set(env["NVIDIA_DRIVER_CAPABILITIES"].split(",")) >= {"compute", "utility"}
    assert "NVIDIA_VISIBLE_DEVICES" in env
    assert "/opt/hpsearch/bin" in env["PATH"].split(":")


# --- .dockerignore ---------------------------------------------------------------------------


def _dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """(exclude?, regex) per line, in order; Docker's matching: `**` any depth, `*` one name."""
    rules = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exclude = not line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        for part in re.split(r"(\*\*/?|\*|\?|\[[^\]]*\])", pattern):
            if part.startswith("**"):
                regex += "(.*/)?" if part.endswith("/") else ".*"
            elif part == "*":
                regex += "[^/]*"
            elif part == "?":
                regex += "[^/]"
            elif part.startswith("["):
                regex += part  # a character class, as in Go's filepath.Match
            else:
                regex += re.escape(part)
        rules.append((exclude, re.compile(regex + r"\Z")))
    return rules


def _ignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether the build context leaves `path` out: the last rule matching it or a parent wins."""
    parts = path.strip("/").split("/")
    ignored = False
    for exclude, regex in rules:
        if any(regex.match("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            ignored = exclude
    return ignored


@pytest.mark.parametrize(
    "path",
    [
        ".git/HEAD", ".venv/bin/python", "venv/lib/x.py", "storage/hpsearch.db",
        "storage/artifacts/s/ckpt.pt", "data/train/cat/1.png", "datasets/x.csv",
        "deploy/.env", ".env", "hpsearch/__pycache__/cli.cpython-311.pyc",
        "hpsearch/train/__pycache__/loop.cpython-311.pyc", ".mypy_cache/x", ".pytest_cache/v",
        "hpsearch.egg-info/PKG-INFO", "tests/test_deploy.py", "studies/quickstart.yaml",
    ],
)  # fmt: skip
def test_dockerignore_keeps_data_environments_caches_and_secrets_out(path: str) -> None:
    assert _ignored(path, _dockerignore_rules())


@pytest.mark.parametrize("path", ["pyproject.toml", "hpsearch/cli.py", "hpsearch/train/loop.py"])
def test_dockerignore_lets_the_package_in(path: str) -> None:
    assert not _ignored(path, _dockerignore_rules())


# --- the Dockerfile's install steps, exercised -----------------------------------------------


def _site_packages_view(target: Path) -> Path:
    """This environment's site-packages without hpsearch: symlinks, so nothing is copied."""
    site = Path(sysconfig.get_paths()["purelib"])
    target.mkdir()
    for entry in site.iterdir():
        name = entry.name.lower()
        if name.startswith(("hpsearch", "__editable__")) or name.endswith(".pth"):
            continue
        (target / entry.name).symlink_to(entry)
    return target


@pytest.mark.slow
def test_dockerfile_install_steps_work_in_a_fresh_environment(
    dockerfile: list[Instruction], tmp_path: Path
) -> None:
    """The build stage's COPY and `pip install` steps, offline, into a fresh virtual environment.

    The new environment sees this one's packages (torch included) through a .pth file, so pip
    installs only hpsearch, from the files the Dockerfile copies, and must find every dependency
    already satisfied at the pinned versions; then its `hpsearch --version` runs.
    """
    source = tmp_path / "src"  # the build stage's WORKDIR
    source.mkdir()
    for i in dockerfile:
        if i.keyword == "COPY" and "--from=" not in i.value:
            src, dest = shlex.split(i.value)
            target = source / dest / Path(src).name if dest.endswith("/") else source / dest
            if (ROOT / src).is_dir():
                shutil.copytree(ROOT / src, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(ROOT / src, target)
    venv = tmp_path / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    purelib = subprocess.run(
        [python, "-c", "import sysconfig as s; print(s.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    view = _site_packages_view(tmp_path / "site")
    (Path(purelib) / "shared-packages.pth").write_text(f"{view}\n")

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "HPSEARCH_"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1")
    for args in _pip_installs(dockerfile):
        offline = []
        skip = False
        for token in args:
            if skip:
                skip = False
            elif token in ("--index-url", "-i", "--extra-index-url"):
                skip = True  # offline here: what is installed must already satisfy the pins
            elif not token.startswith(("--index-url=", "--extra-index-url=")):
                offline.append(token)
        result = subprocess.run(
            [python, "-m", "pip", "install", "--no-index",
             "--no-build-isolation", "--quiet", *offline],
            cwd=source, env=env, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert result.returncode == 0, f"pip install {' '.join(args)}:\n{result.stderr}"

    version = subprocess.run(
        [str(venv / "bin" / "hpsearch"), "--version"],
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"hpsearch {__version__}"
    where = subprocess.run(
        [python, "-c", "import hpsearch; print(hpsearch.__file__)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert where.startswith(str(venv)), where  # the fresh install, not this checkout


# --- Compose ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def _default(value: str) -> str:
    """`${NAME:-default}` -> default; `${NAME:?message}` and `${NAME}` -> NAME."""
    return re.sub(
        r"\$\{(\w+)(?::?([-?])([^}]*))?\}",
        lambda m: m.group(3) if m.group(2) == "-" else m.group(1),
        value,
    )


def test_compose_runs_postgres_with_a_volume_and_a_healthcheck(compose: dict[str, Any]) -> None:
    postgres = compose["services"]["postgres"]
    assert postgres["image"].startswith("postgres:")
    assert postgres["image"] != "postgres:latest"
    volume = postgres["volumes"][0].split(":")[0]
    assert volume in compose["volumes"]  # a named volume, not a folder of the checkout
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert "ports" not in postgres  # reached by the services of the file only


def test_compose_workers_reserve_one_gpu_each_and_stop_gracefully(
    compose: dict[str, Any],
) -> None:
    worker = compose["services"]["worker"]
    deploy = worker["deploy"]
    assert int(_default(str(deploy["replicas"]))) >= 1
    assert deploy["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}
    ]
    assert worker["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert worker["command"][0] == "run"
    assert int(worker["stop_grace_period"].rstrip("s")) >= 30
    assert worker["restart"] == "on-failure"  # exit 0 = budget spent: not restarted


def test_compose_dashboard_is_read_only_on_the_loopback(compose: dict[str, Any]) -> None:
    dashboard = compose["services"]["dashboard"]
    assert dashboard["command"][0] == "dashboard"
    assert "--read-only" in dashboard["command"]
    assert dashboard["ports"]
    assert all(_default(p).startswith("127.0.0.1:") for p in dashboard["ports"])


def test_compose_mounts_studies_read_only_and_builds_this_dockerfile(
    compose: dict[str, Any],
) -> None:
    for name in ("worker", "dashboard"):
        service = compose["services"][name]
        studies = [
            v for v in service["volumes"] if isinstance(v, dict) and v["target"] == "/studies"
        ]
        assert studies, name
        assert all(v["read_only"] is True for v in studies), name
        assert (DEPLOY / _default(studies[0]["source"])).resolve() == ROOT / "studies"
        build = service["build"]
        assert (DEPLOY / build["context"]).resolve() == ROOT
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE


def _strings(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _strings(value, f"{path}[{index}]")
    elif isinstance(node, str):
        yield path, node


def test_compose_takes_the_password_from_the_env_file_only(compose: dict[str, Any]) -> None:
    secrets = [(p, v) for p, v in _strings(compose) if re.search(r"PASSWORD", p, re.I)]
    assert secrets
    for path, value in secrets:
        assert re.fullmatch(r"\$\{HPSEARCH_DB_PASSWORD:\?[^}]*\}", value), (path, value)
    for path, value in _strings(compose):
        if "://" in value:
            assert "@" not in value or ":" not in value.split("://")[1].split("@")[0], path
    example = (DEPLOY / ".env.example").read_text()
    assert re.search(r"^HPSEARCH_DB_PASSWORD=EXAMPLE", example, re.M)
    used = set(re.findall(r"\$\{(\w+)", (DEPLOY / "compose.yaml").read_text()))
    assert used <= set(re.findall(r"^(\w+)=", example, re.M)), "document every variable"


def test_the_filled_in_secrets_are_ignored_by_git() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    for path in ("deploy/.env", "deploy/k8s/secret.yaml"):
        check = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT)
        assert check.returncode == 0, f"{path} is not git-ignored"
    for path in ("deploy/.env.example", "deploy/k8s/secret.example.yaml"):
        check = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT)
        assert check.returncode == 1, f"{path} is git-ignored but must be committed"


# --- Kubernetes -------------------------------------------------------------------------------


def _manifests() -> list[tuple[str, dict[str, Any]]]:
    documents = []
    for path in sorted(K8S.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document is not None:
                documents.append((path.name, document))
    return documents


def _one(kind: str, name: str) -> dict[str, Any]:
    found = [d for _, d in _manifests() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name)
    return found[0]


def _pod(document: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = document["spec"]["template"]["spec"]
    return spec


API_VERSIONS = {
    "Secret": "v1", "Service": "v1", "Job": "batch/v1", "Deployment": "apps/v1",
    "NetworkPolicy": "networking.k8s.io/v1", "Kustomization": "kustomize.config.k8s.io/v1beta1",
}  # fmt: skip


def test_k8s_manifests_are_yaml_of_the_expected_kinds() -> None:
    documents = _manifests()
    kinds = sorted((file, d["kind"]) for file, d in documents)
    assert kinds == [
        ("dashboard.yaml", "Deployment"), ("dashboard.yaml", "Service"),
        ("kustomization.yaml", "Kustomization"), ("secret.example.yaml", "Secret"),
        ("storage-proxy.yaml", "Deployment"), ("storage-proxy.yaml", "NetworkPolicy"),
        ("storage-proxy.yaml", "Service"), ("workers-job.yaml", "Job"),
    ]  # fmt: skip
    for file, d in documents:
        assert d["apiVersion"] == API_VERSIONS[d["kind"]], file
        if d["kind"] != "Kustomization":
            assert re.fullmatch(r"[a-z0-9-]+", d["metadata"]["name"]), file


def test_k8s_kustomization_builds_without_the_secret() -> None:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    built = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60
    )
    assert built.returncode == 0, built.stderr
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(built.stdout) if d)
    assert kinds == ["Deployment", "Job", "Service"]


def test_k8s_secret_holds_example_values_only() -> None:
    secret = _one("Secret", "hpsearch-db")
    data = secret["stringData"]
    assert set(data) == {"HPSEARCH_STORAGE", "HPSEARCH_DB_PASSWORD"}
    assert data["HPSEARCH_DB_PASSWORD"].startswith("EXAMPLE-ONLY")
    assert "example" in data["HPSEARCH_STORAGE"]
    assert ":" not in data["HPSEARCH_STORAGE"].split("://")[1].split("@")[0]
    assert "hpsearch-example-only" in secret["metadata"]["annotations"]
    assert "EXAMPLE ONLY" in (K8S / "secret.example.yaml").read_text().splitlines()[0]
    kustomized = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert all((K8S / r).is_file() for r in kustomized)
    assert not any("secret" in r for r in kustomized)


def test_k8s_workers_are_an_indexed_job_with_one_gpu_each() -> None:
    job = _one("Job", "hpsearch-workers")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] >= spec["parallelism"] >= 1
    rules = spec["podFailurePolicy"]["rules"]
    assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]} in rules
    pod = _pod(job)
    assert pod["restartPolicy"] == "Never"  # required by podFailurePolicy
    # The graceful stop must fit: well above the proxy's and the worker's few seconds of cleanup.
    assert 30 <= pod["terminationGracePeriodSeconds"] <= 600
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "CUDA_VISIBLE_DEVICES" not in {e["name"] for e in container.get("env", [])}
    assert "--gpus" not in container["args"]  # the device plugin picks the GPU
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/studies"]["readOnly"] is True
    assert "/artifacts" in mounts


def test_k8s_dashboard_is_read_only_behind_a_cluster_ip_service() -> None:
    deployment = _one("Deployment", "hpsearch-dashboard")
    (container,) = _pod(deployment)["containers"]
    assert container["args"][0] == "dashboard"
    assert "--read-only" in container["args"]
    service = _one("Service", "hpsearch-dashboard")
    assert service["spec"]["type"] == "ClusterIP"


def test_k8s_services_select_their_pods_and_name_real_ports() -> None:
    for _, service in [(f, d) for f, d in _manifests() if d["kind"] == "Service"]:
        name = service["metadata"]["name"]
        deployment = _one("Deployment", name)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items(), name
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items(), name
        ports = {p["name"] for c in _pod(deployment)["containers"] for p in c["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports, name
    policy = _one("NetworkPolicy", "hpsearch-storage-proxy")
    worker_labels = _one("Job", "hpsearch-workers")["spec"]["template"]["metadata"]["labels"]
    (allowed,) = policy["spec"]["ingress"][0]["from"]
    assert allowed["podSelector"]["matchLabels"].items() <= worker_labels.items()


def test_k8s_pods_run_the_image_as_its_non_root_user_with_the_secret(
    dockerfile: list[Instruction],
) -> None:
    uid = int([i.value for i in dockerfile if i.keyword == "USER"][-1].split(":")[0])
    images = set()
    for file, d in _manifests():
        if d["kind"] not in ("Job", "Deployment"):
            continue
        pod = _pod(d)
        assert pod["securityContext"]["runAsNonRoot"] is True, file
        assert pod["securityContext"]["runAsUser"] == uid, file
        for container in pod["containers"]:
            images.add(container["image"])
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, file
            refs = [e["secretRef"]["name"] for e in container["envFrom"]]
            assert refs == ["hpsearch-db"], file
    assert len(images) == 1
    assert not images.pop().endswith(":latest")


# --- every hpsearch command line the deployment files show is one the CLI accepts -------------


def _shell_commands(text: str) -> Iterator[tuple[int, str]]:
    """(line number, command) of the shell code blocks of a markdown file, continuations joined."""
    in_block, shell, pending, start = False, False, "", 0
    for number, line in enumerate(text.splitlines(), 1):
        fence = re.match(r"\s*```(\w*)", line)
        if fence:
            in_block = not in_block
            shell = in_block and fence.group(1) in ("bash", "sh", "shell", "console", "")
            continue
        if not (in_block and shell):
            continue
        stripped = line.split(" #")[0].strip() if " #" in line else line.strip()
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        command = (pending + stripped).strip()
        pending = ""
        if command and not command.startswith("#"):
            yield start, command.removeprefix("$ ")


IMAGE = re.compile(r"([\w.\-]+(:\d+)?/)*hpsearch:[\w.\-]+")


def hpsearch_argv(command: str) -> list[str] | None:
    """The arguments given to hpsearch by a shell command line, or None if it runs no hpsearch.

    Understands `hpsearch ARGS`, `VAR=x hpsearch ARGS`, `docker run ... IMAGE ARGS`,
    `docker compose ... exec SERVICE hpsearch ARGS` and `kubectl exec ... -- hpsearch ARGS`.
    """
    tokens = shlex.split(command)
    tokens = tokens[: next((i for i, t in enumerate(tokens) if t in ("|", "&&", ";", ">")), None)]
    while tokens and re.fullmatch(r"\w+=.*", tokens[0]):
        tokens = tokens[1:]
    if not tokens:
        return None
    if tokens[0] == "hpsearch":
        return tokens[1:]
    if tokens[:2] == ["docker", "run"] and "--entrypoint" not in tokens:
        image = next((i for i, t in enumerate(tokens) if IMAGE.fullmatch(t)), None)
        return None if image is None else tokens[image + 1 :]
    for i, token in enumerate(tokens[:-1]):
        if tokens[i + 1] == "hpsearch" and (token == "--" or i >= 1 and tokens[i - 1] == "exec"):
            return tokens[i + 2 :]
    return None


def _command_lines() -> list[tuple[str, list[str]]]:
    found: list[tuple[str, list[str]]] = []
    for number, command in _shell_commands(DOCS.read_text()):
        argv = hpsearch_argv(command)
        if argv is not None:
            found.append((f"docs/deployment.md:{number}", argv))
    for number, line in enumerate(DOCKERFILE.read_text().splitlines(), 1):
        example = re.match(r"#\s+(docker run .*)", line)  # the usage lines of its header
        argv = hpsearch_argv(example.group(1)) if example else None
        if argv is not None:
            found.append((f"Dockerfile:{number}", argv))
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    for name, service in services.items():
        if "command" in service and name != "postgres":
            found.append((f"compose.yaml:{name}", [_default(a) for a in service["command"]]))
    for file, d in _manifests():
        if d["kind"] in ("Job", "Deployment"):
            for container in _pod(d)["containers"]:
                found.append((f"k8s/{file}:{container['name']}", container["args"]))
    return found


COMMAND_LINES = _command_lines()


def test_the_deployment_files_show_every_role_of_the_image() -> None:
    shown = {argv[0] for _, argv in COMMAND_LINES if argv}
    assert {"run", "dashboard", "storage-proxy", "validate", "status"} <= shown
    assert any("--gpus" in argv for _, argv in COMMAND_LINES)
    assert any(a.startswith("grpc://") for _, argv in COMMAND_LINES for a in argv)


@pytest.mark.parametrize(("where", "argv"), COMMAND_LINES, ids=[w for w, _ in COMMAND_LINES])
def test_every_command_line_is_accepted_by_the_cli(where: str, argv: list[str]) -> None:
    registered = {c.NAME for c in COMMANDS}
    if argv and argv[0] in PENDING_COMMANDS and argv[0] not in registered:
        pytest.skip(f"`hpsearch {argv[0]}` is not registered yet")
    errors = io.StringIO()
    code: object = 0
    try:
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(argv)
    except SystemExit as e:
        code = e.code
    assert code == 0, f"{where}: hpsearch {shlex.join(argv)}\n{errors.getvalue()}"
    for token in argv:
        assert not re.search(r"://[^/@\s]+:[^/@\s]+@", token), f"{where}: a password in argv"


def test_docs_links_to_its_own_sections_resolve() -> None:
    text = DOCS.read_text()
    headings = re.findall(r"^#+ (.+)$", text, re.M)
    anchors = {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}
    for link in re.findall(r"\]\(#([^)]+)\)", text):
        assert link in anchors, link
