"""`hpsearch storage-proxy` in front of a real PostgreSQL, with real worker processes through it.

No mocks: the proxy, the workers and the database are real processes and servers."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from optuna.exceptions import ExperimentalWarning
from optuna.study import StudyDirection
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from hpsearch.cli import main
from hpsearch.errors import StorageError
from hpsearch.storage.proxy import RetryingGrpcStorageProxy
from hpsearch.storage.proxy_server import database_url

MARKER_PASSWORD = "proxy-test-Pa55-7f3a"  # accepted and ignored by a trust-auth test server


@dataclass
class Proxy:
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    password: str
    env: dict[str, str]

    @property
    def url(self) -> str:
        return f"grpc://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _hpsearch(*args: str) -> list[str]:
    return [sys.executable, "-m", "hpsearch", *args]


def _wait_ready(proxy: Proxy, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proxy.process.poll() is not None:
            code = proxy.process.returncode
            pytest.fail(f"storage-proxy exited with {code}:\n{proxy.log_text()}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", proxy.port)) == 0:
                return
        time.sleep(0.1)
    pytest.fail(f"storage-proxy did not listen on {proxy.port} in {timeout}s:\n{proxy.log_text()}")


def _start_proxy(postgres_url: str, port: int, log: Path) -> Proxy:
    """`hpsearch storage-proxy` on `port`; the password travels only in the environment."""
    url = make_url(postgres_url)
    password = url.password or MARKER_PASSWORD
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPSEARCH_")}
    env["HPSEARCH_DB_PASSWORD"] = password
    flag = url.set(password=None).render_as_string(hide_password=False)
    argv = ["storage-proxy", "--storage", flag, "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            _hpsearch(*argv, "--threads", "4"), env=env, stdout=out, stderr=subprocess.STDOUT
        )
    return Proxy(process, port, log, password, env)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def proxy(postgres_url: str, tmp_path: Path) -> Iterator[Proxy]:
    running = _start_proxy(postgres_url, _free_port(), tmp_path / "proxy.log")
    try:
        _wait_ready(running)
        yield running
    finally:
        _stop(running.process)


def _load(postgres_url: str, name: str) -> optuna.Study:
    """The study read directly from PostgreSQL, not through the proxy."""
    return optuna.load_study(study_name=name, storage=postgres_url)


def _worker(proxy: Proxy, study_file: Path, log: Path) -> subprocess.Popen[bytes]:
    """`hpsearch run` through the proxy; it needs no database password."""
    env = {k: v for k, v in proxy.env.items() if k != "HPSEARCH_DB_PASSWORD"}
    argv = ["run", str(study_file), "--storage", proxy.url]
    argv += ["--artifacts", str(log.parent / "artifacts")]
    with log.open("wb") as out:
        return subprocess.Popen(_hpsearch(*argv), env=env, stdout=out, stderr=subprocess.STDOUT)


@pytest.mark.db
def test_two_workers_finish_a_study_through_the_proxy(
    proxy: Proxy,
    postgres_url: str,
    quadratic_study: Callable[..., Path],
    unique_name: str,
    tmp_path: Path,
) -> None:
    n_trials, n_workers = 6, 2
    study_file = quadratic_study(n_trials=n_trials, sleep=0.1)
    logs = [tmp_path / f"worker{i}.log" for i in range(n_workers)]
    workers = [_worker(proxy, study_file, log) for log in logs]
    codes = [w.wait(timeout=120) for w in workers]
    output = "\n".join(log.read_text() for log in logs)
    assert codes == [0] * n_workers, output

    trials = _load(postgres_url, unique_name).get_trials(deepcopy=False)
    states = [t.state for t in trials]
    assert set(states) == {TrialState.COMPLETE}, states  # nothing RUNNING, WAITING or FAIL
    # Through the proxy there is no SQL ledger: workers count trials, and each worker may start
    # one trial after the count was read (docs/deployment.md, "Limits of the proxy").
    assert n_trials <= len(trials) <= n_trials + n_workers - 1, len(trials)
    assert all(t.value is not None and "worker" in t.user_attrs for t in trials)


@pytest.mark.db
def test_sigterm_through_the_proxy_fails_and_queues_the_trial_again(
    proxy: Proxy,
    postgres_url: str,
    quadratic_study: Callable[..., Path],
    unique_name: str,
    tmp_path: Path,
) -> None:
    study_file = quadratic_study(n_trials=3, sleep=600)  # handed back, not run to its end
    log = tmp_path / "worker.log"
    worker = _worker(proxy, study_file, log)
    try:
        deadline = time.monotonic() + 120  # a hang guard
        running: list[optuna.trial.FrozenTrial] = []
        while not running and time.monotonic() < deadline:
            time.sleep(0.2)
            assert worker.poll() is None, log.read_text()
            try:
                running = _load(postgres_url, unique_name).get_trials(states=(TrialState.RUNNING,))
            except KeyError:  # the study does not exist yet
                continue
        assert running, f"no trial started in 120s:\n{log.read_text()}"
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=120) == 0, log.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()

    trials = {t.number: t for t in _load(postgres_url, unique_name).get_trials()}
    stopped = trials[running[0].number]
    assert stopped.state == TrialState.FAIL
    assert stopped.user_attrs["fail_reason"] == "worker stopped by SIGTERM"
    queued = [t for t in trials.values() if t.state == TrialState.WAITING]
    assert [t.params for t in queued] == [stopped.params], trials


@pytest.mark.db
def test_proxy_keeps_the_password_out_of_its_command_line_and_log_and_stops_on_sigterm(
    proxy: Proxy,
) -> None:
    cmdline = Path(f"/proc/{proxy.process.pid}/cmdline")
    if not cmdline.exists():
        pytest.skip("no /proc on this platform")
    argv = cmdline.read_bytes().split(b"\0")
    assert b"storage-proxy" in argv
    assert not any(proxy.password.encode() in arg for arg in argv), argv

    proxy.process.send_signal(signal.SIGTERM)
    assert proxy.process.wait(timeout=120) == 0
    log = proxy.log_text()
    assert proxy.password not in log
    assert f"on grpc://127.0.0.1:{proxy.port}" in log
    assert ":***@" in log or "@" not in log.split("serving ")[1].split(" on ")[0]
    assert "SIGTERM: stopping" in log
    assert "storage proxy stopped" in log


@pytest.mark.db
def test_the_workers_client_waits_out_a_restart_of_the_proxy(
    proxy: Proxy,
    postgres_url: str,
    unique_name: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = RetryingGrpcStorageProxy(host="127.0.0.1", port=proxy.port, backoff=[0.25] * 120)
    study_id = client.create_new_study([StudyDirection.MINIMIZE], unique_name)
    proxy.process.send_signal(signal.SIGTERM)
    assert proxy.process.wait(timeout=120) == 0

    restarted: list[Proxy] = []

    def restart() -> None:
        time.sleep(1.0)  # the client's first attempts find no proxy
        restarted.append(_start_proxy(postgres_url, proxy.port, tmp_path / "proxy2.log"))

    thread = threading.Thread(target=restart)
    thread.start()
    logger = logging.getLogger("hpsearch.storage.proxy")  # the CLI may have stopped propagation
    logger.addHandler(caplog.handler)
    try:
        trial_id = client.create_new_trial(study_id)  # retried until the new proxy answers
        assert client.get_trial(trial_id).state == TrialState.RUNNING
    finally:
        logger.removeHandler(caplog.handler)
        thread.join()
        for p in restarted:
            _stop(p.process)
    assert _load(postgres_url, unique_name).trials[0].state == TrialState.RUNNING
    assert f"storage proxy 127.0.0.1:{proxy.port} unreachable in create_new_trial" in caplog.text


def test_the_workers_client_gives_up_on_errors_other_than_unavailable(
    proxy: Proxy, caplog: pytest.LogCaptureFixture
) -> None:
    # One retry would wait 10 minutes, far past the test's own timeout.
    client = RetryingGrpcStorageProxy(host="127.0.0.1", port=proxy.port, backoff=[600.0])
    logger = logging.getLogger("hpsearch.storage.proxy")  # the CLI may have stopped propagation
    logger.addHandler(caplog.handler)
    try:
        with pytest.raises(KeyError):  # NOT_FOUND: a question with an answer, not an outage
            client.get_study_id_from_name("no-such-study-" + uuid.uuid4().hex)
    finally:
        logger.removeHandler(caplog.handler)
    assert "unreachable" not in caplog.text  # asked once, not retried


def test_optunas_grpc_proxy_imports() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        from optuna.storages import GrpcStorageProxy, run_grpc_proxy_server
        from optuna.storages._grpc.server import make_server

    assert callable(run_grpc_proxy_server)
    assert callable(make_server)
    assert GrpcStorageProxy.__name__ == "GrpcStorageProxy"


# --- the URL the proxy serves: no study file, so its own precedence ---------------------------


def test_flag_wins_over_the_environment_and_the_password_comes_from_the_environment() -> None:
    url = database_url(
        "postgresql://ann@db.internal/hp",
        environ={"HPSEARCH_STORAGE": "mysql://bob@other/x", "HPSEARCH_DB_PASSWORD": "s3:cr@t"},
    )
    assert url.source == "--storage"
    assert url.redacted == "postgresql+psycopg://ann:***@db.internal/hp"
    assert make_url(url.secret_url).password == "s3:cr@t"
    assert "s3" not in str(url)
    assert "s3" not in repr(url)


def test_environment_url_is_used_without_a_flag() -> None:
    url = database_url(None, environ={"HPSEARCH_STORAGE": "mysql://bob:pw@db/x"})
    assert (url.source, url.redacted) == ("HPSEARCH_STORAGE", "mysql+pymysql://bob:***@db/x")


@pytest.mark.parametrize(
    ("flag", "environ", "message"),
    [
        (
            None,
            {},
            "storage-proxy needs the database it serves, but neither --storage nor "
            "HPSEARCH_STORAGE is set; pass --storage postgresql+psycopg://USER@HOST/DB "
            "(password in HPSEARCH_DB_PASSWORD)",
        ),
        (
            "postgresql://ann:pw@db/hp",
            {},
            "--storage: a password on the command line is visible to every user in `ps`; "
            "remove it and set HPSEARCH_DB_PASSWORD (or put the whole URL in HPSEARCH_STORAGE)",
        ),
        (
            None,
            {"HPSEARCH_STORAGE": "grpc://proxy:13000"},
            "HPSEARCH_STORAGE: the storage proxy serves a database, but got "
            "'grpc://proxy:13000' (a proxy); pass the database URL, e.g. "
            "postgresql+psycopg://USER@HOST/DB",
        ),
    ],
)
def test_unusable_urls_are_refused_with_the_fix(
    flag: str | None, environ: dict[str, str], message: str
) -> None:
    with pytest.raises(StorageError) as e:
        database_url(flag, environ=environ)
    assert str(e.value) == message


def test_a_busy_port_is_one_line_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("HPSEARCH_STORAGE", raising=False)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = main(["storage-proxy", "--storage", f"sqlite:///{tmp_path / 'p.db'}",
                     "--host", "127.0.0.1", "--port", str(port)])  # fmt: skip
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"hpsearch: error: storage-proxy cannot listen on 127.0.0.1:{port} (Failed to bind to "
        f"address 127.0.0.1:{port}); the port is in use or the host is no address of this "
        "machine: pick another --port or --host"
    )
