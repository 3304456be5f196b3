"""Storage URLs: precedence, passwords from the environment only, redaction, real servers."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa
from conftest import server_database

from hpsearch.cli import main
from hpsearch.errors import StorageError
from hpsearch.spec import load_spec
from hpsearch.storage import (
    OPTUNA_STORAGE_ENV,
    PASSWORD_ENV,
    STORAGE_ENV,
    default_home,
    open_storage,
    resolve,
)

BODY = """
name: s
metric: loss
objective: {function: objective.py:quadratic}
search_space: {x: {type: float, low: 0, high: 1}}
"""


def test_precedence_flag_env_file_default(
    write_study: Callable[..., Path], tmp_path: Path
) -> None:
    (tmp_path / ".git").mkdir()  # the study's folder is the root of a checkout
    (tmp_path / "storage").mkdir()  # that keeps hpsearch's files in storage/, as this one does
    plain = load_spec(write_study(BODY))
    assert resolve(plain, environ={}).secret_url == f"sqlite:///{tmp_path}/storage/hpsearch.db"
    filed = load_spec(write_study(BODY + "storage: sqlite:///data/x.db\n", "f.yaml"))
    url = resolve(filed, environ={})
    assert url.secret_url == f"sqlite:///{tmp_path}/data/x.db"  # relative to the study file
    assert url.source.endswith(": storage")
    optuna_env = {OPTUNA_STORAGE_ENV: "postgresql://o@h/db"}
    assert resolve(filed, environ=optuna_env).secret_url == "postgresql+psycopg://o@h/db"
    env = {STORAGE_ENV: "postgresql://u@h/db", **optuna_env}
    assert resolve(filed, environ=env).secret_url == "postgresql+psycopg://u@h/db"
    flagged = resolve(filed, flag="mysql://u@h/db", environ=env)
    assert (flagged.secret_url, flagged.source) == ("mysql+pymysql://u@h/db", "--storage")


def test_the_default_storage_is_never_an_unrelated_repository(
    write_study: Callable[..., Path], tmp_path: Path
) -> None:
    """After `pip install`, the SQLite file landed in the root of whatever git repository held
    the study file (not ignored there), and `validate` created that folder."""
    (tmp_path / ".git").mkdir()  # someone's project, with no storage/ of hpsearch's
    loaded = load_spec(write_study(BODY))
    data = tmp_path / "xdg-data"
    url = resolve(loaded, environ={"XDG_DATA_HOME": str(data)})
    project = default_home(tmp_path, {"XDG_DATA_HOME": str(data)})
    assert project.parent == data / "hpsearch" / "projects"  # this project's own folder
    assert project.name.startswith(f"{tmp_path.name}-")
    assert url.secret_url == f"sqlite:///{project}/hpsearch.db"
    assert url.source == "default"
    home = resolve(loaded, environ={"HPSEARCH_HOME": str(tmp_path / "h")})
    assert home.secret_url == f"sqlite:///{tmp_path}/h/projects/{project.name}/hpsearch.db"
    assert not data.exists()  # resolving writes nothing
    assert not (tmp_path / "storage").exists()


def test_two_projects_never_share_the_default_study_by_accident(tmp_path: Path) -> None:
    """A copied project with the same study name joined the other's finished study (one shared
    file in the data folder) and ran 0 trials; now each project folder has its own database."""
    env = {"HPSEARCH_HOME": str(tmp_path / "data")}
    urls = []
    for project in ("alice/tuning", "bob/tuning"):  # the same study file, in two folders
        folder = tmp_path / project
        folder.mkdir(parents=True)
        (folder / "study.yaml").write_text(BODY)
        urls.append(resolve(load_spec(folder / "study.yaml"), environ=env).secret_url)
    assert urls[0] != urls[1]
    # Within one project (one checkout), every study file shares the project's database.
    checkout = tmp_path / "repo"
    (checkout / ".git").mkdir(parents=True)
    for sub in ("a", "b/c"):
        (checkout / sub).mkdir(parents=True)
        (checkout / sub / "study.yaml").write_text(BODY)
    a, b = (resolve(load_spec(checkout / s / "study.yaml"), environ=env) for s in ("a", "b/c"))
    assert a.secret_url == b.secret_url


def test_only_the_projects_own_storage_folder_is_used(tmp_path: Path) -> None:
    """Outside a checkout, any ancestor folder named `storage` (say /home/me/storage, full of
    photos) captured the database of every study below it."""
    env = {"HPSEARCH_HOME": str(tmp_path / "data")}
    (tmp_path / "storage").mkdir()  # someone's unrelated folder
    project = tmp_path / "work" / "tuning"
    project.mkdir(parents=True)
    (project / "study.yaml").write_text(BODY)
    url = resolve(load_spec(project / "study.yaml"), environ=env)
    assert url.secret_url.startswith(f"sqlite:///{tmp_path}/data/projects/tuning-")
    (project / "storage").mkdir()  # the project's own: used
    url = resolve(load_spec(project / "study.yaml"), environ=env)
    assert url.secret_url == f"sqlite:///{project}/storage/hpsearch.db"
    # In a checkout: its storage/ (at its root or nearer the file), never one above the root.
    checkout = tmp_path / "repo"
    (checkout / ".git").mkdir(parents=True)
    (checkout / "studies").mkdir()
    (checkout / "studies" / "study.yaml").write_text(BODY)
    loaded = load_spec(checkout / "studies" / "study.yaml")
    assert resolve(loaded, environ=env).secret_url.startswith(f"sqlite:///{tmp_path}/data/")
    (checkout / "storage").mkdir()
    url = resolve(loaded, environ=env)
    assert url.secret_url == f"sqlite:///{checkout}/storage/hpsearch.db"


def test_password_comes_from_the_environment_and_is_never_shown(
    write_study: Callable[..., Path],
) -> None:
    loaded = load_spec(write_study(BODY))
    url = resolve(loaded, flag="postgresql://me@db/hp", environ={PASSWORD_ENV: "p@ss%{}/w"})
    assert "p@ss" not in str(url)
    assert "p@ss" not in repr(url)
    assert "***" in url.redacted
    with pytest.raises(StorageError, match=r"--storage: a password on the command line") as e:
        resolve(loaded, flag="postgresql://me:hunter2@db/hp", environ={})
    assert "hunter2" not in str(e.value)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("nonsense", r"'nonsense' is not a storage URL; use e.g. sqlite:///"),
        ("oracle://u@h/db", r"storage 'oracle' is not supported"),
        ("postgresql://u@h:abc/db", r"--storage: the storage URL's port is not a number"),
        ("grpc://proxy:port", r"the storage proxy's port must be a number, but got 'port'"),
    ],
)
def test_bad_urls(write_study: Callable[..., Path], bad: str, message: str) -> None:
    with pytest.raises(StorageError, match=message):
        resolve(load_spec(write_study(BODY)), flag=bad, environ={})


def test_a_raw_at_in_a_password_is_refused_without_printing_it(
    write_study: Callable[..., Path], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """`p@ss@word` in HPSEARCH_STORAGE made `ss@host` the host: every log line showed `ss`."""
    env = {STORAGE_ENV: "postgresql://me:pa@ss-secret-tail@db.lab/hp"}
    with pytest.raises(StorageError, match=r"HPSEARCH_STORAGE: .* percent-encode") as e:
        resolve(load_spec(write_study(BODY)), environ=env)
    assert "secret-tail" not in str(e.value)
    assert "pa@" not in str(e.value)
    path = write_study(BODY)
    monkeypatch.setenv(STORAGE_ENV, env[STORAGE_ENV])
    assert main(["status", str(path)]) == 2
    err = capsys.readouterr().err
    assert "secret-tail" not in err
    assert err.count("\n") == 1


def test_unreachable_server_is_one_line_without_password(write_study: Callable[..., Path]) -> None:
    loaded = load_spec(write_study(BODY))
    url = resolve(
        loaded, flag="postgresql://me@127.0.0.1:1/db", environ={PASSWORD_ENV: "zzsecret"}
    )
    with pytest.raises(
        StorageError, match=r"cannot reach storage postgresql\+psycopg://me:\*\*\*@"
    ):
        open_storage(url)


@pytest.fixture(params=["postgresql", "mysql"])
def user_with_nasty_password(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """A real database user whose password has every character that breaks URLs.

    The user works in a database of its own, made for this test (never the server's shared
    one), and is removed with what it created: nothing depends on, or is left for, another run.
    """
    database = server_database(request.param)  # a generator: closing it drops the database
    url = sa.engine.make_url(next(database))
    user, password = f"hp_{uuid.uuid4().hex[:8]}", "p@ss%w{o}r/d:1"
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    literal = password.replace("'", "''")
    with engine.connect() as c:
        if request.param == "postgresql":
            c.execute(sa.text(f"CREATE ROLE {user} LOGIN PASSWORD '{literal}'"))
            c.execute(sa.text(f"GRANT ALL ON DATABASE {url.database} TO {user}"))
            c.execute(sa.text(f"GRANT ALL ON SCHEMA public TO {user}"))
        else:
            c.execute(sa.text(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{literal}'"))
            c.execute(sa.text(f"GRANT ALL ON `{url.database}`.* TO '{user}'@'%'"))
    base = url.set(username=user, password=None)
    yield base.render_as_string(hide_password=False), password
    with engine.connect() as c:
        if request.param == "postgresql":
            # The user's tables (Optuna's, when it made them) go first, or DROP ROLE refuses.
            c.execute(sa.text(f"DROP OWNED BY {user}"))
            c.execute(sa.text(f"DROP ROLE {user}"))
        else:
            c.execute(sa.text(f"DROP USER '{user}'@'%'"))
    engine.dispose()
    database.close()  # drops the database


def test_special_character_passwords_round_trip(
    user_with_nasty_password: tuple[str, str], write_study: Callable[..., Path]
) -> None:
    plain_url, password = user_with_nasty_password
    loaded = load_spec(write_study(BODY))
    url = resolve(loaded, flag=plain_url, environ={PASSWORD_ENV: password})
    storage = open_storage(url)
    name = f"pw-{uuid.uuid4().hex[:6]}"
    optuna.create_study(study_name=name, storage=storage)
    assert name in [s.study_name for s in optuna.get_all_study_summaries(storage)]
    assert password not in url.redacted


def test_password_never_appears_in_ps_or_logs(
    postgres_url: str, write_study: Callable[..., Path], tmp_path: Path
) -> None:
    """Workers started by --workers get the URL through the environment, not argv."""
    path = write_study(BODY.replace("name: s", f"name: ps-{uuid.uuid4().hex[:6]}")
                       + "budget: {n_trials: 2}\n")  # fmt: skip
    env_url = sa.engine.make_url(postgres_url).set(password="notreallyused")
    env = {STORAGE_ENV: env_url.render_as_string(hide_password=False), "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpsearch", "run", str(path), "--workers", "2"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    seen = ""
    while proc.poll() is None:
        seen += subprocess.run(["ps", "axww", "-o", "args"], capture_output=True, text=True).stdout
    out = proc.communicate()[0]
    assert proc.returncode == 0, out
    assert "notreallyused" not in seen
    assert "notreallyused" not in out


def test_a_worker_waits_for_a_database_that_is_down(
    write_study: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing listens on port 1: the wait ends in the same one-line error, after retrying."""
    from hpsearch.storage import check_reachable

    url = resolve(load_spec(write_study(BODY)), flag="postgresql://me@127.0.0.1:1/db", environ={})
    with pytest.raises(StorageError, match=r"cannot reach storage postgresql\+psycopg://me@"):
        check_reachable(url, wait=2.5)
    assert "waiting for storage postgresql+psycopg://me@127.0.0.1:1/db" in caplog.text


class _FlakyForwarder:
    """A TCP forwarder to the database that drops the connections numbered in `drop`, like a
    server restarting between a worker's first connection and the next ones."""

    def __init__(self, target: tuple[str, int], drop: set[int]) -> None:
        self.target, self.drop, self.count = target, drop, 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.count += 1
            if self.count in self.drop:
                client.close()
                continue
            server = socket.create_connection(self.target)
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


def test_a_database_restart_during_start_up_is_waited_out(
    postgres_url: str, write_study: Callable[..., Path]
) -> None:
    """A restart between `check_reachable` and opening Optuna's storage killed the worker with
    exit 2 (11 of 82 starts); it now waits, as it does for a database down at its start."""
    real = sa.engine.make_url(postgres_url)
    flaky = _FlakyForwarder((real.host or "127.0.0.1", real.port or 5432), drop={2, 3, 4, 5})
    url = real.set(host="127.0.0.1", port=flaky.port).render_as_string(hide_password=False)
    loaded = load_spec(write_study(BODY))
    storage = open_storage(resolve(loaded, flag=url, environ={}), wait=60)
    assert flaky.count >= 6
    assert optuna.create_study(storage=storage).study_name
