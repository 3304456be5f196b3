"""Shared fixtures: real storages (SQLite, PostgreSQL, MariaDB) and small study files.

PostgreSQL and MariaDB run on every machine, CI included. A test that needs one fails when the
server is down and CI=true, and skips (with the reason) only on a developer's machine.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import sysconfig
import textwrap
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

POSTGRES_URL = os.environ.get(
    "HPSEARCH_TEST_POSTGRES", "postgresql+psycopg://root@127.0.0.1:5432/test"
)
MYSQL_URL = os.environ.get("HPSEARCH_TEST_MYSQL", "mysql+pymysql://root@127.0.0.1:3306/test")
SERVER_URLS = {"postgresql": POSTGRES_URL, "mysql": MYSQL_URL}


def server_database(kind: str) -> Generator[str, None, None]:
    """A fresh database on the server for this test session, dropped afterwards."""
    admin_url = SERVER_URLS[kind]
    name = f"hpsearch_test_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as c:
            c.execute(sa.text(f"CREATE DATABASE {name}"))
    except sa.exc.OperationalError as e:
        engine.dispose()
        message = f"{kind} server at {admin_url} is not reachable: {str(e).splitlines()[0]}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield str(sa.engine.make_url(admin_url).set(database=name).render_as_string(False))
    finally:
        with engine.connect() as c:
            if kind == "postgresql":
                c.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            else:
                c.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        engine.dispose()


@pytest.fixture(autouse=True)
def _private_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No test writes to this user's data or cache folders (the default storage, the batch-size
    cache): each test gets folders of its own, its subprocesses too."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HPSEARCH_HOME", str(home / "data"))
    monkeypatch.setenv("HPSEARCH_CACHE_DIR", str(home / "cache"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark what needs a database server, so `make test-fast` can leave it out."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        callspec = getattr(item, "callspec", None)
        params = {str(p) for p in callspec.params.values()} if callspec is not None else set()
        ids = set(callspec.id.split("-")) if callspec is not None else set()
        servers = {"postgresql", "postgres", "mysql"}
        if fixtures & {"postgres_url", "mysql_url"} or (params | ids) & servers:
            item.add_marker(pytest.mark.db)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    yield from server_database("postgresql")


@pytest.fixture(scope="session")
def mysql_url() -> Iterator[str]:
    yield from server_database("mysql")


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each real storage in turn. Study names are unique per test, so server DBs are shared."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hpsearch.db'}"
    fixture = {"postgresql": "postgres_url", "mysql": "mysql_url"}[request.param]
    return str(request.getfixturevalue(fixture))


@pytest.fixture
def unique_name() -> str:
    return f"study-{uuid.uuid4().hex[:8]}"


OBJECTIVE_PY = '''
import math, os, time

def quadratic(params, report):
    """Minimum 0 at x=2; reports three steps so pruners have curves to compare."""
    for step in range(1, 4):
        report({"loss": (params["x"] - 2) ** 2 + 1 / step}, step)
    time.sleep(float(params.get("sleep", 0)))
    return {"loss": (params["x"] - 2) ** 2}

def fails(params, report):
    raise ValueError("boom")

def meet(params, report):
    """`quadratic`, after a rendezvous: it waits (4 min at most, a hang guard: eight workers
    start slowly on a loaded machine) until `workers` worker processes have each started a
    trial, so a test of shared work does not depend on which process happens to start first
    (the first could otherwise finish the study alone)."""
    import socket
    folder = params["folder"]
    open(os.path.join(folder, f"{socket.gethostname()}-{os.getpid()}"), "w").close()
    deadline = time.monotonic() + 240
    while len(os.listdir(folder)) < params["workers"] and time.monotonic() < deadline:
        time.sleep(0.05)
    return quadratic(params, report)

def hold(params, report):
    """`quadratic`, after waiting (10 min at most) while the file `hold` exists: a test keeps
    the trial running for as long as it needs, then lets it go, whatever the machine's speed."""
    deadline = time.monotonic() + 600
    while os.path.exists(params["hold"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return quadratic(params, report)

def gated(params, report):
    """`quadratic`, once the file `gate-K` exists in `folder`, where K is this trial's place in
    the order trials started (counted across processes) divided by `every`: a test acts
    between batches of trials while workers surely still have trials to run."""
    folder, n = params["folder"], 0
    while True:
        try:
            os.close(os.open(os.path.join(folder, f"trial-{n}"), os.O_CREAT | os.O_EXCL))
            break
        except FileExistsError:
            n += 1
    gate = os.path.join(folder, f"gate-{n // params['every']}")
    deadline = time.monotonic() + 600
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.05)
    return quadratic(params, report)
'''


def fresh_venv(folder: Path) -> tuple[Path, Path]:
    """A new virtual environment (no pip, no hpsearch) that sees this one's packages; returns
    (its python, its site-packages). Nothing is copied: this environment's site-packages, less
    hpsearch, is a folder of symlinks that a .pth file adds, so torch and the rest are there and
    hpsearch comes only from whatever the test installs."""
    site = Path(sysconfig.get_paths()["purelib"])
    view = folder / "site"
    view.mkdir(parents=True)
    for entry in site.iterdir():
        name = entry.name.lower()
        if name.startswith(("hpsearch", "__editable__")) or name.endswith(".pth"):
            continue
        (view / entry.name).symlink_to(entry)
    venv = folder / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig as s; print(s.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    (Path(purelib) / "shared-packages.pth").write_text(f"{view}\n")
    return python, Path(purelib)


@functools.cache
def _schema_validator() -> Any:
    import jsonschema

    from hpsearch.spec import json_schema

    return jsonschema.Draft202012Validator(json_schema())


def check_against_schema(path: Path) -> None:
    """A study file passes the JSON Schema of `hpsearch schema` (raises ValidationError)."""
    from hpsearch.spec.reader import read_yaml

    data, _ = read_yaml(path)
    _schema_validator().validate(data)


@pytest.fixture
def write_study(tmp_path: Path) -> Callable[..., Path]:
    """Write a study file (and objective.py beside it); returns its path.

    Every file that loads must pass the JSON Schema too, so an editor using `hpsearch schema`
    never flags a file hpsearch accepts.
    """
    from hpsearch.errors import SpecError
    from hpsearch.spec import load_spec

    def write(body: str, name: str = "study.yaml") -> Path:
        (tmp_path / "objective.py").write_text(OBJECTIVE_PY)
        path = tmp_path / name
        path.write_text(textwrap.dedent(body).lstrip())
        try:
            load_spec(path)
        except SpecError:
            return path  # a test of a bad file
        check_against_schema(path)
        return path

    return write


@pytest.fixture
def quadratic_study(write_study: Callable[..., Path], unique_name: str) -> Callable[..., Path]:
    """A small function-objective study; keyword arguments fill in the budget and extras."""

    def make(n_trials: int = 6, extra: str = "", sleep: float = 0.0) -> Path:
        return write_study(
            f"""
            name: {unique_name}
            metric: loss
            direction: minimize
            sampler: {{type: random, seed: 1}}
            pruner: {{type: none}}
            budget: {{n_trials: {n_trials}}}
            objective: {{function: objective.py:quadratic, sleep: {sleep}}}
            search_space:
              x: {{type: float, low: -5, high: 5}}
            {textwrap.dedent(extra).strip()}
            """
        )

    return make
