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
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import fresh_venv
from packaging.requirements import Requirement

from hpsearch.cli import build_parser
from hpsearch.commands import NAMES
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
    # The runtime stage takes only the wheel from the build stage, and installs no system
    # package: everything it runs comes from the lock files.
    runtime = [i for i in dockerfile if i.stage == 1]
    assert not any("apt-get" in i.value for i in runtime if i.keyword == "RUN")
    copied = [i.value for i in runtime if i.keyword == "COPY" and "--from=" in i.value]
    assert copied == ["--from=wheel /wheels /opt/hpsearch/wheels"]


def test_dockerfile_layers_put_the_code_last_and_the_largest_dependency_first(
    dockerfile: list[Instruction],
) -> None:
    """A code edit must not invalidate a dependency layer (tests/test_image.py builds it)."""
    runtime = [i for i in dockerfile if i.stage == 1 and i.keyword in ("COPY", "RUN")]
    order = [(i.keyword, i.value) for i in runtime]
    sources = [value.split()[0] for keyword, value in order if keyword == "COPY"]
    assert sources == [
        "deploy/image/torch-${TORCH}.txt", "deploy/image/requirements.txt", "--from=wheel",
    ]  # fmt: skip
    installs = [value for keyword, value in order if keyword == "RUN" and "pip install" in value]
    assert len(installs) == 3
    assert "torch-${TORCH}.txt" in installs[0]
    assert "--no-deps" in installs[0]
    assert "--require-hashes" in installs[1]
    assert "--no-deps" in installs[1]
    assert "hpsearch-*.whl" in installs[2]
    assert "pip check" in installs[2]
    # Nothing from the project's source reaches the runtime stage before the lock files do.
    assert order[-1][0] == "RUN"
    assert order[-2][1].startswith("--from=wheel")


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
    for variant in TORCH_VARIANTS:
        variables = {**_args(dockerfile), "TORCH": variant}
        for i in dockerfile:
            if i.keyword not in ("COPY", "ADD") or "--from=" in i.value:
                continue
            *sources, _ = shlex.split(_expand(i.value, variables))
            for source in sources:
                assert (ROOT / source).exists(), f"line {i.line}: COPY {source} does not exist"
                assert not _ignored(source, rules), f"line {i.line}: {source} is .dockerignored"


def test_dockerfile_runs_hpsearch_as_a_non_root_user(dockerfile: list[Instruction]) -> None:
    entrypoints = [i for i in dockerfile if i.keyword == "ENTRYPOINT"]
    # An init process first (it reaps orphans and passes signals on), then hpsearch.
    assert [json.loads(i.value) for i in entrypoints] == [
        ["dumb-init", "--single-child", "--", "hpsearch"]
    ]
    pins = (LOCKS / "pins.in").read_text()
    assert re.search(r"^dumb-init==\S+", pins, re.M)  # from the hash-checked locks
    assert "dumb-init" in _locked(LOCKS / "requirements.txt")
    users = [i.value for i in dockerfile if i.keyword == "USER"]
    assert users
    assert users[-1].split(":")[0] not in ("root", "0")
    assert int(users[-1].split(":")[0]) >= 1000  # numeric, for Kubernetes' runAsNonRoot


TORCH_VARIANTS = ("cu130", "cpu")
LOCKS = DEPLOY / "image"


def _locked(path: Path) -> dict[str, tuple[str, int]]:
    """name -> (version, number of sha256 hashes) of a pip requirements lock file."""
    pins: dict[str, tuple[str, int]] = {}
    name = ""
    for line in path.read_text().splitlines():
        match = re.match(r"([A-Za-z0-9][\w.\-]*)==(\S+)", line)
        if match:
            name = match.group(1).lower().replace("_", "-")
            pins[name] = (match.group(2), 0)
        elif "--hash=sha256:" in line and name:
            pins[name] = (pins[name][0], pins[name][1] + 1)
    return pins


def test_the_locks_pin_every_dependency_within_pyproject_with_hashes() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = [Requirement(r) for r in pyproject["project"]["dependencies"]]
    extras = pyproject["project"]["optional-dependencies"]
    # The image plays every role: S3 checkpoints, the gRPC storage proxy, Parquet export.
    wanted += [Requirement(r) for extra in ("s3", "grpc", "parquet") for r in extras[extra]]
    rest = _locked(LOCKS / "requirements.txt")
    for variant in TORCH_VARIANTS:
        torch = _locked(LOCKS / f"torch-{variant}.txt")
        assert not set(torch) & set(rest), variant  # each package in one layer
        locked = {**rest, **torch}
        for requirement in wanted:
            name = requirement.name.lower()
            assert name in locked, f"{name} is a dependency but not in the image's locks"
            version = locked[name][0]
            assert requirement.specifier.contains(version, prereleases=True), (name, version)
        pins = {n: v.split("+")[0] for n, (v, _) in torch.items() if n in ("torch", "torchvision")}
        assert pins == {"torch": "2.14.1", "torchvision": "0.29.1"}, variant
    # Hash-checked, each package: the CUDA build (what the GPU nodes run) and everything else.
    for path in (LOCKS / "requirements.txt", LOCKS / "torch-cu130.txt"):
        assert all(n > 0 for _, n in _locked(path).values()), path
    pinned = (LOCKS / "pins.in").read_text()
    assert "torch==2.14.1" in pinned
    assert "torchvision==0.29.1" in pinned


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


@pytest.mark.slow
def test_dockerfile_install_steps_work_in_a_fresh_environment(
    dockerfile: list[Instruction], tmp_path: Path
) -> None:
    """The wheel stage's COPY and `pip wheel`, then the runtime's `pip install --no-deps` of the
    wheel and `pip check`, offline, into a fresh virtual environment (no container engine:
    tests/test_image.py builds the real image).

    The new environment sees this one's packages (torch included) through a .pth file, so the
    wheel installs without its dependencies, and `pip check` proves they are all satisfied.
    """
    source = tmp_path / "src"  # the wheel stage's WORKDIR
    source.mkdir()
    for i in dockerfile:
        if i.keyword == "COPY" and i.stage == 0:
            src, dest = shlex.split(i.value)
            target = source / dest / Path(src).name if dest.endswith("/") else source / dest
            if (ROOT / src).is_dir():
                shutil.copytree(ROOT / src, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(ROOT / src, target)
    python_path = fresh_venv(tmp_path)[0]
    python, venv = str(python_path), python_path.parent.parent

    # Nothing of this checkout or of pip's configuration may leak in: a fresh environment.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PIP_", "HPSEARCH_")) and k != "PYTHONPATH"}  # fmt: skip
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1")
    wheels = tmp_path / "wheels"
    steps = [
        ["wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(wheels), "."],
        ["install", "--no-deps", "--no-index", "PLACEHOLDER"],
        ["check"],
    ]
    for step in steps:
        if "PLACEHOLDER" in step:
            (wheel,) = wheels.glob("hpsearch-*.whl")
            step = [str(wheel) if a == "PLACEHOLDER" else a for a in step]
        result = subprocess.run(
            [python, "-m", "pip", *step], cwd=source, env=env, capture_output=True, text=True,
            timeout=180,
        )  # fmt: skip
        assert result.returncode == 0, f"pip {' '.join(step)}:\n{result.stdout}{result.stderr}"
    runtime = " ".join(i.value for i in dockerfile if i.stage == 1 and i.keyword == "RUN")
    assert "pip check" in runtime
    assert "--no-deps /opt/hpsearch/wheels/hpsearch-*.whl" in runtime

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
    # Published only where a variable says, the loopback by default: workers on other machines
    # need it on a private address, nobody else at all.
    (port,) = postgres["ports"]
    assert port.startswith("${HPSEARCH_DB_ADDRESS:-127.0.0.1}:")
    assert _default(port).startswith("127.0.0.1:")


def test_compose_runs_one_worker_per_machine_with_all_its_gpus(compose: dict[str, Any]) -> None:
    """Each GPU to one process: one container holds every GPU and starts one process per GPU.

    Compose gives every replica of a service the same device reservation, so `replicas: N`
    with `count: 1` would put N workers on one GPU.
    """
    worker = compose["services"]["worker"]
    deploy = worker["deploy"]
    assert int(_default(str(deploy.get("replicas", 1)))) == 1
    assert deploy["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}
    ]
    command = [_default(a) for a in worker["command"]]
    assert command[0] == "run"
    assert command[command.index("--gpus") + 1] == "all"
    args = build_parser().parse_args(command)
    assert args.gpus == "all"
    assert args.workers == 1
    assert worker["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert int(worker["stop_grace_period"].rstrip("s")) >= 30
    assert worker["restart"] == "on-failure"  # exit 0 = budget spent: not restarted


def test_compose_runs_every_hpsearch_service_behind_an_init_process(
    compose: dict[str, Any],
) -> None:
    """PID 1 reaps orphaned processes (a command objective's children) and passes SIGTERM on."""
    for name in ("worker", "dashboard"):
        assert compose["services"][name]["init"] is True, name


def test_compose_keeps_checkpoints_where_the_dashboard_reads_them(compose: dict[str, Any]) -> None:
    store = _default(compose["x-hpsearch"]["environment"]["HPSEARCH_ARTIFACT_STORE"])
    for name in ("worker", "dashboard"):
        service = compose["services"][name]
        assert service["environment"]["HPSEARCH_ARTIFACT_STORE"].startswith("${")
        mounts = [
            v
            for v in service["volumes"]
            if (v["target"] if isinstance(v, dict) else v.split(":")[1]) == "/artifacts"
        ]
        assert mounts, name  # fmt: skip
        assert store.startswith("/artifacts/"), store
    dashboard = compose["services"]["dashboard"]
    (mount,) = [v for v in dashboard["volumes"] if v["target"] == "/artifacts"]
    assert mount["read_only"] is True


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
    "PersistentVolumeClaim": "v1",
}  # fmt: skip


def test_k8s_manifests_are_yaml_of_the_expected_kinds() -> None:
    documents = _manifests()
    kinds = sorted((file, d["kind"]) for file, d in documents)
    assert kinds == [
        ("checkpoints-pvc.yaml", "PersistentVolumeClaim"),
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
    documents = [d for d in yaml.safe_load_all(built.stdout) if d]
    kinds = sorted(d["kind"] for d in documents)
    assert kinds == ["ConfigMap", "Deployment", "Job", "PersistentVolumeClaim", "Service"]
    # The study's ConfigMap is generated from deploy/k8s/study/ (no manual `kubectl create`),
    # named by its content, and every pod mounts that name.
    (config,) = [d for d in documents if d["kind"] == "ConfigMap"]
    assert config["metadata"]["name"].startswith("hpsearch-study-")
    assert config["data"] == {"study.yaml": (K8S / "study" / "study.yaml").read_text()}
    for d in documents:
        if d["kind"] in ("Job", "Deployment"):
            volumes = {v["name"]: v for v in d["spec"]["template"]["spec"]["volumes"]}
            assert volumes["studies"]["configMap"]["name"] == config["metadata"]["name"]


def test_k8s_the_generated_study_is_a_valid_study_file() -> None:
    from hpsearch.spec import load_spec

    generator = yaml.safe_load((K8S / "kustomization.yaml").read_text())["configMapGenerator"]
    assert generator == [{"name": "hpsearch-study", "files": ["study/study.yaml"]}]
    loaded = load_spec(K8S / "study" / "study.yaml")
    assert loaded.spec.storage is None  # the pods take it from the Secret


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
    disruption = {"type": "DisruptionTarget", "status": "True"}
    assert {"action": "Ignore", "onPodConditions": [disruption]} in rules
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


def test_k8s_checkpoints_outlive_the_pods_in_a_shared_store() -> None:
    claim = _one("PersistentVolumeClaim", "hpsearch-checkpoints")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # every worker pod writes
    for kind, name, writable in (("Job", "hpsearch-workers", True),
                                 ("Deployment", "hpsearch-dashboard", False)):  # fmt: skip
        pod = _pod(_one(kind, name))
        (container,) = pod["containers"]
        env = {e["name"]: e["value"] for e in container["env"]}
        mount = next(m for m in container["volumeMounts"]
                     if m["mountPath"] == env["HPSEARCH_ARTIFACT_STORE"])  # fmt: skip
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        assert volume["persistentVolumeClaim"]["claimName"] == "hpsearch-checkpoints", name
        assert mount.get("readOnly", False) is not writable, name


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
    registered = set(NAMES)
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


def test_every_storage_proxy_others_must_reach_names_its_address() -> None:
    """The proxy's default address is becoming 127.0.0.1 (like the dashboard's): in a container
    or for other machines it must be told where to listen."""
    proxies = [(where, argv) for where, argv in COMMAND_LINES if argv[:1] == ["storage-proxy"]]
    assert proxies
    for where, argv in proxies:
        assert "--host" in argv, f"{where}: storage-proxy without --host"
        host = argv[argv.index("--host") + 1]
        assert host not in ("127.0.0.1", "localhost", "::1"), where
