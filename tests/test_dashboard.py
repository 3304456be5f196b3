"""`hpsearch dashboard`: the read-only storage wrapper, and optuna-dashboard in a real browser."""

from __future__ import annotations

import inspect
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
import pytest
from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.trial import TrialState

from hpsearch.cli import main
from hpsearch.inspect.dashboard import (
    DashboardServer,
    ReadOnlyError,
    ReadOnlyStorage,
    is_loopback,
    make_app,
    read_only_for,
)
from hpsearch.inspect.source import open_view
from hpsearch.spec import load_spec
from hpsearch.storage import resolve
from hpsearch.storage.optuna_compat import trial_id

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

REPO = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SCREENSHOT_COPY = Path("/tmp/hpsearch-dashboard.png")

STUDY = """
name: {name}
metric: loss
direction: minimize
sampler: {{type: random, seed: 1}}
pruner: {{type: median, n_startup_trials: 2}}
budget: {{n_trials: 6}}
objective: {{function: objective.py:quadratic}}
search_space:
  x: {{type: float, low: -5, high: 5}}
  batch_size: {{type: power_of_two, low: 8, high: 64}}
"""


@dataclass(frozen=True)
class Served:
    url: str
    path: Path
    name: str
    running: int  # trial_id of a RUNNING trial (asked by hand), the target of `tell`


@pytest.fixture(params=["sqlite", "postgresql"])
def served_study(
    request: pytest.FixtureRequest, write_study: object, tmp_path: Path, unique_name: str
) -> Served:
    """A study run by `hpsearch run` plus one RUNNING trial."""
    url = (
        f"sqlite:///{tmp_path / 'hpsearch.db'}"
        if request.param == "sqlite"
        else str(request.getfixturevalue("postgres_url"))
    )
    path = write_study(STUDY.format(name=unique_name))  # type: ignore[operator]
    assert main(["run", str(path), "--storage", url, "-q"]) == 0
    study = optuna.load_study(study_name=unique_name, storage=url)
    running = study.ask()
    return Served(url, path, unique_name, trial_id(running))


def _snapshot(served: Served) -> list[tuple[int, str, object, dict[str, object]]]:
    study = optuna.load_study(study_name=served.name, storage=served.url)
    return [(t.number, t.state.name, t.values, t.user_attrs) for t in study.get_trials()]


# --- the wrapper -------------------------------------------------------------------------------


def test_read_only_storage_refuses_every_write(served_study: Served) -> None:
    loaded = load_spec(served_study.path)
    view = open_view(loaded, resolve(loaded, flag=served_study.url))
    before = _snapshot(served_study)
    storage = ReadOnlyStorage(view.storage)
    sid, tid = view.study_id, served_study.running
    frozen = storage.get_trial(tid)
    writes = {
        "create_new_study": lambda: storage.create_new_study([StudyDirection.MINIMIZE]),
        "delete_study": lambda: storage.delete_study(sid),
        "set_study_user_attr": lambda: storage.set_study_user_attr(sid, "k", 1),
        "set_study_system_attr": lambda: storage.set_study_system_attr(sid, "k", 1),
        "create_new_trial": lambda: storage.create_new_trial(sid),
        "set_trial_param": lambda: storage.set_trial_param(
            tid, "x", 0.0, optuna.distributions.FloatDistribution(-5, 5)
        ),
        "set_trial_state_values": lambda: storage.set_trial_state_values(
            tid, TrialState.COMPLETE, [1.0]
        ),
        "set_trial_intermediate_value": lambda: storage.set_trial_intermediate_value(tid, 1, 1.0),
        "set_trial_user_attr": lambda: storage.set_trial_user_attr(tid, "k", 1),
        "set_trial_system_attr": lambda: storage.set_trial_system_attr(tid, "k", 1),
    }
    for write in writes.values():
        with pytest.raises(ReadOnlyError, match=r"^cannot .*: the storage is opened read-only"):
            write()
    # Every write method of Optuna's storage interface is listed above.
    mutators = {
        name for name, _ in inspect.getmembers(BaseStorage, inspect.isfunction)
        if name.startswith(("create_", "delete_", "set_"))
    }  # fmt: skip
    assert mutators == set(writes)
    assert not ReadOnlyStorage.__abstractmethods__
    # Reads work, through the public methods optuna-dashboard calls.
    assert storage.get_study_id_from_name(served_study.name) == sid
    assert storage.get_trial(tid).state == TrialState.RUNNING == frozen.state
    assert len(storage.get_all_trials(sid)) == len(before) == storage.get_n_trials(sid)
    assert (
        storage.get_best_trial(sid).number
        == min(
            (t for t in storage.get_all_trials(sid) if t.state == TrialState.COMPLETE),
            key=lambda t: t.value,  # type: ignore[arg-type, return-value]
        ).number
    )
    assert [s.study_name for s in storage.get_all_studies()].count(served_study.name) == 1
    view.close()
    assert _snapshot(served_study) == before


def test_read_only_is_the_default_off_loopback() -> None:
    assert [is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "127.0.1.1")] == [True] * 4
    assert [is_loopback(h) for h in ("0.0.0.0", "::", "10.1.2.3", "gpu-box")] == [False] * 4
    assert read_only_for("0.0.0.0", None)
    assert not read_only_for("127.0.0.1", None)
    assert read_only_for("127.0.0.1", True)
    assert not read_only_for("0.0.0.0", False)


def _request(url: str, method: str, body: Mapping[str, object] | None = None) -> tuple[int, str]:
    data = json.dumps(body or {}).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_http_writes_fail_on_the_read_only_app_and_work_on_the_writable_one(
    served_study: Served,
) -> None:
    loaded = load_spec(served_study.path)
    view = open_view(loaded, resolve(loaded, flag=served_study.url))
    before = _snapshot(served_study)
    tell = f"/api/trials/{served_study.running}/tell"
    complete = {"state": "Complete", "values": [0.5]}
    # Read-only as served: the filter answers 403 with its reason. Without the filter, the
    # wrapper alone still refuses (optuna-dashboard turns the error into a 500).
    guarded = make_app(view.storage, read_only=True)
    bare = make_app(ReadOnlyStorage(view.storage), read_only=False)
    for app, status in ((guarded, 403), (bare, 500)):
        server = DashboardServer(app, host="127.0.0.1", port=0).start()
        try:
            base = server.url("")
            code, body = _request(base + tell, "POST", complete)
            assert code == status, body
            assert _request(base + f"/api/studies/{view.study_id}", "DELETE")[0] == status
            new = {"study_name": "x", "directions": ["minimize"]}
            assert _request(base + "/api/studies", "POST", new)[0] == status
            if status == 403:
                assert "read-only" in json.loads(body)["reason"]
            assert _request(base + "/api/studies", "GET")[0] == 200
        finally:
            server.shutdown()
        assert _snapshot(served_study) == before
    # The same request on a writable dashboard does tell the trial: the request itself is valid.
    server = DashboardServer(make_app(view.storage, read_only=False), host="127.0.0.1", port=0)
    server.start()
    try:
        assert _request(server.url(tell), "POST", complete)[0] == 204
    finally:
        server.shutdown()
        view.close()
    after = optuna.load_study(study_name=served_study.name, storage=served_study.url)
    told = next(t for t in after.trials if trial_id(t) == served_study.running)
    assert (told.state, told.values) == (TrialState.COMPLETE, [0.5])


# --- the command, in a real browser ----------------------------------------------------------


@pytest.fixture
def dashboard_process(served_study: Served) -> Iterator[tuple[str, Served]]:
    """`hpsearch dashboard --read-only --port 0` in a subprocess; yields its study URL."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "hpsearch", "dashboard", str(served_study.path), "--storage",
         served_study.url, "--read-only", "--port", "0", "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        header = [process.stdout.readline() for _ in range(2)]
        assert header[0].startswith("optuna-dashboard (read-only) for study "), header
        yield header[1].strip(), served_study
    finally:
        process.send_signal(signal.SIGINT)
        try:
            assert process.wait(timeout=120) == 0
        finally:
            if process.poll() is None:
                process.kill()
            process.communicate()


def _browser() -> WebDriver:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        message = "chromium and chromium-driver are not installed; run `make test-deps` as root"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1366,900"):  # fmt: skip
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


@pytest.mark.parametrize("served_study", ["sqlite"], indirect=True)
@pytest.mark.browser
def test_dashboard_shows_the_trials_in_a_browser(
    dashboard_process: tuple[str, Served], tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    study_url, served = dashboard_process
    assert study_url.startswith("http://127.0.0.1:")
    assert "/dashboard/studies/" in study_url
    before = _snapshot(served)
    driver = _browser()
    try:
        driver.get(study_url + "/trials")
        wait = WebDriverWait(driver, 30)

        def shown(text: str) -> bool:
            body = driver.find_element(By.TAG_NAME, "body").text
            return text in body

        wait.until(lambda _: shown(served.name) and shown("Trial 0") and shown("Trial 6"))
        assert shown("7 Trials")
        assert shown("Running")
        assert shown("Complete")
        wait.until(lambda _: shown("batch_size"))  # the first trial's details
        time.sleep(0.5)  # let the charts settle for the screenshot
        screenshot = tmp_path / "dashboard.png"
        assert driver.save_screenshot(str(screenshot))
        shutil.copyfile(screenshot, SCREENSHOT_COPY)
        assert screenshot.stat().st_size > 10_000

        # A write from the page's own origin, as the dashboard's buttons send it, is refused.
        script = textwrap.dedent(
            """
            const done = arguments[arguments.length - 1];
            fetch(arguments[0], {method: "POST", headers: {"Content-Type": "application/json"},
                                 body: JSON.stringify({state: "Complete", values: [0.5]})})
              .then(r => r.text().then(t => done([r.status, t])));
            """
        )
        tell = study_url.split("/dashboard/")[0] + f"/api/trials/{served.running}/tell"
        status, body = driver.execute_async_script(script, tell)
        assert status == 403
        assert "read-only" in body
    finally:
        driver.quit()
    assert _snapshot(served) == before


@pytest.mark.parametrize("served_study", ["sqlite"], indirect=True)
def test_dashboard_refuses_a_busy_port(
    served_study: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    loaded = load_spec(served_study.path)
    view = open_view(loaded, resolve(loaded, flag=served_study.url))
    server = DashboardServer(make_app(view.storage, read_only=True), host="127.0.0.1", port=0)
    try:
        args = ["dashboard", str(served_study.path), "--storage", served_study.url, "-q",
                "--port", str(server.port)]  # fmt: skip
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"hpsearch: error: cannot listen on 127.0.0.1:{server.port}: ")
        assert err.endswith("; pick another --port or --host\n")
    finally:
        server.shutdown()
        view.close()


@pytest.mark.slow  # a dashboard process in a PID namespace of its own
@pytest.mark.skipif(
    bool(os.environ.get("HPSEARCH_SKIP_UNSHARE")), reason="unshare not permitted here"
)
@pytest.mark.parametrize("served_study", ["sqlite"], indirect=True)
def test_the_dashboard_stops_on_sigterm_as_pid_1(served_study: Served) -> None:
    """In a container the dashboard is PID 1, where SIGTERM has no default action: it ignored
    `docker stop` until the kill."""
    process = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--kill-child", sys.executable, "-m", "hpsearch",
         "dashboard", str(served_study.path), "--storage", served_study.url, "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("optuna-dashboard ")
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        (inner,) = children  # PID 1 of its namespace
        os.kill(int(inner), signal.SIGTERM)
        assert process.wait(timeout=120) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


def test_the_dashboard_api_shows_the_batch_size_as_a_power_of_two(served_study: Served) -> None:
    """optuna-dashboard reads the trials as Optuna stores them: `batch_size` with its value,
    on a log scale, and no `log2_batch_size` exponent anywhere in what it serves."""
    loaded = load_spec(served_study.path)
    view = open_view(loaded, resolve(loaded, flag=served_study.url))
    server = DashboardServer(make_app(view.storage, read_only=True), host="127.0.0.1", port=0)
    server.start()
    try:
        code, body = _request(server.url(f"/api/studies/{view.study_id}"), "GET")
    finally:
        server.shutdown()
        view.close()
    assert code == 200, body
    assert "log2" not in body
    served = json.loads(body)
    (space,) = [s for s in served["union_search_space"] if s["name"] == "batch_size"]
    assert space["distribution"] == {
        "type": "IntDistribution", "low": 8, "high": 64, "step": 1, "log": True,
    }  # fmt: skip
    shown = {
        int(p["param_external_value"])
        for t in served["trials"]
        for p in t["params"]
        if p["name"] == "batch_size"
    }
    assert shown
    assert shown <= {8, 16, 32, 64}
